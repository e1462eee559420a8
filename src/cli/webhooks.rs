//! `stsguard webhooks remove`: the chart's pre-delete hook. It deletes the ConfigMap the leader
//! registers from first (so no replica registers the configurations again), then the
//! configurations themselves, so an uninstall stops the API server calling the webhook before
//! any pod goes away.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    core::v1::ConfigMap,
};
use kube::{Api, Client, api::DeleteParams};

use crate::cluster;

#[derive(Clone, Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Delete the registration ConfigMap, then the webhook configurations (missing ones are
    /// fine); exit 0 once none of them exists.
    Remove(RemoveArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RemoveArgs {
    /// The ConfigMap `stsguard serve --register-webhooks` registers from.
    #[arg(long)]
    pub configmap: String,
    /// Its namespace (default: the kubeconfig's or the pod's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// ValidatingWebhookConfiguration to delete (repeatable).
    #[arg(long)]
    pub validating: Vec<String>,
    /// MutatingWebhookConfiguration to delete (repeatable).
    #[arg(long)]
    pub mutating: Vec<String>,
    /// Kubeconfig; in-cluster configuration when not given.
    #[arg(long, env = "STSGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

pub(super) fn run(args: &WebhooksArgs) -> ExitCode {
    let WebhooksCommand::Remove(args) = &args.command;
    let runtime = match super::runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stsguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(remove(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stsguard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A leader that read the ConfigMap just before it went may still apply once: the second pass
/// catches that.
const PASSES: usize = 2;
const BETWEEN_PASSES: Duration = Duration::from_secs(2);

async fn remove(args: &RemoveArgs) -> Result<(), String> {
    let config = match cluster::config(args.kubeconfig.as_deref())
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(config) => config,
        Err(why) => return Err(format!("no cluster to remove the webhooks from: {why}")),
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client =
        Client::try_from(config).map_err(|e| format!("cannot create the API client: {e}"))?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client);
    for pass in 0..PASSES {
        if pass > 0 {
            tokio::time::sleep(BETWEEN_PASSES).await;
        }
        gone(
            &configmaps,
            &args.configmap,
            &format!("ConfigMap {namespace}/"),
            pass,
        )
        .await?;
        for name in &args.validating {
            gone(&validating, name, "ValidatingWebhookConfiguration ", pass).await?;
        }
        for name in &args.mutating {
            gone(&mutating, name, "MutatingWebhookConfiguration ", pass).await?;
        }
    }
    Ok(())
}

/// Deletes the object if it exists.
async fn gone<K>(api: &Api<K>, name: &str, what: &str, pass: usize) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            let again = if pass > 0 {
                " (registered again meanwhile)"
            } else {
                ""
            };
            eprintln!("stsguard: deleted {what}{name}{again}");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!("cannot delete {what}{name}: {e}")),
    }
}
