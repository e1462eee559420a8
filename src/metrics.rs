//! Prometheus metrics, all named `stsguard_*`, recorded in one place per event (a review, a
//! rejected request, a reload) and served as text on the probe listener's `/metrics`.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

mod denials;
mod live_reads;
mod reports;

pub use live_reads::{LiveRead, LiveReads};
pub use reports::ReportMetrics;

/// The state of one cluster cache, as the cluster module reports it at each scrape.
#[derive(Clone, Debug)]
pub struct CacheState {
    pub kind: &'static str,
    /// The watched namespace; `None` for all namespaces.
    pub namespace: Option<String>,
    pub objects: usize,
    pub synced: bool,
    pub watching: bool,
    /// Since when (Unix seconds) the watch cannot reach the API server, if it cannot.
    pub disconnected_since: Option<i64>,
    /// Since when (Unix seconds) the cache may be behind the API server, if it may.
    pub stale_since: Option<i64>,
}

/// Something that can say how its caches are, at each scrape.
pub trait CacheReport: Send + Sync {
    fn caches(&self) -> Vec<CacheState>;

    /// The other components that talk to the API server, and since when (Unix seconds) each
    /// cannot reach it, if it cannot.
    fn outages(&self) -> Vec<(&'static str, Option<i64>)> {
        Vec::new()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    kind: &'static str,
    operation: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    rule: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The request's kind as a label: the kinds a webhook configuration sends to stsguard, and
/// `other` for the rest, since the kind comes from the request body and anything that can
/// reach the port could otherwise make a new series with every request.
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "StatefulSet" => "StatefulSet",
        "Service" => "Service",
        "Scale" => "Scale",
        _ => "other",
    }
}

/// Buckets from 100 µs to about 3.3 s: a webhook's answers should sit at the low end.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

