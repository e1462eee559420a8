//! Live cluster facts: a kube client and reflector caches of Services and StatefulSets (all
//! namespaces, or those named), stripped of bulk before caching, answering the [`Lookup`] trait.
//! Where a verdict could rest on what a cache says, [`Lookup::confirm`] asks the API server once,
//! under a short deadline, because a cache can lag behind a write made a moment ago.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::Service},
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use crate::{
    lookup::{BoxFuture, Confirmed, Fact, Lookup, Need},
    metrics::LiveReads,
    rules::governs_cleanly,
};

mod changes;
mod confirm;
mod health;

pub use changes::{Change, ChangeHook};
pub use health::{Health, WatchState, client};
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
}

/// The cluster's client configuration: from `kubeconfig` when given (an unreadable file is an
/// error), else in-cluster configuration or `KUBECONFIG`/`~/.kube/config`. `Ok(Err(reason))` when
/// there is no cluster to talk to.
pub async fn config(kubeconfig: Option<&Path>) -> Result<Result<Config, String>, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| ClusterError::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => match Config::infer().await {
            Ok(config) => config,
            Err(e) => return Ok(Err(e.to_string())),
        },
    };
    Ok(Ok(config))
}

/// Caches of one kind: one for all namespaces, or one per watched namespace.
#[derive(Clone)]
struct Caches<K: Resource<DynamicType = ()> + Clone + 'static> {
    all: Option<Store<K>>,
    by_namespace: BTreeMap<String, Store<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Caches<K> {
    fn for_namespace(&self, namespace: &str) -> Option<&Store<K>> {
        self.all
            .as_ref()
            .or_else(|| self.by_namespace.get(namespace))
    }
}

/// Cluster facts from reflector caches.
pub struct Cluster {
    client: Client,
    services: Caches<Service>,
    statefulsets: Caches<StatefulSet>,
    health: Arc<Health>,
    confirm_timeout: Duration,
    live_reads: LiveReads,
    changes: changes::Hooks,
}

impl Cluster {
    /// Starts the watches (all namespaces when `namespaces` is empty) on the current runtime.
    /// They run for the life of the process and recover by themselves: re-list after
    /// `410 Gone`, back off on errors.
    pub fn start(
        config: Config,
        namespaces: &[String],
        confirm_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let health = Arc::new(Health::default());
        let client = client(config, health.clone())?;
        let changes = changes::Hooks::default();
        let services = caches(
            &client,
            namespaces,
            &health,
            "services",
            slim_service,
            &changes,
        );
        let statefulsets = caches(
            &client,
            namespaces,
            &health,
            "statefulsets",
            slim_statefulset,
            &changes,
        );
        Ok(Cluster {
            client,
            services,
            statefulsets,
            health,
            confirm_timeout,
            live_reads: LiveReads::default(),
            changes,
        })
    }

    /// Sends every change the watches see to `hook`, after the caches have it (one hook per
    /// cluster; a second is refused).
    pub fn on_change(&self, hook: ChangeHook) -> Result<(), ChangeHook> {
        self.changes.set(hook)
    }

    /// Counts live reads into `reads` (`stsguard_live_reads_total`).
    #[must_use]
    pub fn with_live_reads(mut self, reads: LiveReads) -> Self {
        self.live_reads = reads;
        self
    }

    /// The API client the watches use, for the other work that talks to the cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn synced(&self) -> bool {
        self.health.synced()
    }
}

fn caches<K>(
    client: &Client,
    namespaces: &[String],
    health: &Arc<Health>,
    kind: &'static str,
    slim: fn(&mut K),
    changes: &changes::Hooks,
) -> Caches<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Into<crate::subject::Object>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    if namespaces.is_empty() {
        let index = health.register(kind, None);
        let store = watch(
            Api::all(client.clone()),
            health.clone(),
            index,
            slim,
            changes,
        );
        return Caches {
            all: Some(store),
            by_namespace: BTreeMap::new(),
        };
    }
    let by_namespace = namespaces
        .iter()
        .map(|ns| {
            let index = health.register(kind, Some(ns.clone()));
            let store = watch(
                Api::namespaced(client.clone(), ns),
                health.clone(),
                index,
                slim,
                changes,
            );
            (ns.clone(), store)
        })
        .collect();
    Caches {
        all: None,
        by_namespace,
    }
}

