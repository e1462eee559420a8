//! The control plane's faults, as a real API server shows them to a client: a restart with a new
//! resourceVersion epoch (every watch resumed from before it is answered `410 Expired`, as after
//! an etcd restore), a refused connection (the server stopped), a list that hangs or is slow, a
//! watch that a network fault dropped without closing it, and `429 Too Many Requests` with
//! Retry-After (API Priority and Fairness shedding load).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{FakeApiServer, status};

/// The faults in force, and what they did.
#[derive(Default)]
pub(super) struct Faults {
    /// Lists that arrive while set are never answered.
    hang_lists: bool,
    /// While set, every list is answered after this long (an API server that lists slowly).
    slow_lists: Option<std::time::Duration>,
    /// While set, every request is answered 429 with this Retry-After (seconds).
    throttle: Option<u32>,
    /// Requests answered 429 so far.
    throttled: usize,
    /// Watches dropped without a close: held open, sent nothing.
    stalled: Vec<tokio::sync::mpsc::UnboundedSender<axum::body::Bytes>>,
}

impl Faults {
    /// The stopped server's stalled watches go with their connections.
    pub(super) fn forget_stalled(&mut self) {
        self.stalled.clear();
    }
}

impl FakeApiServer {
    /// Stops, as [`FakeApiServer::stop`], and forgets every resourceVersion so far: when it
    /// is restarted, a watch resumed from one is answered 410 Expired and must list again.
    pub fn stop_for_a_new_epoch(&self) {
        self.stop();
        let mut inner = self.inner.lock().unwrap();
        inner.revision += 1000;
        inner.compacted = inner.revision;
        inner.history.clear();
    }

    /// Lists that arrive from now on hang (no answer, ever) until `false`.
    pub fn hang_lists(&self, hang: bool) {
        self.inner.lock().unwrap().faults.hang_lists = hang;
    }

    /// Lists that arrive from now on are answered after `delay` until `None`.
    pub fn slow_lists(&self, delay: Option<std::time::Duration>) {
        self.inner.lock().unwrap().faults.slow_lists = delay;
    }

    /// Every request is answered `429 Too Many Requests`, Retry-After `seconds`, until `None`.
    pub fn throttle(&self, seconds: Option<u32>) {
        self.inner.lock().unwrap().faults.throttle = seconds;
    }

    /// How many requests were answered 429.
    pub fn throttled(&self) -> usize {
        self.inner.lock().unwrap().faults.throttled
    }

    /// Every open watch goes silent without being closed, as when a network fault drops the
    /// connection's packets: the client sees neither events nor an end.
    pub fn stall_watches(&self) {
        let mut inner = self.inner.lock().unwrap();
        let watches = std::mem::take(&mut inner.watches);
        inner
            .faults
            .stalled
            .extend(watches.into_iter().map(|w| w.tx));
    }

    /// The 429 answer, when requests are throttled now.
    pub(super) fn throttled_answer(&self) -> Option<Response> {
        let mut inner = self.inner.lock().unwrap();
        let seconds = inner.faults.throttle?;
        inner.faults.throttled += 1;
        let mut body = status(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        body["details"] = json!({"retryAfterSeconds": seconds});
        Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("content-type", "application/json".to_owned()),
                    ("retry-after", seconds.to_string()),
                ],
                body.to_string(),
            )
                .into_response(),
        )
    }

    /// Never answers a list that arrives while lists hang; answers one late while they are slow.
    pub(super) async fn list_faults(&self) {
        let (hang, slow) = {
            let inner = self.inner.lock().unwrap();
            (inner.faults.hang_lists, inner.faults.slow_lists)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        if let Some(delay) = slow {
            tokio::time::sleep(delay).await;
        }
    }
}
