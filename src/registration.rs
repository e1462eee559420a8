//! Registering the webhook configurations (`--register-webhooks`): the chart renders them into
//! a ConfigMap instead of creating them, and the leader applies them once its own replica is
//! ready, so the API server is never told to call a webhook before one can answer (at install,
//! until the first pod is Ready, every StatefulSet and Service write would otherwise fail). The
//! leader fills in the `caBundle` (the self-managed bundle, or `--ca-bundle-file`) and keeps
//! the objects as the ConfigMap says: after an upgrade, a CA roll, or someone deleting them.
//!
//! With an owner (`--webhook-owner-cluster-role`, the chart's ClusterRole), the registered
//! objects carry an ownerReference to it: when an uninstall deletes it without running the
//! pre-delete hook (`helm uninstall --no-hooks`, a GitOps tool that skips hooks), the garbage
//! collector removes them; and a missing owner means the release is going, so nothing is
//! registered.
//!
//! Removal goes the other way round: `stsguard webhooks remove` (the chart's pre-delete hook)
//! deletes the ConfigMap first, so no leader registers them again, then the configurations.
//! Registration stops for good once this replica is shutting down.

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::ConfigMap,
        discovery::v1::EndpointSlice,
        rbac::v1::ClusterRole,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

/// The field manager of every registration.
pub const FIELD_MANAGER: &str = "stsguard";
/// ConfigMap keys, one object each.
pub const VALIDATING_KEY: &str = "validating.yaml";
pub const MUTATING_KEY: &str = "mutating.yaml";

/// What to register and where its CA comes from.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub configmap: String,
    /// The ClusterRole that owns the registered objects.
    pub owner: Option<String>,
    /// The webhook's Service: registration also waits for one of its endpoints to be ready, as
    /// the API server calls the webhook through it (a pod's own readiness comes first: the
    /// kubelet's next probe and the EndpointSlice update follow seconds later).
    pub service: Option<String>,
    /// How often the leader checks the registered objects against the ConfigMap.
    pub resync: Duration,
}

/// Where the caBundle comes from.
pub enum Bundle {
    /// The self-managed certificates' bundle (`None` until there is one).
    Managed(watch::Receiver<Option<String>>),
    /// `--ca-bundle-file`: a PEM file (cert-manager's `ca.crt`), re-read on each pass.
    File(PathBuf),
    /// The objects carry their own.
    Given,
}

/// The conditions under which this replica registers.
pub struct Gate {
    pub leading: watch::Receiver<bool>,
    /// Whether this replica is ready to answer reviews.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// True once the process is shutting down.
    pub stopping: watch::Receiver<bool>,
}

/// Starts keeping the registration.
pub fn start(client: Client, settings: Settings, bundle: Bundle, gate: Gate) {
    tokio::spawn(keep(client, settings, bundle, gate));
}

/// Between passes, how often the conditions are looked at: registration follows readiness
/// within this.
const GATE_POLL: Duration = Duration::from_millis(250);
/// How often the Service's endpoints are listed while none is ready.
const ENDPOINT_POLL: Duration = Duration::from_millis(750);

/// How a pass ended.
enum Pass {
    Done,
    /// The Service has no ready endpoint yet: the API server could not reach the webhook.
    NoEndpoint,
}

async fn keep(client: Client, settings: Settings, mut bundle: Bundle, mut gate: Gate) {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.namespace);
    let mut last: Option<(tokio::time::Instant, String)> = None;
    loop {
        if *gate.stopping.borrow() {
            tracing::info!("shutting down: no more webhook registration from this replica");
            return;
        }
        let leading = *gate.leading.borrow_and_update();
        let ca = match &mut bundle {
            Bundle::Managed(rx) => match latest(rx) {
                Some(pem) => Some(pem),
                None => {
                    wait(&mut gate, GATE_POLL).await;
                    continue;
                }
            },
            Bundle::File(path) => match std::fs::read_to_string(&*path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the CA bundle file; not registering yet");
                    wait(&mut gate, settings.resync).await;
                    continue;
                }
            },
            Bundle::Given => None,
        };
        let ca_key = ca.clone().unwrap_or_default();
        let due = match &last {
            None => true,
            Some((at, applied_with)) => at.elapsed() >= settings.resync || *applied_with != ca_key,
        };
        if leading && due && (gate.ready)() {
            match register(&client, &configmaps, &settings, ca.as_deref()).await {
                Ok(Pass::Done) => last = Some((tokio::time::Instant::now(), ca_key)),
                Ok(Pass::NoEndpoint) => {
                    tracing::debug!("waiting for a ready endpoint of the webhook's Service");
                    wait(&mut gate, ENDPOINT_POLL).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register the webhook configurations; trying again");
                    // Try again after a resync at most, not at once.
                    last = Some((tokio::time::Instant::now(), ca_key));
                }
            }
        } else if !leading {
            // A replica that leads again registers at once: another may have changed things.
            last = None;
        }
        wait(&mut gate, GATE_POLL).await;
    }
}

fn latest(rx: &mut watch::Receiver<Option<String>>) -> Option<String> {
    rx.borrow_and_update().clone()
}

