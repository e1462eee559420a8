//! One review from bytes to response bytes, as the webhook does it without the network:
//! parse, decide (rules or mutators, no cluster facts), serialize. `cargo bench --bench review`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use stsguard::{
    lookup::NoLookup,
    policy::Policy,
    review::{Endpoint, Reviewer},
    time::today,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/admission/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).expect("fixture")
}

/// The captured `web` review grown to 20 containers, 40 volumes and 100 KB of annotations.
fn large_review() -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&fixture("validate-StatefulSet-CREATE-cap-web-1")).unwrap();
    let object = &mut review["request"]["object"];
    let template = object["spec"]["template"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..20)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = json!(format!("c{i}"));
            c["env"] = json!(
                (0..20)
                    .map(|e| json!({"name": format!("VAR_{e}"), "value": "x".repeat(40)}))
                    .collect::<Vec<_>>()
            );
            c["volumeMounts"] = json!(
                (0..40)
                    .map(|v| json!({"name": format!("v{v}"), "mountPath": format!("/v/{v}")}))
                    .collect::<Vec<_>>()
            );
            c
        })
        .collect();
    object["spec"]["template"]["spec"]["containers"] = json!(containers);
    object["spec"]["template"]["spec"]["volumes"] = json!(
        (0..40)
            .map(|v| json!({"name": format!("v{v}"), "configMap": {"name": format!("cm-{v}")}}))
            .collect::<Vec<_>>()
    );
    for i in 0..50 {
        object["metadata"]["annotations"][format!("example.com/note-{i}")] =
            json!("n".repeat(2_000));
    }
    serde_json::to_vec(&review).unwrap()
}

fn bench(c: &mut Criterion) {
    let reviewer = Reviewer::new(Arc::new(Policy::builtin()), Arc::new(NoLookup));
    let today = today();
    let cases = [
        (
            "typical StatefulSet (validate)",
            Endpoint::Validate,
            fixture("validate-StatefulSet-CREATE-cap-web-1"),
        ),
        (
            "large StatefulSet (validate)",
            Endpoint::Validate,
            large_review(),
        ),
        (
            "Service (validate)",
            Endpoint::Validate,
            fixture("validate-Service-CREATE-cap-web-1"),
        ),
        (
            "StatefulSet mutation (mutate, patch)",
            Endpoint::Mutate,
            fixture("mutate-StatefulSet-CREATE-cap-db-1"),
        ),
    ];
    let mut group = c.benchmark_group("review");
    for (name, endpoint, body) in &cases {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let parsed = reviewer.parse(*endpoint, body).unwrap();
                let answer = reviewer.decide(*endpoint, parsed, &NoLookup, today);
                answer.to_json().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
