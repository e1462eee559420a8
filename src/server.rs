//! The listeners: the webhook over TLS (`/validate`, `/mutate`) and the plain probe listener
//! (`/healthz`, `/readyz`), with body limits, timeouts and graceful shutdown.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::FutureExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;

use crate::{
    cluster::Health,
    metrics::Metrics,
    metrics::Reviewed,
    review::{Answer, Endpoint, Reviewer},
    time::today,
    tls::CertResolver,
};

/// The default `--max-body-bytes`: the largest AdmissionReview an API server with default
/// settings sends. Its request body limit (`MaxRequestBodyBytes`) is 3 MiB: twice etcd's
/// 1.5 MiB request limit, because a JSON body shrinks when stored as protobuf. So an object in a
/// write, and a stored object rendered as JSON, are each up to 3 MiB, and an UPDATE review
/// carries two of them (`object` and `oldObject`, with managedFields), plus the envelope: 2 × 3
/// MiB + 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Limits and timeouts of the webhook listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413 with a Status the API server shows.
    pub max_body_bytes: usize,
    /// Time to read the body and answer; slower requests get 408.
    pub request_timeout: Duration,
    /// Time for the TLS handshake and for each request's headers to arrive.
    pub header_read_timeout: Duration,
    /// How long in-flight reviews may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Bodies above this size are reviewed on the blocking pool, so that parsing them cannot stall
/// the connections that share the executor thread.
const INLINE_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    reviewer: Reviewer,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

/// What the listeners serve: the reviews, readiness and metrics.
#[derive(Clone)]
pub struct Webhook {
    pub reviewer: Reviewer,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
}

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
            (true, None, true) => "ready\n".to_owned(),
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

/// The webhook routes. Only these paths answer; everything else is 404.
pub fn app(reviewer: Reviewer, metrics: Arc<Metrics>, limits: &Limits) -> Router {
    let state = AppState {
        reviewer,
        metrics: metrics.clone(),
        max_body_bytes: limits.max_body_bytes,
    };
    let routes = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .fallback(not_found)
        .with_state(state);
    guarded(routes, metrics, limits)
}

/// What every webhook request goes through around its handler: a slow request becomes a 408,
/// and 408s and 500s (see [`caught`]) are counted here, since the handler's own accounting never
/// sees them.
fn guarded(routes: Router, metrics: Arc<Metrics>, limits: &Limits) -> Router {
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(
            move |request_path: axum::http::Uri, response: Response| {
                let metrics = metrics.clone();
                async move {
                    let status = response.status();
                    let unseen = status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::INTERNAL_SERVER_ERROR;
                    if unseen && let Some(endpoint) = endpoint_of(request_path.path()) {
                        metrics.request_rejected(endpoint.as_str(), status.as_u16());
                    }
                    response
                }
            },
        ))
}

/// Nothing in a review is meant to panic. If something does, the API server still gets an
/// answer (a 500, to which it applies the webhook's failurePolicy) instead of a connection
/// dropped mid-request, the connection's other requests go on, and the log says what happened.
/// Unwind safety holds because a review shares nothing it could leave half-changed: the policy
/// and caches are read-only to it and the metrics are atomics.
/// (Caught here rather than with tower-http's `CatchPanicLayer`, which measured about 1 µs, 3 %,
/// more CPU per Service review, most likely for the response body it boxes.)
async fn caught(review: impl Future<Output = Response>) -> Response {
    match AssertUnwindSafe(review).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(panic = message, "review failed: the reviewer panicked");
            text(StatusCode::INTERNAL_SERVER_ERROR, "review failed\n")
        }
    }
}

fn endpoint_of(path: &str) -> Option<Endpoint> {
    match path {
        "/validate" => Some(Endpoint::Validate),
        "/mutate" => Some(Endpoint::Mutate),
        _ => None,
    }
}

