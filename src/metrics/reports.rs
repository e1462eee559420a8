//! The in-cluster reports' metrics: violations found by the last full pass, report writes, and
//! when the last full pass ended.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    rule: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    operation: &'static str,
    result: &'static str,
}

/// A handle on the reports' metrics; clones record into the same series.
#[derive(Clone, Debug, Default)]
pub struct ReportMetrics {
    violations: Family<ViolationLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    last_pass: Gauge,
}

impl ReportMetrics {
    pub(super) fn register(registry: &mut Registry) -> ReportMetrics {
        let metrics = ReportMetrics::default();
        registry.register(
            "cluster_violations",
            "Violations in the cluster as the last full pass of the in-cluster reports found \
             them, by rule and the policy's action",
            metrics.violations.clone(),
        );
        registry.register(
            "report_writes",
            "Writes of in-cluster policy reports, by operation (apply, delete) and result \
             (success, failure)",
            metrics.writes.clone(),
        );
        registry.register(
            "report_last_full_pass_timestamp_seconds",
            "When the last full pass of the in-cluster reports ended, as a Unix timestamp",
            metrics.last_pass.clone(),
        );
        metrics
    }

    /// Replaces the violation counts with those of a full pass: (rule, action) → count.
    pub fn full_pass(
        &self,
        counts: impl IntoIterator<Item = ((&'static str, &'static str), usize)>,
        ended_at: i64,
    ) {
        self.violations.clear();
        for ((rule, action), count) in counts {
            self.violations
                .get_or_create(&ViolationLabels { rule, action })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.last_pass.set(ended_at);
    }

    /// Records one write (`apply` or `delete`) of a report.
    pub fn written(&self, operation: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.writes
            .get_or_create(&WriteLabels { operation, result })
            .inc();
    }
}
