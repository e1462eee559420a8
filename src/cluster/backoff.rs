//! How long to wait before trying the API server again while it cannot be reached: 0.8 s,
//! doubling to 30 s, each wait stretched by up to half again at random so that replicas (and
//! their watches) that lost the API server together do not all come back in the same instant.
//! Reset once a list succeeds (client-go's reflector: `wait.Backoff{Duration: 800ms, Factor: 2,
//! Jitter: 1.0, Cap: 30s}`, reset after a working list and watch).

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

const FIRST: Duration = Duration::from_millis(800);
const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Waits since the last reset.
    tries: u32,
}

impl Backoff {
    /// The next wait: grows with each call until [`Backoff::reset`].
    pub(crate) fn next_wait(&mut self) -> Duration {
        let base = FIRST
            .saturating_mul(2u32.saturating_pow(self.tries))
            .min(MAX);
        self.tries = self.tries.saturating_add(1);
        base.mul_f64(1.0 + jitter() / 2.0).min(MAX)
    }

    pub(crate) fn reset(&mut self) {
        self.tries = 0;
    }
}

/// A number in [0, 1): fresh hasher keys are random per process and per call, which is all the
/// randomness spreading retries needs.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_0_8s_to_30s_with_jitter_and_start_over_after_a_reset() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next_wait()).collect();
        for (i, wait) in waits.iter().enumerate() {
            let base = FIRST.saturating_mul(1 << i).min(MAX);
            assert!(
                *wait >= base && *wait <= base.mul_f64(1.5).min(MAX),
                "wait {i}: {wait:?}"
            );
        }
        assert_eq!(waits[7], MAX);
        backoff.reset();
        assert!(backoff.next_wait() < Duration::from_millis(1200));
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let firsts: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| Backoff::default().next_wait()).collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }
}