/// The probe routes: health, readiness and metrics, nothing else.
pub fn probe_app(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
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

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: stsguard answers POST /validate and POST /mutate\n",
    )
}

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    caught(review(state, Endpoint::Validate, request)).await
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    caught(review(state, Endpoint::Mutate, request)).await
}

async fn review(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let _timer = state.metrics.review_started(endpoint.as_str());
    let limit = state.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(request.into_body(), limit, declared).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { size }) => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                limit,
                size = ?size,
                "review body over --max-body-bytes; answered 413"
            );
            state.metrics.request_rejected(endpoint.as_str(), 413);
            return too_large(limit, size);
        }
        Err(BodyError::Unreadable) => {
            state.metrics.request_rejected(endpoint.as_str(), 400);
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
    };

    let parsed = if body.len() > INLINE_BODY_BYTES {
        let reviewer = state.reviewer.clone();
        match tokio::task::spawn_blocking(move || reviewer.parse(endpoint, &body)).await {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::error!(error = %e, "review task failed");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "review failed\n");
            }
        }
    } else {
        state.reviewer.parse(endpoint, &body)
    };
    match parsed {
        Ok(parsed) => {
            let answer = state.reviewer.answer(endpoint, parsed, today()).await;
            let s = &answer.summary;
            state.metrics.review_answered(
                Reviewed {
                    endpoint: endpoint.as_str(),
                    kind: &s.kind,
                    operation: s.operation,
                    verdict: s.decision.as_str(),
                },
                s.violations
                    .iter()
                    .map(|(rule, action)| (*rule, action.as_str())),
            );
            respond(endpoint, answer, started)
        }
        Err(e) => {
            tracing::warn!(endpoint = endpoint.as_str(), error = %e, "rejected request");
            state.metrics.request_rejected(endpoint.as_str(), 400);
            text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
    }
}

fn respond(endpoint: Endpoint, answer: Answer, started: Instant) -> Response {
    let body = match answer.to_json() {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize the AdmissionReview");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot serialize the response\n",
            );
        }
    };
    let s = &answer.summary;
    // In the review's span, which carries uid, kind, namespace, name, operation and verdict.
    let _span = answer.span.enter();
    tracing::info!(
        endpoint = endpoint.as_str(),
        sub_resource = s.sub_resource.as_deref().unwrap_or(""),
        dry_run = s.dry_run,
        rules = %s.rules.join(","),
        skipped_rules = %s.skipped.join(","),
        latency_us = started.elapsed().as_micros() as u64,
        "review"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body),
    )
        .into_response()
}

/// How much of an over-limit body is read (and thrown away) so that the client gets the 413:
/// an HTTP/2 stream whose body is left unread is reset, and an HTTP/1.1 connection closed, and
/// a client still sending may then never see the answer. Nothing of it is kept.
fn drain_limit(limit: usize) -> u64 {
    (limit as u64).saturating_mul(4).max(64 * 1024 * 1024)
}

enum BodyError {
    /// Over the limit: `size` is the declared or counted size, when known.
    TooLarge {
        size: Option<u64>,
    },
    Unreadable,
}

/// Reads a body of at most `limit` bytes. A larger one is read to its end without being kept
/// (up to [`drain_limit`]), so that the 413 reaches the client; memory stays within `limit`.
async fn read_body(body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt;

    let mut body = body;
    // Room for what the client says it sends, but not more than 1 MiB up front: a client that
    // declares a large body and sends nothing holds no memory for it.
    let mut kept = bytes::BytesMut::with_capacity(declared.map_or(0, |n| {
        usize::try_from(n).unwrap_or(limit).min(limit).min(1 << 20)
    }));
    let mut seen: u64 = 0;
    let over = declared.is_some_and(|n| n > limit as u64);
    if over && declared.is_some_and(|n| n > drain_limit(limit)) {
        // Not worth reading: answered from the headers.
        return Err(BodyError::TooLarge { size: declared });
    }
    let mut too_large = over;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(if too_large {
                BodyError::TooLarge { size: declared }
            } else {
                BodyError::Unreadable
            });
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen += data.len() as u64;
        if seen > limit as u64 {
            too_large = true;
        }
        if too_large {
            if seen > drain_limit(limit) {
                return Err(BodyError::TooLarge { size: None });
            }
            continue;
        }
        kept.extend_from_slice(&data);
    }
    if too_large {
        return Err(BodyError::TooLarge {
            size: declared.or(Some(seen)),
        });
    }
    Ok(kept.freeze())
}

