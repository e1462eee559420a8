//! The reviewer's unit tests, apart from `review.rs` so that it stays an orchestration you can read.

use super::*;
use crate::{
    lookup::{BoxFuture, Fact, ServiceFacts, StatefulSetFacts, Unconfirmed},
    telemetry::capture::Capture,
};

/// A cluster whose cache has the Service, and whose API server cannot be reached.
struct Unreachable;

impl Lookup for Unreachable {
    fn service(&self, _: &str, _: &str) -> Fact<Arc<ServiceFacts>> {
        Fact::Absent
    }
    fn statefulsets_naming(&self, _: &str, _: &str) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        Fact::Found(vec![])
    }
    fn confirm<'a>(&'a self, namespace: &'a str, need: Need<'a>) -> BoxFuture<'a, Confirmed> {
        Box::pin(async move {
            Confirmed {
                failed: Some(Unconfirmed {
                    kind: "services",
                    namespace: namespace.to_owned(),
                    name: need.name().to_owned(),
                    why: "deadline passed".to_owned(),
                }),
                ..Confirmed::default()
            }
        })
    }
}

#[tokio::test]
async fn a_failed_live_read_is_logged_with_the_reviews_uid() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission/validate-StatefulSet-CREATE-cap-web-1.json"
    ))
    .unwrap();
    let log = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::DEBUG)
        .json()
        .flatten_event(true)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let reviewer = Reviewer::new(Arc::new(Policy::builtin()), Arc::new(Unreachable));

    let answer = reviewer.review(Endpoint::Validate, &body).await.unwrap();

    // The cache's answer stands: the Service is missing.
    assert!(
        answer
            .summary
            .rules
            .contains(&"sts-governing-service-exists"),
        "{:?}",
        answer.summary
    );
    let text = log.text();
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|l: &serde_json::Value| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("could not confirm"))
        })
        .unwrap_or_else(|| panic!("no line for the failed live read: {text}"));
    assert_eq!(line["uid"], "cb5997e7-43b7-4796-b287-e7d934722607");
    assert_eq!(line["name"], "web");
    assert_eq!(line["why"], "deadline passed");
    // Not a WARN per review: during an outage that is every review, and the cluster logs the
    // outage once (`component="live reads of …"`).
    assert_eq!(line["level"], "DEBUG");
}