/// Every metric stsguard exports.
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    violations: Family<ViolationLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    rejected: Family<RejectLabels, Counter>,
    cache_objects: Family<CacheLabels, Gauge>,
    cache_synced: Family<CacheLabels, Gauge>,
    cache_watching: Family<CacheLabels, Gauge>,
    cache_disconnected_since: Family<CacheLabels, Gauge>,
    cache_stale_since: Family<CacheLabels, Gauge>,
    api_disconnected_since: Family<ComponentLabels, Gauge>,
    certificate_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    certificate_not_before: Gauge,
    policy_reloads: Family<ResultLabels, Counter>,
    leader: Gauge,
    ready: Gauge,
    namespace_denials: denials::NamespaceDenials,
    live_reads: LiveReads,
    reports: ReportMetrics,
    cluster: Mutex<Option<Arc<dyn CacheReport>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stsguard");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by endpoint, kind, operation and verdict (allowed, warned, denied, mutated, skipped, invalid)",
            reviews.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Rule violations found by the webhook, by rule and the policy's action",
            violations.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "review_duration_seconds",
            "Time from receiving a review request to its response, server-side",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reviews_in_flight",
            "Reviews being answered now",
            in_flight.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests to the webhook endpoints answered with an HTTP error (400 not a review, 408 too slow, 413 too large, 500 failed inside stsguard)",
            rejected.clone(),
        );
        let cache_objects = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_objects",
            "Objects in the cluster caches, by kind and watched namespace (empty: all)",
            cache_objects.clone(),
        );
        let cache_synced = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 once a cluster cache has had its first full sync",
            cache_synced.clone(),
        );
        let cache_watching = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_watching",
            "1 while a cluster cache's watch is connected, 0 while it is reconnecting",
            cache_watching.clone(),
        );
        let cache_disconnected_since = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_disconnected_since_timestamp_seconds",
            "Since when a cluster cache's watch cannot reach the API server, as a Unix timestamp; 0 while it can",
            cache_disconnected_since.clone(),
        );
        let cache_stale_since = Family::<CacheLabels, Gauge>::default();
        registry.register(
            "cache_stale_since_timestamp_seconds",
            "Since when a cluster cache may be behind the API server (an outage, or a list again after 410 Gone), as a Unix timestamp; 0 while it is current",
            cache_stale_since.clone(),
        );
        let api_disconnected_since = Family::<ComponentLabels, Gauge>::default();
        registry.register(
            "api_disconnected_since_timestamp_seconds",
            "Since when a component other than the watches (lease, live reads, reports) cannot reach the API server, as a Unix timestamp; 0 while it can",
            api_disconnected_since.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads, by result (success, failure)",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires, as a Unix timestamp",
            certificate_expiry.clone(),
        );
        let certificate_not_before = Gauge::default();
        registry.register(
            "certificate_not_before_timestamp_seconds",
            "From when the serving certificate is valid, as a Unix timestamp",
            certificate_not_before.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy file reloads, by result (success, failure)",
            policy_reloads.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (it writes reports and keeps the shared certificate), else 0",
            leader.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while this replica answers /readyz with 200 (its endpoint is ready), else 0",
            ready.clone(),
        );
        let namespace_denials = denials::NamespaceDenials::register(&mut registry);
        let live_reads = LiveReads::default();
        registry.register(
            "live_reads",
            "Live reads of the API server that confirm a cached fact before a verdict rests on it, \
             by kind (services: a GET by name, statefulsets: a namespaced LIST) and result \
             (agreed, corrected: the cache lagged, failed: the cache's answer stood)",
            live_reads.0.clone(),
        );
        let reports = ReportMetrics::register(&mut registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running stsguard version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            registry,
            reviews,
            violations,
            latency,
            in_flight,
            rejected,
            cache_objects,
            cache_synced,
            cache_watching,
            cache_disconnected_since,
            cache_stale_since,
            api_disconnected_since,
            certificate_reloads,
            certificate_expiry,
            certificate_not_before,
            policy_reloads,
            leader,
            ready,
            namespace_denials,
            live_reads,
            reports,
            cluster: Mutex::new(None),
        }
    }

    /// The live-read counter, for the cluster lookups to record into.
    pub fn live_reads(&self) -> LiveReads {
        self.live_reads.clone()
    }

    /// The in-cluster reports' metrics, for the reporter to record into.
    pub fn reports(&self) -> ReportMetrics {
        self.reports.clone()
    }

    /// Records whether this replica leads now.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records whether this replica is ready, as `/readyz` says at the scrape.
    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Reports these cluster caches at each scrape.
    pub fn watch_cluster(&self, caches: Arc<dyn CacheReport>) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(caches);
    }

    /// Starts timing a review; the guard records its latency and in-flight count when dropped.
    pub fn review_started(self: &Arc<Self>, endpoint: &'static str) -> ReviewTimer {
        self.in_flight.inc();
        ReviewTimer {
            metrics: self.clone(),
            endpoint,
            started: Instant::now(),
        }
    }

    /// Records an answered review and the violations it found, as (rule, action) pairs.
    pub fn review_answered(
        &self,
        review: Reviewed,
        violations: impl IntoIterator<Item = (&'static str, &'static str)>,
    ) {
        self.reviews
            .get_or_create(&ReviewLabels {
                endpoint: review.endpoint,
                kind: kind_label(review.kind),
                operation: review.operation,
                verdict: review.verdict,
            })
            .inc();
        if review.verdict == "denied" {
            self.namespace_denials.denied(review.namespace);
        }
        for (rule, action) in violations {
            self.violations
                .get_or_create(&ViolationLabels { rule, action })
                .inc();
        }
    }

    /// Records a request answered with an HTTP error instead of a review.
    pub fn request_rejected(&self, endpoint: &'static str, status: u16) {
        self.rejected
            .get_or_create(&RejectLabels { endpoint, status })
            .inc();
    }

    pub fn certificate_loaded(&self, not_before: i64, expires_at: i64, reload: bool) {
        self.certificate_not_before.set(not_before);
        self.certificate_expiry.set(expires_at);
        if reload {
            self.certificate_reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
        }
    }

    pub fn certificate_reload_failed(&self) {
        self.certificate_reloads
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
    }

    pub fn policy_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let cluster = self
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (component, since) in cluster.iter().flat_map(|c| c.outages()) {
            self.api_disconnected_since
                .get_or_create(&ComponentLabels { component })
                .set(since.unwrap_or(0));
        }
        for cache in cluster.iter().flat_map(|c| c.caches()) {
            let labels = CacheLabels {
                kind: cache.kind,
                namespace: cache.namespace.unwrap_or_default(),
            };
            self.cache_objects
                .get_or_create(&labels)
                .set(i64::try_from(cache.objects).unwrap_or(i64::MAX));
            self.cache_synced
                .get_or_create(&labels)
                .set(i64::from(cache.synced));
            self.cache_watching
                .get_or_create(&labels)
                .set(i64::from(cache.watching));
            self.cache_disconnected_since
                .get_or_create(&labels)
                .set(cache.disconnected_since.unwrap_or(0));
            self.cache_stale_since
                .get_or_create(&labels)
                .set(cache.stale_since.unwrap_or(0));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The labels of an answered review.
#[derive(Clone, Copy, Debug)]
pub struct Reviewed<'a> {
    pub endpoint: &'static str,
    pub kind: &'a str,
    /// The object's namespace (empty for cluster-scoped objects).
    pub namespace: &'a str,
    pub operation: &'static str,
    pub verdict: &'static str,
}

/// Times one review; dropping it records the latency and ends the in-flight count.
pub struct ReviewTimer {
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    started: Instant,
}

impl Drop for ReviewTimer {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics
            .latency
            .get_or_create(&EndpointLabels {
                endpoint: self.endpoint,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_violations_and_latency_are_exported() {
        let metrics = Arc::new(Metrics::new());
        {
            let _timer = metrics.review_started("validate");
            assert!(metrics.render().contains("stsguard_reviews_in_flight 1"));
            metrics.review_answered(
                Reviewed {
                    endpoint: "validate",
                    kind: "StatefulSet",
                    namespace: "shop",
                    operation: "CREATE",
                    verdict: "denied",
                },
                [("sts-service-name", "deny")],
            );
        }
        metrics.request_rejected("mutate", 413);
        metrics
            .live_reads()
            .record("statefulsets", LiveRead::Corrected);
        let text = metrics.render();
        for line in [
            "stsguard_reviews_total{endpoint=\"validate\",kind=\"StatefulSet\",operation=\"CREATE\",verdict=\"denied\"} 1",
            "stsguard_violations_total{rule=\"sts-service-name\",action=\"deny\"} 1",
            "stsguard_namespace_denials_total{resource_namespace=\"shop\"} 1",
            "stsguard_review_duration_seconds_count{endpoint=\"validate\"} 1",
            "stsguard_reviews_in_flight 0",
            "stsguard_rejected_requests_total{endpoint=\"mutate\",status=\"413\"} 1",
            "stsguard_live_reads_total{kind=\"statefulsets\",result=\"corrected\"} 1",
            "stsguard_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
