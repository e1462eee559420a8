//! Running a check on an interval for the life of the process (file reloads poll this way).

use std::time::Duration;

/// Calls `check` every `interval`, first after one interval; a slow check delays the next one
/// rather than causing a burst.
pub async fn every(interval: Duration, mut check: impl FnMut()) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        check();
    }
}
