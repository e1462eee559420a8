//! What a watch does after each kind of failure, as client-go's reflector does: a `410 Gone`
//! (the resourceVersion it would resume from is compacted, or from before a restore) is no
//! outage but a reason to list again at once; `429 Too Many Requests` waits as long as the API
//! server asks; anything else (no connection, a timeout, a 5xx) backs off, and a connection
//! failure's back-off ends when the API server answers again (`reachable`).

use std::time::Duration;

use kube::{core::Status, runtime::watcher};

/// How one watch failure is handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Events were missed: list again now.
    Expired,
    /// The API server sheds load: try again after this long.
    Throttled(Duration),
    /// The API server cannot be reached (no connection, no answer in time, a cut stream):
    /// back off until it answers again.
    Unreachable,
    /// The API server answered with an error (a 5xx, a 403): back off.
    Failing,
}

/// A 429 without a Retry-After: the API server's own default (`--min-request-timeout` aside,
/// it sends 1 s).
const THROTTLED_DEFAULT: Duration = Duration::from_secs(1);
/// A Retry-After is honoured up to this: a replica that waits longer serves staler facts.
const THROTTLED_MAX: Duration = Duration::from_secs(30);

pub(super) fn classify(error: &watcher::Error) -> Fault {
    let status = match error {
        watcher::Error::WatchError(status) => Some(status.as_ref()),
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.as_ref()),
            _ => None,
        },
        watcher::Error::NoResourceVersion => None,
    };
    match status {
        Some(status) if status.code == 410 => Fault::Expired,
        Some(status) if status.code == 429 => Fault::Throttled(retry_after(status)),
        Some(_) => Fault::Failing,
        None => Fault::Unreachable,
    }
}

fn retry_after(status: &Status) -> Duration {
    status
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map_or(THROTTLED_DEFAULT, |s| Duration::from_secs(u64::from(s)))
        .min(THROTTLED_MAX)
}

/// The error and every cause under it on one line: kube's own message for a refused
/// connection ("client error (Connect)") says nothing without its causes.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Status as the API server sends it.
    fn status(code: u16, retry: Option<u32>) -> Box<Status> {
        let mut status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "message": "m", "reason": "r", "code": code});
        if let Some(seconds) = retry {
            status["details"] = serde_json::json!({"retryAfterSeconds": seconds});
        }
        Box::new(serde_json::from_value(status).unwrap())
    }

    #[test]
    fn gone_in_any_form_lists_again_at_once() {
        let event = watcher::Error::WatchError(status(410, None));
        let start = watcher::Error::WatchStartFailed(kube::Error::Api(status(410, None)));
        let list = watcher::Error::InitialListFailed(kube::Error::Api(status(410, None)));
        for e in [event, start, list] {
            assert_eq!(classify(&e), Fault::Expired, "{e}");
        }
    }

    #[test]
    fn too_many_requests_waits_as_asked_within_a_bound() {
        let asked = watcher::Error::InitialListFailed(kube::Error::Api(status(429, Some(3))));
        assert_eq!(classify(&asked), Fault::Throttled(Duration::from_secs(3)));
        let silent = watcher::Error::InitialListFailed(kube::Error::Api(status(429, None)));
        assert_eq!(classify(&silent), Fault::Throttled(THROTTLED_DEFAULT));
        let greedy = watcher::Error::WatchStartFailed(kube::Error::Api(status(429, Some(600))));
        assert_eq!(classify(&greedy), Fault::Throttled(THROTTLED_MAX));
    }

    #[test]
    fn other_failures_back_off() {
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(status(403, None)));
        assert_eq!(classify(&forbidden), Fault::Failing);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let refused = watcher::Error::WatchStartFailed(kube::Error::Service(Box::new(io)));
        assert_eq!(classify(&refused), Fault::Unreachable);
        assert_eq!(
            classify(&watcher::Error::NoResourceVersion),
            Fault::Unreachable
        );
    }

    #[test]
    fn a_description_carries_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = watcher::Error::InitialListFailed(kube::Error::Service(Box::new(io)));
        let text = describe(&e);
        assert!(text.contains("connection refused"), "{text}");
        assert!(
            text.starts_with("failed to perform initial object list"),
            "{text}"
        );
    }
}
