//! How the watches are doing: a client layer that notices a watch reconnecting, and the state
//! of every watch for `/readyz`, the logs and the metrics.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Instant,
};

use kube::{Client, Config, client::ClientBuilder};
use tower::Layer;

use crate::lookup::BoxFuture;

use super::ClusterError;

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
    pub(super) fn register(&self, kind: &'static str, namespace: Option<String>) -> usize {
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
    pub(super) fn watch_connected(&self, path: &str) {
        for w in self.lock().iter_mut().filter(|w| w.path == path) {
            if w.error.take().is_some() {
                tracing::info!(kind = w.kind, namespace = ?w.namespace, "watch reconnected");
                w.since = Instant::now();
            }
        }
    }

    pub(super) fn update(&self, index: usize, change: impl FnOnce(&mut WatchState)) {
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
