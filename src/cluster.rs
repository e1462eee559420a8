//! Live cluster facts: a kube client and watches of Services and StatefulSets (all namespaces,
//! or those named), each keeping an index of the facts the rules read, answering the [`Lookup`]
//! trait.
//! Where a verdict could rest on what a cache says, [`Lookup::confirm`] asks the API server once,
//! under a short deadline, because a cache can lag behind a write made a moment ago.

use std::{path::Path, sync::Arc, time::Duration};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    lookup::{BoxFuture, Confirmed, Fact, Lookup, Need, ServiceFacts, StatefulSetFacts},
    metrics::LiveReads,
    rules::governs_cleanly,
};

mod backoff;
mod changes;
mod confirm;
mod fault;
mod health;
mod list_deadline;
mod outage;
mod reachable;
mod watch;

pub(crate) use backoff::Backoff;
pub use changes::{Change, ChangeHook};
pub use health::{Health, REQUEST_DEADLINE, Stamp, WatchState, client};
pub use outage::Outage;
pub(crate) use watch::PAGE;
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

/// The cluster `serve` may use: only one it was pointed at, never one inferred from
/// `~/.kube/config`. A developer's `stsguard serve` must not watch, and above all lead in, the
/// cluster their kubectl happens to point at. `Ok(Err(why))`: none was asked for.
pub async fn explicit_config(
    kubeconfig: Option<&Path>,
) -> Result<Result<Config, String>, ClusterError> {
    if kubeconfig.is_some() {
        return config(kubeconfig).await;
    }
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
        return Ok(
            match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
                Ok(config) => Ok(config),
                Err(e) => Err(format!("KUBECONFIG: {e}")),
            },
        );
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Ok(Config::incluster().map_err(|e| format!("in-cluster configuration: {e}")));
    }
    Ok(Err(
        "no --kubeconfig, no KUBECONFIG and not inside a cluster (~/.kube/config is read only \
         when named)"
            .to_owned(),
    ))
}

/// Cluster facts from the watches' indexes.
pub struct Cluster {
    client: Client,
    services: watch::Caches<ServiceFacts>,
    statefulsets: watch::Caches<StatefulSetFacts>,
    health: Arc<Health>,
    confirm_timeout: Duration,
    live_reads: LiveReads,
    /// The reviews' live reads (GETs of Services, LISTs of StatefulSets, which can fail
    /// apart): one story per outage, not a line per review.
    live_outages: [Arc<Outage>; 2],
    changes: changes::Hooks,
}

impl Cluster {
    /// Starts the watches (all namespaces when `namespaces` is empty) on the current runtime.
    /// They run for the life of the process and recover by themselves: list again at once
    /// after `410 Gone`, wait as asked after `429`, back off while the API server is away.
    pub fn start(
        config: Config,
        namespaces: &[String],
        confirm_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let health = Arc::new(Health::new(config.cluster_url.to_string()));
        let client = client(config, health.clone())?;
        reachable::spawn_probe(client.clone(), health.clone());
        let changes = changes::Hooks::default();
        let services = watch::services(&client, namespaces, &health, &changes);
        let statefulsets = watch::statefulsets(&client, namespaces, &health, &changes);
        let live_outages = [
            health.outage("live reads of services"),
            health.outage("live reads of statefulsets"),
        ];
        Ok(Cluster {
            client,
            services,
            statefulsets,
            health,
            confirm_timeout,
            live_reads: LiveReads::default(),
            live_outages,
            changes,
        })
    }

    /// Sends the watches' changes to `hook` ([`Change`]: a list's end, not its objects one by
    /// one), after the caches have them (one hook per cluster; a second is refused).
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

    /// Whether some cache may be behind the API server (an outage, or a list again after `410
    /// Gone`, not yet done): then an allow is confirmed live too. Reads are few then, and the
    /// facts of before an outage are the ones most likely to have changed.
    fn stale(&self) -> bool {
        self.health.stale_since().is_some()
    }
}

impl Lookup for Cluster {
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<ServiceFacts>> {
        match self.services.for_namespace(namespace) {
            Some(index) if self.synced() => match index.read().get(namespace, name) {
                Some(svc) => Fact::Found(svc),
                None => Fact::Absent,
            },
            _ => Fact::Unknown,
        }
    }

    fn statefulsets_naming(
        &self,
        namespace: &str,
        service: &str,
    ) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        match self.statefulsets.for_namespace(namespace) {
            Some(index) if self.synced() => Fact::Found(index.read().naming(namespace, service)),
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
    ///   and whatever the cache says while a cache is stale (after an outage, until it is
    ///   current again), so that an allow does not rest on facts from before it;
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
                    Fact::Found(svc) if !governs_cleanly(&svc, statefulset) || self.stale() => {
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
