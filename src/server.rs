//! The webhook's HTTP side: the router (`/validate`, `/mutate`), its limits and the review
//! handler. The listeners and shutdown are in `listener`, each connection and how it ends in
//! `connection`, readiness and the probe routes in
//! `readiness`, reading a body within the limit in `body`.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use futures::FutureExt;

mod body;
mod connection;
mod listener;
mod readiness;

use body::{BodyError, read_body, too_large};
pub use listener::{Server, Signal, shutdown_signal};
use readiness::not_found;
pub use readiness::{Readiness, probe_app};

use crate::{
    metrics::Metrics,
    metrics::Reviewed,
    review::{Answer, Endpoint, Reviewer},
    time::today,
};

/// The default `--max-body-bytes`: the largest AdmissionReview an API server with default
/// settings sends. Its request body limit (`MaxRequestBodyBytes`) is 3 MiB: twice etcd's
/// 1.5 MiB request limit, because a JSON body shrinks when stored as protobuf. So an object in a
/// write, and a stored object rendered as JSON, are each up to 3 MiB, and an UPDATE review
/// carries two of them (`object` and `oldObject`, with managedFields), plus the envelope: 2 × 3
/// MiB + 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// The default `--idle-timeout`: above the 90s after which the API server's client (Go's
/// `http.DefaultTransport` settings, applied by client-go) closes an idle connection itself.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Limits and timeouts of the webhook listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413 with a Status the API server shows.
    pub max_body_bytes: usize,
    /// Time to read the body and answer; slower requests get 408.
    pub request_timeout: Duration,
    /// Time for the TLS handshake and for each request's headers to arrive, from their first
    /// byte (HTTP/2: for the first request, from accept).
    pub header_read_timeout: Duration,
    /// How long a connection may sit idle, before its first request or between requests,
    /// before it is closed. Longer than the API server's own idle timeout (90s), so that an
    /// idle HTTP/1.1 connection is closed by the client, never under a request on its way.
    pub idle_timeout: Duration,
    /// How long in-flight reviews may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long to keep accepting and answering after a shutdown signal, with `/readyz` already
    /// 503, while the EndpointSlice drops the pod and the API server stops sending to it.
    pub drain_delay: Duration,
    /// How long a connection may live before it is closed gracefully (GOAWAY, `Connection:
    /// close`), give or take a tenth, so that the API server's long-lived connections spread over
    /// the replicas as they come and go. Zero: no limit.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_grace: Duration::from_secs(20),
            drain_delay: Duration::ZERO,
            max_connection_age: Duration::ZERO,
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
    request_timeout: Duration,
}

/// What the listeners serve: the reviews, readiness and metrics.
#[derive(Clone)]
pub struct Webhook {
    pub reviewer: Reviewer,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
}

/// The webhook routes. Only these paths answer; everything else is 404.
///
/// No tower layers: the request timeout and the accounting of 408s and 500s are in [`guarded`],
/// around the review itself. As layers (tower-http's timeout and a response mapper) they cost a
/// boxed future and a copy of the URI per review, and applied to paths that need neither.
pub fn app(reviewer: Reviewer, metrics: Arc<Metrics>, limits: &Limits) -> Router {
    let state = AppState {
        reviewer,
        metrics,
        max_body_bytes: limits.max_body_bytes,
        request_timeout: limits.request_timeout,
    };
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .fallback(not_found)
        .with_state(state)
}

/// What every review goes through around its handling: one that takes longer than
/// `--request-timeout` (reading its body included) becomes a 408, one that panics a 500 (see
/// [`panicked`]); both are counted here, since the review's own accounting never sees them.
///
/// A combinator rather than an `async fn`: an `async fn` would keep `review` twice in its state,
/// as its argument and inside the timeout, and futures of several KiB are copied each time one
/// is moved (into axum's box, into the connection's task), which measured as most of the
/// memory copying per review.
fn guarded(
    metrics: Arc<Metrics>,
    endpoint: Endpoint,
    timeout: Duration,
    review: impl Future<Output = Response>,
) -> impl Future<Output = Response> {
    let caught = AssertUnwindSafe(review).catch_unwind();
    tokio::time::timeout(timeout, caught).map(move |outcome| {
        let (response, status) = match outcome {
            Ok(Ok(response)) => return response,
            Ok(Err(panic)) => (panicked(&*panic), StatusCode::INTERNAL_SERVER_ERROR),
            Err(_) => (
                text(StatusCode::REQUEST_TIMEOUT, "request timed out\n"),
                StatusCode::REQUEST_TIMEOUT,
            ),
        };
        metrics.request_rejected(endpoint.as_str(), status.as_u16());
        response
    })
}

