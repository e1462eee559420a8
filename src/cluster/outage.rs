//! One story per outage for the work that talks to the API server other than the watches (the
//! leader's lease, the reviews' live reads, the in-cluster reports): one WARN when it loses the
//! API server, naming the component, the server and the error; one INFO when it reaches it
//! again, with how long it was out; and since when it is out, for the metrics.

use std::{
    fmt::Display,
    sync::{Arc, Mutex},
};

use super::Stamp;

/// The API server as one component sees it.
#[derive(Debug)]
pub struct Outage {
    component: &'static str,
    server: String,
    since: Mutex<Option<Stamp>>,
}

impl Outage {
    pub fn new(component: &'static str, server: String) -> Arc<Outage> {
        Arc::new(Outage {
            component,
            server,
            since: Mutex::default(),
        })
    }

    pub fn component(&self) -> &'static str {
        self.component
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request failed to reach the API server (or was refused by it); `doing` says what is
    /// done meanwhile. Logged when it starts an outage.
    pub fn failed(&self, error: &dyn Display, doing: &str) {
        let mut since = self.lock();
        if since.is_none() {
            *since = Some(Stamp::now());
            let (component, server) = (self.component, &self.server);
            tracing::warn!(component, %server, %error, "{component} lost the API server; {doing}");
        }
    }

    /// A request was answered: logged when it ends an outage.
    pub fn answered(&self) {
        if let Some(since) = self.lock().take() {
            let (component, server) = (self.component, &self.server);
            tracing::info!(component, %server, out_for = ?since.elapsed(),
                "{component} reached the API server again");
        }
    }

    /// Since when the API server has been out, if it is.
    pub fn since(&self) -> Option<Stamp> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_at_its_first_failure_and_ends_at_the_first_answer() {
        let outage = Outage::new("lease", "https://10.0.0.1:6443".to_owned());
        assert!(outage.since().is_none());
        outage.failed(&"connection refused", "retrying");
        let first = outage.since().unwrap();
        outage.failed(&"connection refused", "retrying");
        assert_eq!(outage.since().unwrap().unix(), first.unix());
        outage.answered();
        assert!(outage.since().is_none());
    }
}