/// Spawns a reflector for `api` and returns its store.
fn watch<K>(
    api: Api<K>,
    health: Arc<Health>,
    index: usize,
    slim: fn(&mut K),
    changes: &changes::Hooks,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Into<crate::subject::Object>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let changes = changes.clone();
    let (reader, writer) = reflector::store();
    let store = reader.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |obj: &mut K| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
            slim(obj);
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match &event {
                Ok(watcher::Event::InitDone) => health.update(index, |w| {
                    if !w.synced || w.error.is_some() {
                        tracing::info!(kind = w.kind, namespace = ?w.namespace, objects = reader.len(), "cache synced");
                    }
                    w.synced = true;
                    w.error = None;
                    w.objects = reader.len();
                    w.since = Instant::now();
                }),
                Ok(_) => health.update(index, |w| {
                    if w.error.take().is_some() {
                        tracing::info!(kind = w.kind, namespace = ?w.namespace, "watch recovered");
                        w.since = Instant::now();
                    }
                    w.objects = reader.len();
                }),
                Err(e) => health.update(index, |w| {
                    // One log line per outage, not one per retry.
                    if w.error.is_none() {
                        tracing::warn!(kind = w.kind, namespace = ?w.namespace, error = %e,
                            "watch failed; serving from the cache while it reconnects");
                        w.since = Instant::now();
                    }
                    w.error = Some(e.to_string());
                }),
            }
            if let Ok(event) = event {
                changes::tell(&changes, event);
            }
        }
    });
    store
}

/// Only what the rules read is cached: status is dropped with managedFields and the
/// last-applied annotation.
fn slim_service(svc: &mut Service) {
    svc.status = None;
}

fn slim_statefulset(sts: &mut StatefulSet) {
    sts.status = None;
}

impl Lookup for Cluster {
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<Service>> {
        match self.services.for_namespace(namespace) {
            Some(store) if self.synced() => {
                match store.get(&ObjectRef::new(name).within(namespace)) {
                    Some(svc) => Fact::Found(svc),
                    None => Fact::Absent,
                }
            }
            _ => Fact::Unknown,
        }
    }

    fn statefulsets_naming(&self, namespace: &str, service: &str) -> Fact<Vec<Arc<StatefulSet>>> {
        match self.statefulsets.for_namespace(namespace) {
            Some(store) if self.synced() => Fact::Found(store.state_filter(|sts| {
                sts.metadata.namespace.as_deref() == Some(namespace)
                    && crate::subject::governing_service(sts) == Some(service)
            })),
            _ => Fact::Unknown,
        }
    }

    fn available(&self, namespace: &str) -> bool {
        self.synced() && self.services.for_namespace(namespace).is_some()
    }

    /// Confirms with the API server what a verdict could rest on, and nothing else:
    ///
    /// - a StatefulSet's governing Service (one GET by name) when the cache says it is missing,
    ///   or has it in a form the StatefulSet's rules would report (not headless, not selecting
    ///   the pods): a Service created, deleted or fixed a moment ago may not have reached it;
    /// - the StatefulSets naming a Service (one namespaced LIST: StatefulSets have no field
    ///   selector for spec.serviceName) on a Service CREATE, or an UPDATE that changes the spec,
    ///   whatever the cache says: a StatefulSet created a moment ago may be missing from it (a
    ///   deny missed), one deleted a moment ago still in it (a deny that should not be).
    ///
    /// No live read where the cache's answer cannot turn into a deny: a Service DELETE (only a
    /// warning), and an UPDATE that leaves the spec as it was (whatever StatefulSets name the
    /// Service, the stored Service had the same violations, which UPDATE grandfathering turns
    /// into warnings).
    fn confirm<'a>(&'a self, namespace: &'a str, need: Need<'a>) -> BoxFuture<'a, Confirmed> {
        Box::pin(async move {
            match need {
                Need::Service { name, statefulset } => match self.service(namespace, name) {
                    Fact::Absent => self.confirm_service(namespace, name, None).await,
                    Fact::Found(svc) if !governs_cleanly(&svc, statefulset) => {
                        self.confirm_service(namespace, name, Some(&svc)).await
                    }
                    _ => Confirmed::default(),
                },
                Need::Naming { name, object, old } => {
                    let Fact::Found(cached) = self.statefulsets_naming(namespace, name) else {
                        return Confirmed::default();
                    };
                    let Some(object) = object else {
                        return Confirmed::default();
                    };
                    if old.is_some_and(|old| old.spec == object.spec) {
                        return Confirmed::default();
                    }
                    self.confirm_naming(namespace, name, &cached).await
                }
            }
        })
    }
}

const SERVICES: &str = "services";
const STATEFULSETS: &str = "statefulsets";
