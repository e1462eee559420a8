//! Live cluster facts: a kube client and reflector caches of Services and StatefulSets (all
//! namespaces, or those named), stripped of bulk before caching, answering the [`Lookup`] trait.
//! Where a verdict could rest on what a cache says, [`Lookup::confirm`] asks the API server once,
//! under a short deadline, because a cache can lag behind a write made a moment ago.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::Service},
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tower::Layer;

use crate::{
    lookup::{BoxFuture, Confirmed, Fact, Lookup, Need},
    metrics::{LiveRead, LiveReads},
    rules::governs_cleanly,
};

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

/// A client for `config` whose watch requests report to `health` when they connect: the
/// watcher itself says nothing when a quiet watch resumes after an outage.
pub fn client(config: Config, health: Arc<Health>) -> Result<Client, ClusterError> {
    let builder =
        ClientBuilder::try_from(config).map_err(|e| ClusterError::Client(e.to_string()))?;
    Ok(builder.with_layer(&WatchProbeLayer(health)).build())
}

struct WatchProbeLayer(Arc<Health>);

impl<S> Layer<S> for WatchProbeLayer {
    type Service = WatchProbe<S>;

    fn layer(&self, inner: S) -> WatchProbe<S> {
        WatchProbe {
            inner,
            health: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct WatchProbe<S> {
    inner: S,
    health: Arc<Health>,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for WatchProbe<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<B>, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        let path = request.uri().path().to_owned();
        let health = self.health.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if watch && response.status().is_success() {
                health.watch_connected(&path);
            }
            Ok(response)
        })
    }
}

/// How one watch is doing, for `/readyz` and the logs.
#[derive(Clone, Debug)]
pub struct WatchState {
    pub kind: &'static str,
    /// The API path this watch lists and watches.
    path: String,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub synced: bool,
    pub objects: usize,
    /// The last error, while the watch has not recovered from it.
    pub error: Option<String>,
    pub since: Instant,
}

impl std::fmt::Display for WatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = self.namespace.as_deref().unwrap_or("all namespaces");
        write!(f, "{} ({scope}): ", self.kind)?;
        match (&self.error, self.synced) {
            (Some(e), _) => write!(
                f,
                "reconnecting for {}s after: {e}",
                self.since.elapsed().as_secs()
            ),
            (None, true) => write!(f, "synced, {} objects", self.objects),
            (None, false) => write!(f, "waiting for the first list"),
        }
    }
}

/// The state of every watch.
#[derive(Debug, Default)]
pub struct Health {
    watches: Mutex<Vec<WatchState>>,
}

impl Health {
    fn register(&self, kind: &'static str, namespace: Option<String>) -> usize {
        let prefix = if kind == "statefulsets" {
            "/apis/apps/v1"
        } else {
            "/api/v1"
        };
        let path = match &namespace {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{kind}"),
            None => format!("{prefix}/{kind}"),
        };
        let mut watches = self.lock();
        watches.push(WatchState {
            kind,
            path,
            namespace,
            synced: false,
            objects: 0,
            error: None,
            since: Instant::now(),
        });
        watches.len() - 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WatchState>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every cache has been filled by a first complete list.
    pub fn synced(&self) -> bool {
        let watches = self.lock();
        !watches.is_empty() && watches.iter().all(|w| w.synced)
    }

    pub fn states(&self) -> Vec<WatchState> {
        self.lock().clone()
    }

    /// A watch request for `path` was answered: the watch is connected again.
    fn watch_connected(&self, path: &str) {
        for w in self.lock().iter_mut().filter(|w| w.path == path) {
            if w.error.take().is_some() {
                tracing::info!(kind = w.kind, namespace = ?w.namespace, "watch reconnected");
                w.since = Instant::now();
            }
        }
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut WatchState)) {
        if let Some(state) = self.lock().get_mut(index) {
            change(state);
        }
    }
}

