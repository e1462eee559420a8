//! Applying one cluster-scoped object as stsguard, and the ownerReference that ties what the
//! leader applies to the release.

use k8s_openapi::{
    ByteString, api::rbac::v1::ClusterRole, apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{FIELD_MANAGER, RegistrationError};

/// Server-side apply as `stsguard`, unless the live object already has this content: the
/// annotation `stsguard.io/applied` holds a digest of what was last applied, so an unchanged
/// object costs a GET and no write.
pub(crate) async fn apply<K>(
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
    tracing::info!(kind, name = %name, "applied");
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

/// The ownerReference to the owning ClusterRole, or `Ok(None)` when it is gone: the release is
/// being uninstalled and nothing should be applied any more.
pub(crate) async fn owner_references(
    client: &Client,
    name: &str,
) -> Result<Option<Vec<OwnerReference>>, RegistrationError> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = roles
        .get_opt(name)
        .await
        .map_err(|source| RegistrationError::Owner {
            name: name.to_owned(),
            source,
        })?;
    Ok(role.and_then(|r| r.metadata.uid).map(|uid| {
        vec![OwnerReference {
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRole".into(),
            name: name.to_owned(),
            uid,
            ..OwnerReference::default()
        }]
    }))
}
