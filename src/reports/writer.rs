//! Report writes: server-side apply under the field manager `stsguard`, delete when a namespace
//! has nothing to report, never more than the configured rate, and nothing when the report in
//! the cluster already says the same.

use std::{collections::HashMap, sync::Arc, time::Duration};

use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
};
use serde_json::Value;
use tokio::time::Instant;

use super::document::{self, MANAGED_BY, ReportApi};
use crate::{cluster::Outage, metrics::ReportMetrics};

pub const FIELD_MANAGER: &str = "stsguard";

/// At most `rate` requests a second on average, and bursts of at most `burst` (a generic cell
/// rate: each request takes the next slot; slots left unused accumulate up to the burst).
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    burst: u32,
    next: Instant,
}

impl Limiter {
    pub fn new(rate: f64) -> Limiter {
        let interval = Duration::from_secs_f64(1.0 / rate);
        // A burst of one second's worth, at least one.
        let burst = (rate.floor() as u32).max(1);
        Limiter {
            interval,
            burst,
            next: Instant::now(),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&mut self) {
        let slot = self.take(Instant::now());
        tokio::time::sleep_until(slot).await;
    }

    /// Takes the next slot for a request made at `now`: `now` itself while within the burst.
    fn take(&mut self, now: Instant) -> Instant {
        let earliest = now
            .checked_sub(self.interval * (self.burst - 1))
            .unwrap_or(now);
        self.next = self.next.max(earliest);
        let slot = self.next.max(now);
        self.next += self.interval;
        slot
    }
}

/// The reports in the cluster as this replica knows them: by namespace, the digest of the one
/// there.
pub struct Writer {
    client: Client,
    resource: ApiResource,
    limiter: Limiter,
    metrics: ReportMetrics,
    written: HashMap<String, u64>,
    outage: Arc<Outage>,
}

impl Writer {
    pub fn new(
        client: Client,
        api: ReportApi,
        rate: f64,
        metrics: ReportMetrics,
        outage: Arc<Outage>,
    ) -> Writer {
        let gvk = GroupVersionKind::gvk(api.group(), api.version(), api.kind());
        Writer {
            client,
            resource: ApiResource::from_gvk_with_plural(&gvk, api.plural()),
            limiter: Limiter::new(rate),
            metrics,
            written: HashMap::new(),
            outage,
        }
    }

    /// Where the reporter's requests tell how the API server answers.
    pub fn outage(&self) -> &Outage {
        &self.outage
    }

    fn namespaced(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    /// Reads the reports stsguard wrote before (by an earlier leader), so that a report that
    /// says what it should is not written again and one that should go is deleted; `namespaces`
    /// limits it to those (empty: all). Returns the namespaces that have one.
    pub async fn learn(&mut self, namespaces: &[String]) -> Result<Vec<String>, kube::Error> {
        self.written.clear();
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
            vec![Api::all_with(self.client.clone(), &self.resource)]
        } else {
            namespaces.iter().map(|ns| self.namespaced(ns)).collect()
        };
        for api in apis {
            let mut params = ListParams::default().labels(&selector).limit(500);
            loop {
                let page = api.list(&params).await?;
                for report in page.items {
                    let ours = report
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(MANAGED_BY.0))
                        == Some(&MANAGED_BY.1.to_owned());
                    let (Some(namespace), Some(name)) =
                        (&report.metadata.namespace, &report.metadata.name)
                    else {
                        continue;
                    };
                    if !ours || *name != document::name(namespace) {
                        continue;
                    }
                    let value = serde_json::to_value(&report).unwrap_or_default();
                    self.written
                        .insert(namespace.clone(), document::digest(&value));
                }
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => params = params.continue_token(&token),
                    _ => break,
                }
            }
        }
        Ok(self.written.keys().cloned().collect())
    }

    /// Forgets what it knew (another replica leads now).
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Makes the namespace's report `report` (`None`: no report). Returns false when a write
    /// failed (the namespace should be tried again).
    pub async fn put(&mut self, namespace: &str, report: Option<Value>) -> bool {
        match report {
            Some(report) => {
                let digest = document::digest(&report);
                if self.written.get(namespace) == Some(&digest) {
                    return true;
                }
                self.limiter.wait().await;
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let name = document::name(namespace);
                match self
                    .namespaced(namespace)
                    .patch(&name, &params, &Patch::Apply(&report))
                    .await
                {
                    Ok(_) => {
                        self.outage.answered();
                        self.metrics.written("apply", true);
                        self.written.insert(namespace.to_owned(), digest);
                        true
                    }
                    Err(e) => {
                        self.metrics.written("apply", false);
                        failed(
                            &self.outage,
                            &e,
                            "cannot write the report; trying again later",
                            namespace,
                        );
                        false
                    }
                }
            }
            None => {
                if !self.written.contains_key(namespace) {
                    return true;
                }
                self.limiter.wait().await;
                let name = document::name(namespace);
                match self
                    .namespaced(namespace)
                    .delete(&name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        self.outage.answered();
                        self.metrics.written("delete", true);
                        self.written.remove(namespace);
                        true
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.written.remove(namespace);
                        true
                    }
                    Err(e) => {
                        self.metrics.written("delete", false);
                        failed(
                            &self.outage,
                            &e,
                            "cannot delete the report; trying again later",
                            namespace,
                        );
                        false
                    }
                }
            }
        }
    }
}

/// Logs a failed request of the reporter: a refusal of this one request (a 4xx other than 429:
/// the report or its namespace is the problem) on its own line; anything else (no answer, a
/// 5xx, a 429 after kube's retries) is the API server's outage, logged once for all of them.
pub(super) fn failed(outage: &Outage, error: &kube::Error, what: &str, namespace: &str) {
    match error {
        kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429 => {
            tracing::warn!(component = "reports", namespace, error = %error, "{what}");
        }
        _ => outage.failed(
            &error,
            "reports keep their last state; writing again once it answers",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_the_rate() {
        let mut limiter = Limiter::new(4.0);
        let start = Instant::now() + Duration::from_secs(10);
        // The burst, one second's worth, goes at once.
        for _ in 0..4 {
            assert_eq!(limiter.take(start), start);
        }
        // Then a slot every quarter second, however fast requests come.
        let slots: Vec<Duration> = (0..8).map(|_| limiter.take(start) - start).collect();
        let expected: Vec<Duration> = (1..=8).map(|i| Duration::from_millis(250 * i)).collect();
        assert_eq!(slots, expected);
        // Idle time refills the burst, and no more than the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..4 {
            assert_eq!(limiter.take(later), later);
        }
        assert_eq!(limiter.take(later), later + Duration::from_millis(250));
    }
}
