//! `stsguard audit --cluster`: the live cluster's StatefulSets and Services as documents for
//! the offline audit, listed (paginated) with the same read-only access the webhook uses.

use std::path::Path;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::Service},
};
use kube::{Api, Client, Resource, ResourceExt, api::ListParams};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    cluster,
    manifest::{Document, Loaded, Source},
};

/// Lists both kinds from the cluster (one namespace, or all).
pub(super) fn load(kubeconfig: Option<&Path>, namespace: Option<&str>) -> Result<Loaded, String> {
    let runtime = crate::cli::runtime(false)?;
    runtime.block_on(async {
        let config = match cluster::config(kubeconfig)
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(config) => config,
            Err(why) => return Err(format!("no cluster to audit: {why}")),
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
        let mut loaded = Loaded::default();
        let listed = async {
            list::<Service>(&client, namespace, &mut loaded).await?;
            list::<StatefulSet>(&client, namespace, &mut loaded).await
        };
        listed.await.map_err(|e| {
            format!(
                "{e} (API server {server}): check that it is reachable from here, that the \
                 kubeconfig's current context is the cluster you mean (--kubeconfig, KUBECONFIG), \
                 and that its credentials may list services and statefulsets"
            )
        })?;
        Ok(loaded)
    })
}

async fn list<K>(
    client: &Client,
    namespace: Option<&str>,
    loaded: &mut Loaded,
) -> Result<(), String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| format!("cannot list {}: {e}", K::plural(&())))?;
        for mut object in page.items {
            object.managed_fields_mut().clear();
            let ns = object.namespace().unwrap_or_default();
            let name = object.name_any();
            let mut value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
            value["apiVersion"] = K::api_version(&()).into();
            value["kind"] = K::kind(&()).into();
            loaded.documents.push(Document {
                source: Source {
                    file: format!("cluster://{ns}/{}/{name}", K::kind(&())),
                    line: 1,
                },
                text: String::new(),
                value,
            });
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}
