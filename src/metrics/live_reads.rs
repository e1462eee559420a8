//! `stsguard_live_reads_total`: the live reads of the API server that confirm what a cache says,
//! by what they found.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LiveReadLabels {
    kind: &'static str,
    result: &'static str,
}

/// What a live read of the API server found, for `stsguard_live_reads_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveRead {
    /// The API server said what the cache said.
    Agreed,
    /// The cache lagged: the API server's answer replaced it.
    Corrected,
    /// The read failed or missed its deadline; the cache's answer stood.
    Failed,
}

impl LiveRead {
    fn as_str(self) -> &'static str {
        match self {
            LiveRead::Agreed => "agreed",
            LiveRead::Corrected => "corrected",
            LiveRead::Failed => "failed",
        }
    }
}

/// The counter of live API reads (`stsguard_live_reads_total`), handed to the cluster lookups.
/// One made with `default()` counts into nothing registered.
#[derive(Clone, Debug, Default)]
pub struct LiveReads(pub(super) Family<LiveReadLabels, Counter>);

impl LiveReads {
    /// Records one live read of `kind` (`services` for a GET, `statefulsets` for a LIST).
    pub fn record(&self, kind: &'static str, result: LiveRead) {
        self.0
            .get_or_create(&LiveReadLabels {
                kind,
                result: result.as_str(),
            })
            .inc();
    }
}