/// Nothing in a review is meant to panic. If something does, the API server still gets an
/// answer (a 500, to which it applies the webhook's failurePolicy) instead of a connection
/// dropped mid-request, the connection's other requests go on, and the log says what happened.
/// Unwind safety holds because a review shares nothing it could leave half-changed: the policy
/// and caches are read-only to it and the metrics are atomics.
/// (Caught in [`guarded`] rather than with tower-http's `CatchPanicLayer`, which measured about
/// 1 µs, 3 %, more CPU per Service review, most likely for the response body it boxes.)
fn panicked(panic: &(dyn Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "review failed: the reviewer panicked");
    text(StatusCode::INTERNAL_SERVER_ERROR, "review failed\n")
}

fn validate(State(state): State<AppState>, request: Request) -> impl Future<Output = Response> {
    guarded_review(state, Endpoint::Validate, request)
}

fn mutate(State(state): State<AppState>, request: Request) -> impl Future<Output = Response> {
    guarded_review(state, Endpoint::Mutate, request)
}

fn guarded_review(
    state: AppState,
    endpoint: Endpoint,
    request: Request,
) -> impl Future<Output = Response> {
    let metrics = state.metrics.clone();
    let timeout = state.request_timeout;
    guarded(metrics, endpoint, timeout, review(state, endpoint, request))
}

// Not an `async fn`: one keeps its arguments twice in its state (rust-lang/rust#62958).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn review(state: AppState, endpoint: Endpoint, request: Request) -> impl Future<Output = Response> {
    async move {
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
                        namespace: &s.namespace,
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
    // Not in the review's span: the line carries all of the review's fields itself.
    tracing::info!(
        uid = s.uid.as_str(),
        kind = s.kind.as_str(),
        namespace = s.namespace.as_str(),
        object = s.name.as_str(),
        operation = s.operation,
        verdict = s.decision.as_str(),
        endpoint = endpoint.as_str(),
        sub_resource = s.sub_resource.as_deref().unwrap_or(""),
        dry_run = s.dry_run,
        rules = s.rules.join(",").as_str(),
        skipped_rules = s.skipped.join(",").as_str(),
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

fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(message.to_owned()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn buggy() -> Response {
        panic!("a mutator bug")
    }

    #[tokio::test]
    async fn a_panic_while_answering_is_a_counted_500_and_the_next_review_goes_on() {
        let metrics = Arc::new(Metrics::new());
        let timeout = Duration::from_secs(10);

        let response = guarded(metrics.clone(), Endpoint::Mutate, timeout, buggy()).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"review failed\n");

        let fine = async { "fine".into_response() };
        let response = guarded(metrics.clone(), Endpoint::Validate, timeout, fine).await;
        assert_eq!(response.status(), StatusCode::OK);
        let rendered = metrics.render();
        assert!(
            rendered
                .contains(r#"stsguard_rejected_requests_total{endpoint="mutate",status="500"} 1"#),
            "{rendered}"
        );
        assert!(!rendered.contains(r#"endpoint="validate",status="500""#));
    }

    #[tokio::test]
    async fn a_review_past_the_request_timeout_is_a_counted_408() {
        let metrics = Arc::new(Metrics::new());
        let never = std::future::pending::<Response>();
        let response = guarded(
            metrics.clone(),
            Endpoint::Validate,
            Duration::from_millis(10),
            never,
        )
        .await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let rendered = metrics.render();
        assert!(
            rendered.contains(
                r#"stsguard_rejected_requests_total{endpoint="validate",status="408"} 1"#
            ),
            "{rendered}"
        );
    }
}
