//! Live confirmation: where a verdict could rest on what a cache says, one GET or LIST under
//! `--lookup-timeout` asks the API server, because a cache can lag behind a write.

use std::sync::Arc;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::{Api, Client};

use crate::{
    lookup::{Confirmed, Fact, ServiceFacts, StatefulSetFacts, Unconfirmed},
    metrics::LiveRead,
};

use super::{Cluster, Outage, SERVICES, STATEFULSETS};

impl Cluster {
    /// One GET of the Service `name`; `cached` is what the cache holds.
    pub(super) async fn confirm_service(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<&ServiceFacts>,
    ) -> Confirmed {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let key = (namespace.to_owned(), name.to_owned());
        match tokio::time::timeout(self.confirm_timeout, api.get_opt(name)).await {
            Ok(Ok(found)) => {
                let found = found.map(|svc| ServiceFacts::of(&svc));
                let version = |svc: &ServiceFacts| svc.resource_version.clone();
                let agreed = found.as_ref().map(version) == cached.map(version);
                self.count(SERVICES, agreed);
                if !agreed {
                    tracing::debug!(%namespace, %name, exists = found.is_some(), "the cache lagged behind the Service");
                }
                let fact = found.map_or(Fact::Absent, |svc| Fact::Found(Arc::new(svc)));
                Confirmed {
                    service: Some((key, fact)),
                    ..Confirmed::default()
                }
            }
            Ok(Err(e)) => self.unconfirmed(SERVICES, namespace, name, &e.to_string()),
            Err(_) => self.unconfirmed(SERVICES, namespace, name, "deadline passed"),
        }
    }

    /// One LIST of the StatefulSets in `namespace`, kept where they name `service`; `cached` is
    /// what the cache says names it.
    pub(super) async fn confirm_naming(
        &self,
        namespace: &str,
        service: &str,
        cached: &[Arc<StatefulSetFacts>],
    ) -> Confirmed {
        let listed = tokio::time::timeout(
            self.confirm_timeout,
            list_naming(&self.client, namespace, service),
        )
        .await;
        match listed {
            Ok(Ok(naming)) => {
                let versions = |list: &[Arc<StatefulSetFacts>]| {
                    let mut v: Vec<_> = list
                        .iter()
                        .map(|s| (s.name.clone(), s.resource_version.clone()))
                        .collect();
                    v.sort();
                    v
                };
                let agreed = versions(&naming) == versions(cached);
                self.count(STATEFULSETS, agreed);
                if !agreed {
                    tracing::debug!(%namespace, %service, "the cache lagged behind the StatefulSets naming this Service");
                }
                Confirmed {
                    naming: Some((
                        (namespace.to_owned(), service.to_owned()),
                        Fact::Found(naming),
                    )),
                    ..Confirmed::default()
                }
            }
            Ok(Err(e)) => self.unconfirmed(STATEFULSETS, namespace, service, &e),
            Err(_) => self.unconfirmed(STATEFULSETS, namespace, service, "deadline passed"),
        }
    }

    fn live_outage(&self, kind: &'static str) -> &Outage {
        &self.live_outages[usize::from(kind == STATEFULSETS)]
    }

    fn count(&self, kind: &'static str, agreed: bool) {
        self.live_outage(kind).answered();
        let result = if agreed {
            LiveRead::Agreed
        } else {
            LiveRead::Corrected
        };
        self.live_reads.record(kind, result);
    }

    fn unconfirmed(&self, kind: &'static str, namespace: &str, name: &str, why: &str) -> Confirmed {
        self.live_reads.record(kind, LiveRead::Failed);
        self.live_outage(kind)
            .failed(&why, "verdicts rest on the caches' facts until it is back");
        Confirmed {
            failed: Some(Unconfirmed {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                why: why.to_owned(),
            }),
            ..Confirmed::default()
        }
    }
}

/// The StatefulSets in `namespace` that name `service`, from one LIST. No resourceVersion: a
/// consistent read (API servers with ConsistentListFromCache, beta and on by default since
/// 1.31, answer it from their watch cache). No limit: a page could hide the one that names it.
/// StatefulSets have no field selector for spec.serviceName, so the filter is here; only the
/// items that name the Service are read whole, the others only as far as spec.serviceName.
async fn list_naming(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<Vec<Arc<StatefulSetFacts>>, String> {
    #[derive(serde::Deserialize)]
    struct List<'a> {
        #[serde(borrow)]
        items: Vec<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        #[serde(borrow, default)]
        spec: Option<Spec<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Spec<'a> {
        #[serde(rename = "serviceName", borrow, default)]
        service_name: Option<std::borrow::Cow<'a, str>>,
    }
    let request = http::Request::get(format!("/apis/apps/v1/namespaces/{namespace}/statefulsets"))
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())?;
    let list: List = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut naming = Vec::new();
    for raw in list.items {
        let item: Item = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let names = item.spec.and_then(|s| s.service_name);
        if names.as_deref() == Some(service) {
            let sts: StatefulSet = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            naming.push(Arc::new(StatefulSetFacts::of(&sts)));
        }
    }
    Ok(naming)
}