impl crate::metrics::CacheReport for Health {
    fn caches(&self) -> Vec<crate::metrics::CacheState> {
        self.lock()
            .iter()
            .map(|w| crate::metrics::CacheState {
                kind: w.kind,
                namespace: w.namespace.clone(),
                objects: w.objects,
                synced: w.synced,
                watching: w.error.is_none(),
            })
            .collect()
    }
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
        let services = caches(&client, namespaces, &health, "services", slim_service);
        let statefulsets = caches(
            &client,
            namespaces,
            &health,
            "statefulsets",
            slim_statefulset,
        );
        Ok(Cluster {
            client,
            services,
            statefulsets,
            health,
            confirm_timeout,
            live_reads: LiveReads::default(),
        })
    }

    /// Counts live reads into `reads` (`stsguard_live_reads_total`).
    #[must_use]
    pub fn with_live_reads(mut self, reads: LiveReads) -> Self {
        self.live_reads = reads;
        self
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
) -> Caches<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    if namespaces.is_empty() {
        let index = health.register(kind, None);
        let store = watch(Api::all(client.clone()), health.clone(), index, slim);
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
fn watch<K>(api: Api<K>, health: Arc<Health>, index: usize, slim: fn(&mut K)) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
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
            match event {
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

impl Cluster {
    /// One GET of the Service `name`; `cached` is what the cache holds.
    async fn confirm_service(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<&Service>,
    ) -> Confirmed {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let key = (namespace.to_owned(), name.to_owned());
        match tokio::time::timeout(self.confirm_timeout, api.get_opt(name)).await {
            Ok(Ok(found)) => {
                let version = |svc: &Service| svc.metadata.resource_version.clone();
                let agreed = found.as_ref().map(version) == cached.map(version);
                self.count(SERVICES, agreed);
                if !agreed {
                    tracing::debug!(%namespace, %name, exists = found.is_some(), "the cache lagged behind the Service");
                }
                let fact = found.map_or(Fact::Absent, |svc| Fact::Found(Arc::new(svc)));
                Confirmed {
                    service: Some((key, fact)),
                    naming: None,
                }
            }
            Ok(Err(e)) => self.unconfirmed(SERVICES, namespace, name, &e.to_string()),
            Err(_) => self.unconfirmed(SERVICES, namespace, name, "deadline passed"),
        }
    }

    /// One LIST of the StatefulSets in `namespace`, kept where they name `service`; `cached` is
    /// what the cache says names it.
    async fn confirm_naming(
        &self,
        namespace: &str,
        service: &str,
        cached: &[Arc<StatefulSet>],
    ) -> Confirmed {
        let listed = tokio::time::timeout(
            self.confirm_timeout,
            list_naming(&self.client, namespace, service),
        )
        .await;
        match listed {
            Ok(Ok(naming)) => {
                let versions = |list: &[Arc<StatefulSet>]| {
                    let mut v: Vec<_> = list
                        .iter()
                        .map(|s| (s.metadata.name.clone(), s.metadata.resource_version.clone()))
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
                    service: None,
                    naming: Some((
                        (namespace.to_owned(), service.to_owned()),
                        Fact::Found(naming),
                    )),
                }
            }
            Ok(Err(e)) => self.unconfirmed(STATEFULSETS, namespace, service, &e),
            Err(_) => self.unconfirmed(STATEFULSETS, namespace, service, "deadline passed"),
        }
    }

    fn count(&self, kind: &'static str, agreed: bool) {
        let result = if agreed {
            LiveRead::Agreed
        } else {
            LiveRead::Corrected
        };
        self.live_reads.record(kind, result);
    }

    fn unconfirmed(&self, kind: &'static str, namespace: &str, name: &str, why: &str) -> Confirmed {
        self.live_reads.record(kind, LiveRead::Failed);
        tracing::warn!(%namespace, %name, kind, why, "could not confirm a cached fact with the API server; using the cache");
        Confirmed::default()
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
) -> Result<Vec<Arc<StatefulSet>>, String> {
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
            naming.push(Arc::new(sts));
        }
    }
    Ok(naming)
}

const SERVICES: &str = "services";
const STATEFULSETS: &str = "statefulsets";