async fn wait(gate: &mut Gate, at_most: Duration) {
    tokio::select! {
        () = tokio::time::sleep(at_most) => {}
        _ = gate.stopping.changed() => {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read ConfigMap {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("ConfigMap {namespace}/{name} key {key}: {message}")]
    Parse {
        namespace: String,
        name: String,
        key: &'static str,
        message: String,
    },
    #[error("cannot list the endpoints of Service {service}: {source}")]
    Endpoints {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read the owner, ClusterRole {name}: {source}")]
    Owner {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether the Service has an endpoint that is ready (an unknown state counts as ready, as
/// the API documents for consumers).
async fn has_ready_endpoint(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<bool, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let label = "kubernetes.io/service-name";
    let slices = api
        .list(&ListParams::default().labels(&format!("{label}={service}")))
        .await?;
    Ok(slices
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(label))
                .map(String::as_str)
                == Some(service)
        })
        .flat_map(|s| s.endpoints.iter().flatten())
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false)))
}

/// One pass: the objects in the ConfigMap, with the CA filled in, applied where they differ.
async fn register(
    client: &Client,
    configmaps: &Api<ConfigMap>,
    settings: &Settings,
    ca: Option<&str>,
) -> Result<Pass, RegistrationError> {
    if let Some(service) = &settings.service {
        let ready = has_ready_endpoint(client, &settings.namespace, service)
            .await
            .map_err(|source| RegistrationError::Endpoints {
                service: format!("{}/{service}", settings.namespace),
                source,
            })?;
        if !ready {
            return Ok(Pass::NoEndpoint);
        }
    }
    let Some(map) = configmaps
        .get_opt(&settings.configmap)
        .await
        .map_err(|source| RegistrationError::Read {
            namespace: settings.namespace.clone(),
            name: settings.configmap.clone(),
            source,
        })?
    else {
        tracing::debug!(configmap = %settings.configmap, "no webhook configurations to register (removed or not installed)");
        return Ok(Pass::Done);
    };
    let owners = match &settings.owner {
        None => None,
        Some(name) => {
            let roles: Api<ClusterRole> = Api::all(client.clone());
            let role = roles
                .get_opt(name)
                .await
                .map_err(|source| RegistrationError::Owner {
                    name: name.clone(),
                    source,
                })?;
            let Some(uid) = role.and_then(|r| r.metadata.uid) else {
                tracing::info!(owner = %name, "the owning ClusterRole is gone (uninstall): not registering");
                return Ok(Pass::Done);
            };
            Some(vec![OwnerReference {
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: "ClusterRole".into(),
                name: name.clone(),
                uid,
                ..OwnerReference::default()
            }])
        }
    };
    let data = map.data.unwrap_or_default();
    let parse_error = |key, message: String| RegistrationError::Parse {
        namespace: settings.namespace.clone(),
        name: settings.configmap.clone(),
        key,
        message,
    };
    let ca = ca.map(|pem| ByteString(pem.as_bytes().to_vec()));
    if let Some(text) = data.get(VALIDATING_KEY) {
        let mut object: ValidatingWebhookConfiguration =
            parse(text).map_err(|m| parse_error(VALIDATING_KEY, m))?;
        if let Some(ca) = &ca {
            for hook in object.webhooks.iter_mut().flatten() {
                hook.client_config.ca_bundle = Some(ca.clone());
            }
        }
        if owners.is_some() {
            object.metadata.owner_references.clone_from(&owners);
        }
        let live = |o: &ValidatingWebhookConfiguration| {
            o.webhooks
                .iter()
                .flatten()
                .map(|h| h.client_config.ca_bundle.clone())
                .collect::<Vec<_>>()
        };
        apply(client, "ValidatingWebhookConfiguration", object, live).await?;
    }
    if let Some(text) = data.get(MUTATING_KEY) {
        let mut object: MutatingWebhookConfiguration =
            parse(text).map_err(|m| parse_error(MUTATING_KEY, m))?;
        if let Some(ca) = &ca {
            for hook in object.webhooks.iter_mut().flatten() {
                hook.client_config.ca_bundle = Some(ca.clone());
            }
        }
        if owners.is_some() {
            object.metadata.owner_references.clone_from(&owners);
        }
        let live = |o: &MutatingWebhookConfiguration| {
            o.webhooks
                .iter()
                .flatten()
                .map(|h| h.client_config.ca_bundle.clone())
                .collect::<Vec<_>>()
        };
        apply(client, "MutatingWebhookConfiguration", object, live).await?;
    }
    Ok(Pass::Done)
}

/// One webhook configuration from the ConfigMap's YAML, as registration reads it.
pub fn parse<K: DeserializeOwned>(text: &str) -> Result<K, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Server-side apply as `stsguard`, unless the live object already has this content: the
/// annotation `stsguard.io/applied` holds a digest of what was last applied, so an unchanged
/// object costs a GET and no write.
async fn apply<K>(
    client: &Client,
    kind: &'static str,
    mut object: K,
    bundle_of: impl Fn(&K) -> Vec<Option<ByteString>>,
) -> Result<(), RegistrationError>
where
    K: Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let error = |source| RegistrationError::Apply {
        kind,
        name: name.clone(),
        source,
    };
    let digest = digest(&serde_json::to_string(&object).unwrap_or_default());
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(APPLIED.to_owned(), digest.clone());
    let api: Api<K> = Api::all(client.clone());
    if let Some(live) = api.get_opt(&name).await.map_err(error)? {
        let same = live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED))
            == Some(&digest);
        if same && bundle_of(&live) == bundle_of(&object) {
            return Ok(());
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&object))
        .await
        .map_err(error)?;
    tracing::info!(kind, name = %name, "webhook configuration registered");
    Ok(())
}

const APPLIED: &str = "stsguard.io/applied";

/// FNV-1a, hex: a change detector, not a security measure.
fn digest(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
