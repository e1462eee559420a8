//! Where one review's time goes, stage by stage, for BENCHMARKS.md:
//! `cargo run --release --example review_breakdown`.

use std::{sync::Arc, time::Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};
use stsguard::{
    evaluate::{Input, evaluate},
    lookup::NoLookup,
    policy::Policy,
    review::{Endpoint, Reviewer},
    subject::{Operation, Subject},
    time::today,
};

const RUNS: u32 = 20_000;

fn time(name: &str, f: impl Fn()) {
    let started = Instant::now();
    for _ in 0..RUNS {
        f();
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
    println!("{name:45} {micros:>8.2} µs");
}

fn main() {
    // Another captured review can be named, with or without `.json`:
    // `-- validate-Service-CREATE-cap-cache-1`.
    let fixture = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "validate-StatefulSet-CREATE-cap-web-1".to_owned());
    let fixture = fixture.strip_suffix(".json").unwrap_or(&fixture);
    let path = format!(
        "{}/tests/fixtures/admission/{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = match std::fs::read(&path) {
        Ok(body) => body,
        Err(err) => {
            eprintln!("cannot read {path}: {err}");
            std::process::exit(2);
        }
    };
    let reviewer = Reviewer::new(Arc::new(Policy::builtin()), Arc::new(NoLookup));
    let today = today();

    let mut lean: serde_json::Value = serde_json::from_slice(&body).expect("json");
    if let Some(meta) = lean["request"]["object"]["metadata"].as_object_mut() {
        meta.remove("managedFields");
    }
    let lean = serde_json::to_vec(&lean).expect("json");
    println!(
        "review: {} bytes; without managedFields: {} bytes (compact)",
        body.len(),
        lean.len()
    );

    time("floor: AdmissionReview<DynamicObject> + response", || {
        let review: AdmissionReview<DynamicObject> = serde_json::from_slice(&body).expect("json");
        let request: AdmissionRequest<DynamicObject> = review.try_into().expect("request");
        let response = AdmissionResponse::from(&request).into_review();
        serde_json::to_vec(&response).expect("json");
    });
    time("scan only (serde IgnoredAny)", || {
        let _: serde::de::IgnoredAny = serde_json::from_slice(&body).expect("json");
    });
    let endpoint = if fixture.starts_with("mutate-") {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    };
    time("Reviewer::parse (routing pass, lean objects)", || {
        reviewer.parse(endpoint, &body).expect("parse");
    });
    time("parse + decide + response bytes", || {
        let parsed = reviewer.parse(endpoint, &body).expect("parse");
        reviewer
            .decide(endpoint, parsed, &NoLookup, today)
            .to_json()
            .expect("json");
    });
    if !fixture.contains("-StatefulSet-") {
        return;
    }
    time("typed AdmissionReview<StatefulSet>", || {
        let _: AdmissionReview<StatefulSet> = serde_json::from_slice(&body).expect("typed");
    });
    time("typed, without managedFields", || {
        let _: AdmissionReview<StatefulSet> = serde_json::from_slice(&lean).expect("typed");
    });
    let review: AdmissionReview<StatefulSet> = serde_json::from_slice(&body).expect("typed");
    let sts = review.request.and_then(|r| r.object).expect("object");
    let policy = Policy::builtin();
    time("rules only (evaluate)", || {
        let input = Input {
            subject: Subject::StatefulSet(&sts),
            old: None,
            namespace: "cap",
            operation: Operation::Create,
        };
        evaluate(&input, &NoLookup, &policy, today);
    });
}