/// The answer to an over-limit body: HTTP 413 with a `metav1.Status`. The API server's client
/// reads a non-2xx answer's body as a Status when it is one, and shows its message ("failed
/// calling webhook ...: <message>"); a body that is not a Status leaves it with only "the
/// server responded with the status code 413 but did not return more information". Which
/// review it was cannot be told without reading it, so this is not an AdmissionReview (whose
/// uid would have to match), and the webhook's failurePolicy decides, as for any failed call.
fn too_large(limit: usize, size: Option<u64>) -> Response {
    let size = size.map_or_else(|| "larger".to_owned(), |n| format!("{n} bytes, larger"));
    let message = format!(
        "stsguard cannot review this object: the AdmissionReview is {size} than the webhook's \
         limit of {limit} bytes (--max-body-bytes, chart value maxBodyBytes). An UPDATE review \
         carries the object twice (object and oldObject); set the limit to at least twice the \
         API server's request body limit (3 MiB by default) plus 1 MiB"
    );
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "RequestEntityTooLarge",
        "code": 413,
    });
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "application/json")],
        status.to_string(),
    )
        .into_response()
}

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(message.to_owned()),
    )
        .into_response()
}

/// Both listeners, bound and ready to run.
pub struct Server {
    tls_listener: TcpListener,
    probe_listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    probes: Router,
    readiness: Readiness,
    limits: Limits,
}

impl Server {
    /// Binds both listeners. Certificates are loaded before this, so a bad file never gets as
    /// far as a bound port.
    pub async fn bind(
        addr: SocketAddr,
        probe_addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        webhook: Webhook,
        limits: Limits,
    ) -> io::Result<Server> {
        let Webhook {
            reviewer,
            readiness,
            metrics,
        } = webhook;
        let router = app(reviewer, metrics.clone(), &limits);
        let probes = probe_app(readiness.clone(), metrics);
        Server::with_routers(addr, probe_addr, tls, router, probes, readiness, limits).await
    }

