//! How long a page of a list may take to be answered. A list the API server computes slowly
//! (a loaded etcd, a cold watch cache) is still a list that would succeed, and cutting it at
//! the same deadline every time would keep the caches from ever syncing: so each list cut by
//! the deadline doubles it for the next one, up to the API server's own request timeout, and
//! a list answered in time sets it back. Other requests keep [`REQUEST_DEADLINE`]: a lease
//! renewal that cannot be answered in time must fail in time.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::REQUEST_DEADLINE;

/// The real API server ends a request after 60 s (`--request-timeout`): waiting longer for a
/// page is waiting for an answer that cannot come.
pub(super) const LONGEST: Duration = Duration::from_secs(60);

/// The deadline of a list after `cut` lists in a row were cut by theirs.
pub(super) fn after_cuts(cut: u32) -> Duration {
    REQUEST_DEADLINE
        .saturating_mul(1u32.checked_shl(cut.min(16)).unwrap_or(u32::MAX))
        .min(LONGEST)
}

/// Whether a request is a page of a list: a GET with a `limit` (every list stsguard makes is
/// paged) and not a watch.
pub(super) fn is_list(method: &http::Method, query: Option<&str>) -> bool {
    let mut params = query.unwrap_or("").split('&');
    method == http::Method::GET
        && params.clone().any(|p| p.starts_with("limit="))
        && !params.any(|p| p == "watch=true" || p == "watch=1")
}

/// Lists cut by their deadline in a row, shared by every list of one client.
#[derive(Debug, Default)]
pub(super) struct ListDeadline {
    cut: AtomicU32,
}

impl ListDeadline {
    pub(super) fn now(&self) -> Duration {
        after_cuts(self.cut.load(Ordering::Relaxed))
    }

    pub(super) fn cut(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn answered(&self) {
        self.cut.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cut_doubles_the_deadline_up_to_the_api_servers_own() {
        let seconds: Vec<u64> = (0..6).map(|c| after_cuts(c).as_secs()).collect();
        assert_eq!(seconds, [10, 20, 40, 60, 60, 60]);
        assert_eq!(after_cuts(u32::MAX), LONGEST);
    }

    #[test]
    fn an_answer_in_time_sets_it_back() {
        let deadline = ListDeadline::default();
        deadline.cut();
        deadline.cut();
        assert_eq!(deadline.now(), Duration::from_secs(40));
        deadline.answered();
        assert_eq!(deadline.now(), REQUEST_DEADLINE);
    }

    #[test]
    fn only_pages_of_lists_are_lists() {
        let get = http::Method::GET;
        assert!(is_list(&get, Some("limit=500")));
        assert!(is_list(&get, Some("labelSelector=a&limit=500&continue=x")));
        assert!(!is_list(&get, Some("limit=500&watch=true")));
        assert!(!is_list(&get, Some("watch=1&limit=500")));
        assert!(!is_list(&get, None));
        assert!(!is_list(&get, Some("resourceVersion=0")));
        assert!(!is_list(&http::Method::PATCH, Some("limit=500")));
    }
}
