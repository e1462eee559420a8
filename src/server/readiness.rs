//! Readiness for `/readyz`, and the plain probe listener's routes: `/healthz`, `/readyz`,
//! `/metrics`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::Response,
    routing::get,
};

use crate::{cluster::Health, metrics::Metrics, tls::CertResolver};

use super::text;

/// Whether the webhook is ready to take reviews, for `/readyz`: its listener is accepting, its
/// serving certificate is within its validity (outside it every handshake fails) and, with
/// cluster lookups, every cache has had its first full sync.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    serving: Arc<AtomicBool>,
    cluster: Option<Arc<Health>>,
    certificate: Option<Arc<CertResolver>>,
}

impl Readiness {
    /// Readiness that also waits for these caches.
    pub fn with_cluster(health: Arc<Health>) -> Self {
        Readiness {
            cluster: Some(health),
            ..Readiness::default()
        }
    }

    /// Readiness that also requires this serving certificate to be within its validity.
    pub fn with_certificate(mut self, resolver: Arc<CertResolver>) -> Self {
        self.certificate = Some(resolver);
        self
    }

    /// Why the serving certificate would fail a handshake now, if it would.
    fn certificate_problem(&self) -> Option<String> {
        let now = jiff::Timestamp::now().as_second();
        self.certificate
            .as_ref()
            .and_then(|r| crate::tls::validity(r))
            .and_then(|v| v.problem(now))
    }

    /// The cluster caches this readiness waits for, if any.
    pub fn cluster(&self) -> Option<Arc<Health>> {
        self.cluster.clone()
    }

    pub fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
            && self.cluster.as_ref().is_none_or(|h| h.synced())
            && self.certificate_problem().is_none()
    }

    /// The `/readyz` body: the verdict, then how each watch is doing.
    fn report(&self) -> String {
        let certificate = self.certificate_problem();
        let mut out = match (
            self.serving.load(Ordering::SeqCst),
            &certificate,
            self.get(),
        ) {
            (false, _, _) => "not ready: not serving (starting or shutting down)\n".to_owned(),
            (true, Some(problem), _) => {
                format!("not ready: {problem}; every TLS handshake fails until it is replaced\n")
            }
            (true, None, false) => {
                "not ready: waiting for the first sync of the cluster caches\n".to_owned()
            }
            // Still ready: every replica lost the same API server, and a webhook unready in all
            // of them would fail or skip every write; the answers say what they rest on.
            (true, None, true) => match self.cluster.as_ref().and_then(|h| h.stale_since()) {
                Some(since) => format!(
                    "ready; cross-object facts stale for {}s (allows are confirmed live until \
                     the caches are current)\n",
                    since.elapsed().as_secs()
                ),
                None => "ready\n".to_owned(),
            },
        };
        match &self.cluster {
            Some(health) => {
                for watch in health.states() {
                    out.push_str(&format!("{watch}\n"));
                }
            }
            None => out.push_str("cluster lookups: off\n"),
        }
        out
    }
}

/// The probe routes: health, readiness and metrics, nothing else.
pub fn probe_app(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move |State(ready): State<Readiness>| {
                let metrics = metrics.clone();
                async move {
                    metrics.ready(ready.get());
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(ready): State<Readiness>| async move {
                let status = if ready.get() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, ready.report())
            }),
        )
        .fallback(not_found)
        .with_state(readiness)
}

pub(super) async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: stsguard answers POST /validate and POST /mutate\n",
    )
}
