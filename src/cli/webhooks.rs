//! `stsguard webhooks remove`: the chart's pre-delete hook. It deletes the ConfigMaps the leader
//! registers and applies from first (so no replica puts anything back), then the webhook
//! configurations and the backstop's policies and bindings, so an uninstall stops the API server
//! calling the webhook, or enforcing on its behalf, before any pod goes away.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use k8s_openapi::api::{
    admissionregistration::v1::{
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, MutatingWebhookConfiguration,
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        ValidatingWebhookConfiguration,
    },
    core::v1::ConfigMap,
};
use kube::{Api, Client, api::DeleteParams};

use crate::{backstop, cluster};

#[derive(Clone, Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Delete the registration and backstop ConfigMaps, then the webhook configurations and the
    /// backstop (missing ones are fine); exit 0 once none of them exists.
    Remove(RemoveArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RemoveArgs {
    /// The ConfigMap `stsguard serve --register-webhooks` registers from.
    #[arg(long)]
    pub configmap: Option<String>,
    /// Its namespace (default: the kubeconfig's or the pod's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// ValidatingWebhookConfiguration to delete (repeatable).
    #[arg(long)]
    pub validating: Vec<String>,
    /// MutatingWebhookConfiguration to delete (repeatable).
    #[arg(long)]
    pub mutating: Vec<String>,
    /// The backstop `serve --backstop NAME` keeps: its ConfigMap NAME, then the admission
    /// policies and bindings NAME-deny, NAME-warn and NAME-mutate.
    #[arg(long, value_name = "NAME")]
    pub backstop: Option<String>,
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
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for pass in 0..PASSES {
        if pass > 0 {
            tokio::time::sleep(BETWEEN_PASSES).await;
        }
        if let Some(configmap) = &args.configmap {
            gone(
                &configmaps,
                configmap,
                &format!("ConfigMap {namespace}/"),
                pass,
            )
            .await?;
        }
        for name in &args.validating {
            gone(&validating, name, "ValidatingWebhookConfiguration ", pass).await?;
        }
        for name in &args.mutating {
            gone(&mutating, name, "MutatingWebhookConfiguration ", pass).await?;
        }
        if let Some(backstop) = &args.backstop {
            remove_backstop(&client, &namespace, backstop, pass).await?;
        }
    }
    Ok(())
}

/// The backstop's ConfigMap, then each binding before its policy.
async fn remove_backstop(
    client: &Client,
    namespace: &str,
    name: &str,
    pass: usize,
) -> Result<(), String> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    gone(&configmaps, name, &format!("ConfigMap {namespace}/"), pass).await?;
    let vapb: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let vap: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let mapb: Api<MutatingAdmissionPolicyBinding> = Api::all(client.clone());
    let map: Api<MutatingAdmissionPolicy> = Api::all(client.clone());
    for object in backstop::object_names(name) {
        gone(&vapb, &object, "ValidatingAdmissionPolicyBinding ", pass).await?;
        gone(&vap, &object, "ValidatingAdmissionPolicy ", pass).await?;
        // Before 1.36 the API server has no such resource and answers 404: nothing to delete.
        gone(&mapb, &object, "MutatingAdmissionPolicyBinding ", pass).await?;
        gone(&map, &object, "MutatingAdmissionPolicy ", pass).await?;
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
