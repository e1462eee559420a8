//! Noticing the API server's return while the watches back off. Their back-off grows to 30 s so
//! that replicas do not hammer an API server that is down or overloaded; alone, it would also
//! leave the caches behind for up to 30 s after the API server is back. While a watch cannot
//! connect, one probe per process asks the API server's `/readyz` (public to every client, and
//! answered without touching etcd) once a second, and the answer ends every connection-failure
//! back-off at once. A watch that got an HTTP error (a 5xx, a 403) keeps its back-off: the API
//! server answers then, so its answering says nothing new.

use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::sync::watch;

use super::Health;

/// How often the probe asks, while a watch cannot connect.
const EVERY: Duration = Duration::from_secs(1);

/// Tells the watches that the API server answers again: each answer after an unreachable spell
/// bumps the count.
#[derive(Debug)]
pub(super) struct Returns(watch::Sender<u64>);

impl Default for Returns {
    fn default() -> Self {
        Returns(watch::channel(0).0)
    }
}

impl Returns {
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn returned(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

/// Probes for the API server's return, for the life of the process, while any watch cannot
/// connect to it.
pub(super) fn spawn_probe(client: Client, health: Arc<Health>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if health.unreachable() && answers(&client).await {
                health.returns().returned();
            }
        }
    });
}

/// Whether the API server answers `/readyz` with a status that says it serves: a 403 (RBAC
/// that hides it) counts, a 5xx or 429 (a load balancer with no API server behind it, or an
/// API server shedding load) does not.
async fn answers(client: &Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(kube::client::Body::empty()) else {
        return false;
    };
    match tokio::time::timeout(EVERY, client.send(request)).await {
        Ok(Ok(response)) => {
            let status = response.status();
            !status.is_server_error() && status != http::StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}
