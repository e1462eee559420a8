//! Webhook calls per request class, before and after the mutating webhook's matchCondition
//! `stsguard-mutators-could-act`: the chart's matchConditions (the shared ones read from
//! `charts/stsguard/templates/_helpers.tpl`, the mutators' one from the chart's file) evaluated
//! with the `cel` crate over the manifest corpus, created and updated in the ways a cluster sees.
//! BENCHMARKS.md's table is what
//! `cargo test --test calls_per_request -- --nocapture` prints.

#[allow(dead_code)]
#[path = "backstop_equivalence/cel_env.rs"]
mod cel_env;
mod support;

use cel::Program;
use serde_json::{Value, json};
use stsguard::{
    admit::{Classified, classify},
    manifest::{Loaded, parse_into},
    review::admission_review,
    subject::Operation,
};
use support::properties::{corpus, repo};

/// The chart's matchConditions: those both webhooks carry, and the mutating webhook's own.
fn conditions() -> (Vec<Program>, Program) {
    let env = cel_env::env();
    let helpers = std::fs::read_to_string(repo("charts/stsguard/templates/_helpers.tpl")).unwrap();
    let shared = helpers
        .split("{{- define \"stsguard.webhook.matchConditions\" -}}")
        .nth(1)
        .unwrap()
        .split("{{- end }}")
        .next()
        .unwrap();
    let shared: Value = serde_saphyr::from_str(shared).unwrap();
    let shared = shared["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| cel_env::compile(&env, c["expression"].as_str().unwrap()))
        .collect();
    let own = std::fs::read_to_string(repo("charts/stsguard/files/mutators-match-condition.yaml"))
        .unwrap();
    let own: Value = serde_saphyr::from_str(&own).unwrap();
    let own = cel_env::compile(&env, own[0]["expression"].as_str().unwrap());
    (shared, own)
}

/// Whether a webhook's rules (as `_webhooks.tpl` writes them, `mutateServices` off) match.
fn matched(mutating: bool, review: &Value) -> bool {
    let request = &review["request"];
    let operation = request["operation"].as_str().unwrap();
    match (request["resource"]["resource"].as_str().unwrap(), mutating) {
        ("statefulsets", true) => operation == "CREATE",
        ("statefulsets", false) => operation != "DELETE",
        ("services", true) => false,
        ("services", false) => true,
        _ => false,
    }
}

/// The calls one request costs: (before, after).
fn calls(shared: &[Program], own: &Program, review: &Value) -> (usize, usize) {
    let common = shared.iter().all(|p| cel_env::match_condition(p, review));
    let validate = usize::from(matched(false, review) && common);
    let mutate = matched(true, review) && common;
    (
        validate + usize::from(mutate),
        validate + usize::from(mutate && cel_env::match_condition(own, review)),
    )
}

fn objects() -> Vec<Value> {
    let mut out = Vec::new();
    for (path, text) in corpus() {
        let mut loaded = Loaded::default();
        parse_into(&mut loaded, path, text, path.ends_with(".json"));
        for doc in loaded.documents {
            if matches!(classify(&doc.value), Classified::Object(_)) {
                let mut object = doc.value;
                object["metadata"]["resourceVersion"] = json!("1");
                out.push(object);
            }
        }
    }
    out
}

#[test]
fn calls_per_request_class() {
    let (shared, own) = conditions();
    let objects = objects();
    type Make = fn(&Value) -> Value;
    let classes: [(&str, &str, Make); 6] = [
        ("CREATE", "", |o| {
            admission_review("c", Operation::Create, o, None, "cap")
        }),
        ("UPDATE", "spec changed", |o| {
            let mut new = o.clone();
            new["spec"]["stsguardBenchmark"] = json!(1);
            admission_review("u", Operation::Update, &new, Some(o), "cap")
        }),
        ("UPDATE", "labels only", |o| {
            let mut new = o.clone();
            new["metadata"]["labels"]["team"] = json!("db");
            admission_review("u", Operation::Update, &new, Some(o), "cap")
        }),
        ("UPDATE", "identical re-apply", |o| {
            admission_review("u", Operation::Update, o, Some(o), "cap")
        }),
        ("UPDATE", "stsguard annotation", |o| {
            let mut new = o.clone();
            new["metadata"]["annotations"]["stsguard.io/exempt"] = json!("*");
            admission_review("u", Operation::Update, &new, Some(o), "cap")
        }),
        ("DELETE", "", |o| {
            admission_review("d", Operation::Delete, o, Some(o), "cap")
        }),
    ];
    println!("| kind | request | change | requests | calls before | calls after | per request |");
    println!("|---|---|---|---|---|---|---|");
    let mut total = (0, 0);
    for kind in ["StatefulSet", "Service"] {
        for (operation, change, make) in &classes {
            let reviews: Vec<Value> = objects
                .iter()
                .filter(|o| o["kind"] == kind)
                .map(make)
                .collect();
            let (before, after) = reviews
                .iter()
                .map(|r| calls(&shared, &own, r))
                .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
            total = (total.0 + before, total.1 + after);
            let n = reviews.len();
            assert!(n > 0, "{kind} {operation}");
            assert!(after <= before, "{kind} {operation} {change}");
            println!(
                "| {kind} | {operation} | {change} | {n} | {before} | {after} | {:.2} → {:.2} |",
                before as f64 / n as f64,
                after as f64 / n as f64
            );
        }
    }
    println!("| all | | | | {} | {} | |", total.0, total.1);
    assert!(total.1 < total.0, "the condition spares no call: {total:?}");
}
