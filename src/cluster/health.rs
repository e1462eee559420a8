//! How the watches are doing: a client layer that notices a watch reconnecting and puts a
//! deadline on every other request, and the state of every watch for `/readyz`, the logs and
//! the metrics. Each watch tells one story per outage: one WARN when it loses the API server,
//! one INFO when it is back, with how long it was out.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{Client, Config, client::ClientBuilder};
use tower::Layer;

use crate::lookup::BoxFuture;

use super::{
    ClusterError, list_deadline, list_deadline::ListDeadline, outage::Outage, reachable::Returns,
};

/// A client for `config` whose watch requests report to `health` when they connect (the
/// watcher itself says nothing when a quiet watch resumes after an outage), and whose requests
/// get [`REQUEST_DEADLINE`] for their answer to begin.
pub fn client(config: Config, health: Arc<Health>) -> Result<Client, ClusterError> {
    let builder =
        ClientBuilder::try_from(config).map_err(|e| ClusterError::Client(e.to_string()))?;
    Ok(builder.with_layer(&WatchProbeLayer(health)).build())
}

/// How long a request may take to be answered (its status and headers; a watch's events come
/// after them, as long as it is open).
/// The real API server ends its own requests after 60 s (`--request-timeout`); a page of a list,
/// a GET or a write answered from a healthy one takes milliseconds. A list cut by it gets twice
/// as long the next time (`list_deadline`), so a slow one is not cut for ever.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// A request had no answer within its deadline ([`REQUEST_DEADLINE`], longer for a list after
/// lists were cut). kube's client retries a 429, 503 or 504 by itself (waiting as long as a
/// Retry-After asks) inside that time, so this is an API server that hangs, or one that still
/// sheds load after those retries.
#[derive(Debug, thiserror::Error)]
#[error(
    "no answer from the API server to {0} within {1:?} (it hangs, or still answers 429/503 after retries)"
)]
pub struct RequestDeadline(String, Duration);

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
    S::Error: Send + From<RequestDeadline> + 'static,
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
        let lease_write = path.contains("/leases/") && request.method() != http::Method::GET;
        let list = list_deadline::is_list(request.method(), request.uri().query());
        let deadline = if list {
            self.health.lists.now()
        } else {
            REQUEST_DEADLINE
        };
        let sent = Instant::now();
        let health = self.health.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            // The status and headers only: a watch's events come in the body, after them. A
            // request without them in this time hangs (an API server that accepts connections
            // and stalls) or is throttled on and on, and the caller's retry gets it going again.
            let Ok(response) = tokio::time::timeout(deadline, response).await else {
                if list {
                    health.lists.cut();
                }
                return Err(S::Error::from(RequestDeadline(path, deadline)));
            };
            let response = response?;
            if list {
                health.lists.answered();
            }
            if watch && response.status().is_success() {
                health.watch_connected(&path);
            }
            if lease_write && response.status().is_success() {
                health.lease_written(sent);
            }
            Ok(response)
        })
    }
}

/// A moment, kept both ways: `Instant` for durations, Unix seconds for the metrics.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    at: Instant,
    unix: i64,
}

impl Stamp {
    pub(super) fn now() -> Stamp {
        Stamp {
            at: Instant::now(),
            unix: jiff::Timestamp::now().as_second(),
        }
    }

    pub fn unix(self) -> i64 {
        self.unix
    }

    pub fn elapsed(self) -> Duration {
        self.at.elapsed()
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
    /// Since when the API server cannot be reached (or fails), and the last error.
    pub lost: Option<(Stamp, String)>,
    /// Since when the facts may be behind the API server's: from losing it, or from a `410
    /// Gone`, until the watch is current again (resumed, or a fresh list done).
    pub stale: Option<Stamp>,
    /// A stale spell that a reconnect ended, kept while a `410 Gone` may still follow it (the
    /// API server answers a resume from a compacted version with a watch that says so).
    resumed_from: Option<Stamp>,
    /// The last failure had no answer from the API server (not an HTTP error): the return
    /// probe runs for it.
    unanswered: bool,
}

impl std::fmt::Display for WatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = self.namespace.as_deref().unwrap_or("all namespaces");
        write!(f, "{} ({scope}): ", self.kind)?;
        match (&self.lost, self.stale, self.synced) {
            (Some((since, e)), stale, _) => {
                write!(f, "API server lost for {}s: {e}", since.elapsed().as_secs())?;
                if let Some(stale) = stale {
                    write!(
                        f,
                        "; cross-object facts stale for {}s",
                        stale.elapsed().as_secs()
                    )?;
                }
                Ok(())
            }
            (None, Some(stale), _) => write!(
                f,
                "listing again; cross-object facts stale for {}s",
                stale.elapsed().as_secs()
            ),
            (None, None, true) => write!(f, "synced, {} objects", self.objects),
            (None, None, false) => write!(f, "waiting for the first list"),
        }
    }
}

/// The state of every watch, and the API server they talk to.
#[derive(Debug, Default)]
pub struct Health {
    server: String,
    watches: Mutex<Vec<WatchState>>,
    returns: Returns,
    /// The other components that talk to this API server, for the metrics.
    outages: Mutex<Vec<Arc<Outage>>>,
    /// When the last write to a Lease that succeeded was sent (before any retry of it).
    lease_written: Mutex<Option<Instant>>,
    /// How long the next page of a list may take.
    lists: ListDeadline,
}

