//! In-cluster reports: the violations of every StatefulSet and Service in the cluster, kept in
//! one PolicyReport (or OpenReports Report) per namespace by the leader among the replicas.
//!
//! An admission webhook only sees changes; what existed before it, what was admitted while it
//! was down or in audit mode, and what it lets pass on UPDATE stay invisible to it. The reporter
//! judges every object with the admission chain (`findings::judge`) from what the cluster
//! caches' watches deliver, keeps only the findings, and writes the reports of the namespaces
//! whose findings changed, debounced, batched per namespace and rate-limited. A periodic full
//! pass (a paged LIST) heals anything missed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Args;
use tokio::sync::{mpsc, watch};

use crate::{
    cluster::{Change, Cluster},
    metrics::Metrics,
    policy::PolicySlot,
    time,
};

mod document;
mod findings;
mod run;
mod writer;

pub use document::ReportApi;

/// `stsguard serve`'s report options.
#[derive(Clone, Debug, Args)]
pub struct ReportArgs {
    /// Keep one policy report per namespace current with the violations of the StatefulSets and
    /// Services in the cluster (written by the leader only; needs cluster access).
    #[arg(long = "reports", env = "STSGUARD_REPORTS")]
    pub enabled: bool,
    /// The report API to write.
    #[arg(
        long = "reports-api",
        env = "STSGUARD_REPORTS_API",
        value_enum,
        default_value = "policy-report"
    )]
    pub api: ReportApi,
    /// How often every object is judged again (a paged LIST), whatever the watches said.
    #[arg(long = "reports-interval", env = "STSGUARD_REPORTS_INTERVAL", default_value = "10m", value_parser = positive_duration)]
    pub interval: Duration,
    /// How long changes gather before the reports they touch are written (one write per
    /// namespace for all of them).
    #[arg(long = "reports-debounce", env = "STSGUARD_REPORTS_DEBOUNCE", default_value = "2s", value_parser = positive_duration)]
    pub debounce: Duration,
    /// Most report writes (apply or delete) per second, all namespaces together.
    #[arg(long = "reports-write-rate", env = "STSGUARD_REPORTS_WRITE_RATE", default_value = "5", value_parser = positive_rate)]
    pub write_rate: f64,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = time::parse_duration(text)?;
    if duration < Duration::from_millis(10) {
        return Err(format!("{text:?} is too short (10ms at least)"));
    }
    Ok(duration)
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.01 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate of writes per second of 0.01 or more"
        )),
    }
}

/// Changes waiting for the reporter; beyond this the next tick does a full pass instead.
const QUEUE: usize = 4096;

/// The reporter, attached to the cluster's watches, before it starts.
pub struct Reporter {
    args: ReportArgs,
    namespaces: Vec<String>,
    cluster: Arc<Cluster>,
    policy: Option<Arc<PolicySlot>>,
    changes: mpsc::Receiver<Change>,
    /// Set by the hook when a change could not be queued.
    overflow: Arc<AtomicBool>,
    /// Whether the hook queues changes (only while leading).
    listening: Arc<AtomicBool>,
    metrics: crate::metrics::ReportMetrics,
}

impl Reporter {
    /// Follows `cluster`'s watches (`namespaces`: those it watches, empty for all) when
    /// `args.enabled`. Call `with_policy`, then `start`.
    pub fn attach(
        args: &ReportArgs,
        namespaces: &[String],
        cluster: &Arc<Cluster>,
        metrics: &Metrics,
    ) -> Option<Reporter> {
        if !args.enabled {
            return None;
        }
        let (tx, changes) = mpsc::channel(QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let listening = Arc::new(AtomicBool::new(false));
        let (full, on) = (overflow.clone(), listening.clone());
        let hook = Arc::new(move |change: Change| {
            if on.load(Ordering::Relaxed) && tx.try_send(change).is_err() {
                full.store(true, Ordering::Relaxed);
            }
        });
        if cluster.on_change(hook).is_err() {
            tracing::error!("the cluster's changes already go elsewhere; no in-cluster reports");
            return None;
        }
        Some(Reporter {
            args: args.clone(),
            namespaces: namespaces.to_vec(),
            cluster: cluster.clone(),
            policy: None,
            changes,
            overflow,
            listening,
            metrics: metrics.reports(),
        })
    }

    /// The policy the reports judge by (the webhook's, reloaded with it).
    #[must_use]
    pub fn with_policy(mut self, policy: Arc<PolicySlot>) -> Reporter {
        self.policy = Some(policy);
        self
    }

    /// Runs for the life of the process: writes reports while `leading` says this replica
    /// leads, and stops writing at once when it no longer does.
    pub fn start(self, leading: watch::Receiver<bool>) {
        tracing::info!(
            api = %format!("{}/{}", self.args.api.group(), self.args.api.version()),
            kind = self.args.api.kind(),
            interval = ?self.args.interval,
            "in-cluster reports on: the leader writes them"
        );
        tokio::spawn(run::run(self, leading));
    }
}