    /// Binds the same listeners for other routes; the benchmarks' floor server uses it to
    /// measure this TLS and HTTP stack with no review work.
    pub async fn with_routers(
        addr: SocketAddr,
        probe_addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        probes: Router,
        readiness: Readiness,
        limits: Limits,
    ) -> io::Result<Server> {
        let tls_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let probe_listener = TcpListener::bind(probe_addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {probe_addr}: {e}")))?;
        Ok(Server {
            tls_listener,
            probe_listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            probes,
            readiness,
            limits,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tls_listener.local_addr()
    }

    pub fn probe_addr(&self) -> io::Result<SocketAddr> {
        self.probe_listener.local_addr()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight reviews finish
    /// within the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server {
            tls_listener,
            probe_listener,
            acceptor,
            router,
            probes,
            readiness,
            limits,
        } = self;

        // The probe listener outlives the webhook listener, so that /readyz can report
        // "not ready" while in-flight reviews drain.
        let (probe_stop, mut probe_stopped) = watch::channel(false);
        let probe_task = tokio::spawn(async move {
            let stop = async move {
                let _ = probe_stopped.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(probe_listener, probes)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "probe listener failed");
            }
        });

        // Connections watch this to begin a graceful close; the set lets shutdown wait for them.
        let (closing, _) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        readiness.set(true);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = tls_listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Answers are small and written in a few pieces (TLS records, HTTP/2 frames): with
            // Nagle's algorithm on, the last piece can wait for the client's delayed ACK, some
            // 40 ms, on the API server's write path.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let router = router.clone();
            let closing = closing.subscribe();
            let limits = limits.clone();
            connections.spawn(async move {
                let stream =
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                serve_connection(stream, router, &limits, closing, peer).await;
            });
        }

        drop(tls_listener);
        readiness.set(false);
        tracing::info!(grace = ?limits.shutdown_grace, "shutting down: finishing in-flight reviews");
        closing.send_replace(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        tokio::select! {
            () = drained => tracing::info!("all connections closed"),
            () = tokio::time::sleep(limits.shutdown_grace) => {
                tracing::warn!("grace period over; closing the remaining connections");
                connections.abort_all();
            }
        }
        let _ = probe_stop.send(true);
        let _ = probe_task.await;
        Ok(())
    }
}

/// How long a connection may sit between requests before it is closed. The API server reuses
/// idle connections, and reconnects when one is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests a connection has in flight and when it last had one, for its watchdog.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request ended.
    last_ended: AtomicU64,
    served: AtomicBool,
    epoch: Instant,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ended.store(now, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection should be closed if nothing happens before then: `None` while a
    /// request is in flight. Before its first request a connection gets `header_read_timeout`
    /// from accept (a client that connects and sends nothing, or trickles its first request,
    /// is cut off); after that, `IDLE_TIMEOUT` from the end of its last request.
    fn deadline(&self, header_read_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.served.load(Ordering::SeqCst) {
            return Some(self.epoch + header_read_timeout);
        }
        let ended = Duration::from_millis(self.last_ended.load(Ordering::SeqCst));
        Some(self.epoch + ended + IDLE_TIMEOUT)
    }
}

/// Serves one TLS connection (HTTP/1.1 or HTTP/2) until the client closes it, it idles past its
/// deadline, or shutdown begins; a graceful close that does not finish in time is cut.
async fn serve_connection(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    router: Router,
    limits: &Limits,
    mut closing: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last_ended: AtomicU64::new(0),
        served: AtomicBool::new(false),
        epoch: Instant::now(),
    });
    let service = TowerToHyperService::new(router);
    let counted = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let in_flight = activity.begin();
            let response = hyper::service::Service::call(&service, request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), counted);
    let mut conn = std::pin::pin!(conn);
    let mut cut_at: Option<tokio::time::Instant> = None;
    loop {
        // While a request is in flight there is no deadline; look again a little later.
        let idle_at = activity
            .deadline(limits.header_read_timeout)
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + limits.header_read_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|closing| *closing), if cut_at.is_none() => {
                conn.as_mut().graceful_shutdown();
                cut_at = Some(tokio::time::Instant::now() + limits.shutdown_grace);
            }
            () = tokio::time::sleep_until(idle_at), if cut_at.is_none() => {
                // Re-check: a request may have started while the timer ran.
                if activity.deadline(limits.header_read_timeout).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    cut_at = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                }
            }
            () = sleep_until_or_forever(cut_at) => {
                tracing::debug!(%peer, "connection did not close in time; dropping it");
                return;
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn buggy() -> Response {
        panic!("a mutator bug")
    }

    #[tokio::test]
    async fn a_panic_while_answering_is_a_counted_500_and_the_router_goes_on() {
        let metrics = Arc::new(Metrics::new());
        let routes = Router::new()
            .route(
                "/validate",
                post(|| caught(async { "fine".into_response() })),
            )
            .route("/mutate", post(|| caught(buggy())));
        let app = guarded(routes, metrics.clone(), &Limits::default());
        let post_to = |path: &str| Request::post(path).body(Body::empty()).unwrap();

        let response = app.clone().oneshot(post_to("/mutate")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"review failed\n");

        let response = app.oneshot(post_to("/validate")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let rendered = metrics.render();
        assert!(
            rendered
                .contains(r#"stsguard_rejected_requests_total{endpoint="mutate",status="500"} 1"#),
            "{rendered}"
        );
        assert!(!rendered.contains(r#"endpoint="validate",status="500""#));
    }
}