impl Health {
    /// The health of watches of the API server at `server` (its URL, for the logs).
    pub fn new(server: String) -> Health {
        Health {
            server,
            watches: Mutex::default(),
            returns: Returns::default(),
            outages: Mutex::default(),
            lease_written: Mutex::default(),
            lists: ListDeadline::default(),
        }
    }

    /// When the last successful write to a Lease was sent: the holder's lease runs from then
    /// (its renewTime is set just before), whatever this replica believes.
    pub fn lease_written_at(&self) -> Option<Instant> {
        *self.lease_written.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_written(&self, sent: Instant) {
        *self.lease_written.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent);
    }

    /// The outage tracker of `component`, reported in the metrics with the watches.
    pub fn outage(&self, component: &'static str) -> Arc<Outage> {
        let outage = Outage::new(component, self.server.clone());
        self.outages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(outage.clone());
        outage
    }

    /// Where the watches learn that the API server answers again.
    pub(super) fn returns(&self) -> &Returns {
        &self.returns
    }

    /// Sleeps for `wait`, or less if the API server answers again meanwhile: a back-off after
    /// a failed connection need not outlast the outage.
    pub async fn back_off(&self, wait: Duration) {
        let mut returns = self.returns.subscribe();
        returns.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = returns.changed() => {}
        }
    }

    /// Whether some watch cannot connect to the API server now.
    pub(super) fn unreachable(&self) -> bool {
        self.lock().iter().any(|w| w.lost.is_some() && w.unanswered)
    }

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
            lost: None,
            stale: None,
            resumed_from: None,
            unanswered: false,
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

    /// Since when the oldest stale cache has been stale, if any is.
    pub fn stale_since(&self) -> Option<Stamp> {
        self.lock()
            .iter()
            .filter_map(|w| w.stale)
            .min_by_key(|s| s.at)
    }

    pub fn states(&self) -> Vec<WatchState> {
        self.lock().clone()
    }

    /// The watch at `slot` failed to reach the API server (or was refused by it): the first
    /// failure of an outage is logged, the others only kept.
    /// `unanswered`: it got no answer at all (else an HTTP error).
    pub(super) fn lost(&self, slot: usize, error: String, unanswered: bool) {
        let server = &self.server;
        self.update(slot, |w| {
            let now = Stamp::now();
            if w.lost.is_none() {
                tracing::warn!(component = "watch", kind = w.kind, namespace = ?w.namespace,
                    %server, %error,
                    "watch lost the API server; answering from the cache, retrying with back-off");
            }
            w.stale.get_or_insert(now);
            let since = w.lost.take().map_or(now, |(since, _)| since);
            w.lost = Some((since, error));
            w.unanswered = unanswered;
        });
    }

    /// The watch at `slot` was told that events it would resume from are gone: it lists again,
    /// and its facts are stale until the list is done (since the outage that led here, if any).
    pub(super) fn expired(&self, slot: usize) {
        self.update(slot, |w| {
            tracing::debug!(kind = w.kind, namespace = ?w.namespace, "resource version expired; listing again");
            let since = w
                .stale
                .or(w.resumed_from.take())
                .unwrap_or_else(Stamp::now);
            w.stale = Some(since);
        });
    }

    /// A watch request for `path` was answered: the watch is connected again, and current
    /// once the events it missed (sent first) are in.
    pub(super) fn watch_connected(&self, path: &str) {
        for w in self.lock().iter_mut().filter(|w| w.path == path) {
            back(w, &self.server);
            w.resumed_from = w.stale.take();
        }
    }

    /// The watch at `slot` finished a list: it is current.
    pub(super) fn listed(&self, slot: usize, objects: usize) {
        self.update(slot, |w| {
            back(w, &self.server);
            if !w.synced {
                tracing::info!(component = "watch", kind = w.kind, namespace = ?w.namespace, objects, "cache synced");
            } else if let Some(stale) = w.stale.or(w.resumed_from) {
                tracing::debug!(kind = w.kind, namespace = ?w.namespace, objects,
                    stale_for = ?stale.elapsed(), "cache current again after a fresh list");
            }
            w.synced = true;
            w.stale = None;
            w.resumed_from = None;
            w.objects = objects;
        });
    }

    /// The watch at `slot` delivered an event: it is connected and current.
    pub(super) fn watched(&self, slot: usize, objects: usize) {
        self.update(slot, |w| {
            back(w, &self.server);
            w.stale = None;
            w.resumed_from = None;
            w.objects = objects;
        });
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut WatchState)) {
        if let Some(state) = self.lock().get_mut(index) {
            change(state);
        }
    }
}

/// Ends an outage of `w`, if it was in one, with its one INFO line.
fn back(w: &mut WatchState, server: &str) {
    if let Some((since, _)) = w.lost.take() {
        tracing::info!(component = "watch", kind = w.kind, namespace = ?w.namespace, %server,
            out_for = ?since.elapsed(), "watch reached the API server again");
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
                watching: w.lost.is_none(),
                disconnected_since: w.lost.as_ref().map(|(since, _)| since.unix()),
                stale_since: w.stale.map(Stamp::unix),
            })
            .collect()
    }

    fn outages(&self) -> Vec<(&'static str, Option<i64>)> {
        self.outages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|o| (o.component(), o.since().map(Stamp::unix)))
            .collect()
    }
}
