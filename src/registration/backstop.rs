//! Keeping the backstop applied (`--backstop NAME`): the leader generates it from the policy in
//! force, so that a hot reload or a `--rule` override reaches the API server's own enforcement
//! too, without a Helm upgrade, and applies it as it registers the webhooks (server-side apply
//! as `stsguard`, owned by the release's ClusterRole).
//!
//! Where the backstop applies comes from the ConfigMap NAME (key `backstop.yaml`, a
//! [`Scope`]), which the chart renders: the webhook's Service and the webhooks' selectors. No
//! ConfigMap means no backstop: whatever of it exists is removed (disabled by an upgrade, or an
//! uninstall under way). Policies are applied before their bindings, as the API server checks
//! a binding's paramRef against its policy's paramKind, and removed after them.
//!
//! The MutatingAdmissionPolicy is applied where the API server serves it (1.36+), which the
//! leader asks discovery once per leadership.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        admissionregistration::v1::{
            MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
            ValidatingAdmissionPolicyBinding,
        },
        core::v1::ConfigMap,
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, Resource, api::DeleteParams};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;

use super::{RegistrationError, apply, owner_references};
use crate::{
    backstop::{self, Scope, Target},
    policy::{Policy, PolicySlot},
};

/// The ConfigMap key holding the [`Scope`].
pub const SCOPE_KEY: &str = "backstop.yaml";

/// What to keep applied.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The objects' base name, and the ConfigMap's name.
    pub name: String,
    /// Where the ConfigMap is.
    pub namespace: String,
    /// The ClusterRole that owns the applied objects.
    pub owner: Option<String>,
    /// How often everything is applied again even when nothing changed.
    pub resync: Duration,
}

/// Starts keeping the backstop while this replica leads, until `stopping`.
pub fn start(
    client: Client,
    settings: Settings,
    policy: Arc<PolicySlot>,
    leading: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
) {
    tokio::spawn(keep(client, settings, policy, leading, stopping));
}

/// How often the policy and leadership are looked at between passes.
const POLL: Duration = Duration::from_millis(500);

async fn keep(
    client: Client,
    settings: Settings,
    slot: Arc<PolicySlot>,
    mut leading: watch::Receiver<bool>,
    mut stopping: watch::Receiver<bool>,
) {
    // The policy last applied, and when.
    let mut last: Option<(Arc<Policy>, tokio::time::Instant)> = None;
    let mut serves_mutating: Option<bool> = None;
    loop {
        if *stopping.borrow() {
            tracing::info!("shutting down: no more backstop changes from this replica");
            return;
        }
        if *leading.borrow_and_update() {
            let policy = slot.get();
            let due = last.as_ref().is_none_or(|(applied, at)| {
                !Arc::ptr_eq(applied, &policy) || at.elapsed() >= settings.resync
            });
            if due {
                if serves_mutating.is_none() {
                    serves_mutating = mutating_served(&client).await;
                }
                match pass(&client, &settings, &policy, serves_mutating == Some(true)).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply the backstop; trying again")
                    }
                }
                // After a failure, again at the next resync or policy change, not at once.
                last = Some((policy, tokio::time::Instant::now()));
            }
        } else {
            // A replica that leads again applies at once and asks discovery again.
            last = None;
            serves_mutating = None;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stopping.changed() => {}
            _ = leading.changed() => {}
        }
    }
}

/// Whether the API server serves MutatingAdmissionPolicy v1; `None` when it cannot say now.
async fn mutating_served(client: &Client) -> Option<bool> {
    match client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await
    {
        Ok(list) => {
            let served = list
                .resources
                .iter()
                .any(|r| r.name == "mutatingadmissionpolicies");
            if !served {
                tracing::info!(
                    "the API server does not serve MutatingAdmissionPolicy v1 (Kubernetes \
                     1.36+): the injection has no backstop while the webhook is down"
                );
            }
            Some(served)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the API server which admission APIs it serves");
            None
        }
    }
}

/// One pass: the ConfigMap read, the backstop generated from `policy` and applied, what it no
/// longer holds removed.
async fn pass(
    client: &Client,
    settings: &Settings,
    policy: &Policy,
    serves_mutating: bool,
) -> Result<(), RegistrationError> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &settings.namespace);
    let read_error = |source| RegistrationError::Read {
        namespace: settings.namespace.clone(),
        name: settings.name.clone(),
        source,
    };
    let scope = match configmaps
        .get_opt(&settings.name)
        .await
        .map_err(read_error)?
    {
        None => None,
        Some(map) => {
            let text = map
                .data
                .as_ref()
                .and_then(|d| d.get(SCOPE_KEY))
                .ok_or_else(|| RegistrationError::Parse {
                    namespace: settings.namespace.clone(),
                    name: settings.name.clone(),
                    key: SCOPE_KEY,
                    message: "missing".to_owned(),
                })?;
            Some(
                serde_saphyr::from_str::<Scope>(text).map_err(|e| RegistrationError::Parse {
                    namespace: settings.namespace.clone(),
                    name: settings.name.clone(),
                    key: SCOPE_KEY,
                    message: e.to_string(),
                })?,
            )
        }
    };
    let owners = match &settings.owner {
        None => None,
        Some(owner) => match owner_references(client, owner).await? {
            Some(owners) => Some(owners),
            // The release is going: nothing more is applied; the uninstall removes the rest.
            None => return Ok(()),
        },
    };
    let mut keep: Vec<String> = Vec::new();
    if let Some(scope) = scope {
        let target = Target {
            name: settings.name.clone(),
            scope,
        };
        let generated = backstop::generate(policy, &target);
        for (vap, binding) in generated.validating {
            keep.push(vap.metadata.name.clone().unwrap_or_default());
            put(client, "ValidatingAdmissionPolicy", vap, &owners).await?;
            put(client, "ValidatingAdmissionPolicyBinding", binding, &owners).await?;
        }
        if let (true, Some((map, binding))) = (serves_mutating, generated.mutating) {
            keep.push(map.metadata.name.clone().unwrap_or_default());
            put(client, "MutatingAdmissionPolicy", map, &owners).await?;
            put(client, "MutatingAdmissionPolicyBinding", binding, &owners).await?;
        }
    }
    for name in backstop::object_names(&settings.name) {
        if keep.contains(&name) {
            continue;
        }
        remove::<ValidatingAdmissionPolicyBinding>(client, &name).await?;
        remove::<ValidatingAdmissionPolicy>(client, &name).await?;
        if serves_mutating {
            remove::<MutatingAdmissionPolicyBinding>(client, &name).await?;
            remove::<MutatingAdmissionPolicy>(client, &name).await?;
        }
    }
    Ok(())
}

async fn put<K>(
    client: &Client,
    kind: &'static str,
    mut object: K,
    owners: &Option<Vec<OwnerReference>>,
) -> Result<(), RegistrationError>
where
    K: Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    if owners.is_some() {
        object.meta_mut().owner_references.clone_from(owners);
    }
    apply(client, kind, object, |_| Vec::new()).await
}

/// Deletes a cluster-scoped object if it exists.
pub(crate) async fn remove<K>(client: &Client, name: &str) -> Result<(), RegistrationError>
where
    K: Resource<Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(kind = %K::kind(&K::DynamicType::default()), name, "removed");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(RegistrationError::Apply {
            kind: "backstop object",
            name: name.to_owned(),
            source,
        }),
    }
}
