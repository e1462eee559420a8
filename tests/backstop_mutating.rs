//! The MutatingAdmissionPolicy changes what the mutators change: its JSONPatch expression,
//! evaluated by the `cel` crate with the webhook gone, turns each StatefulSet CREATE into the same
//! object as the admission chain's mutation, over the corpus, the captured reviews, edge cases
//! and generated StatefulSets, for the shipped policies and custom ones; applied again to its
//! own result it gives nothing (the API server may reinvoke it). With the webhook ready it gives
//! nothing at all.
//!
//! The objects are what the API server would hold (typed, defaulted by `admit::default`,
//! serialized back), as in `backstop_equivalence.rs`, and the policy is read back from the YAML
//! `policy export --format map` prints.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use generated::pick;
use jiff::civil::Date;
use map::{Map, patched};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use serde_json::Value;
use stsguard::{
    admit::{self, Chain},
    lookup::NoLookup,
    manifest,
    policy::Policy,
    subject::{Operation, Subject},
};

#[allow(dead_code)]
#[path = "backstop_equivalence/cel_env.rs"]
mod cel_env;
#[path = "backstop_equivalence/generated.rs"]
mod generated;
#[path = "backstop_mutating/map.rs"]
mod map;
#[path = "backstop_mutating/objects.rs"]
mod objects;

/// Long before any `exempt-until` date used here: the policy has no clock and honours every
/// exemption annotation whatever its date.
fn today() -> Date {
    "2000-01-01".parse().unwrap()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The namespaces the custom policies exempt; every object is also admitted in each.
const EXEMPT_NAMESPACES: [&str; 2] = ["legacy", "other"];

/// The shipped policies, the built-in one, and two custom ones: each disables one mutator,
/// injects other defaults and exempts a namespace from the other mutator (and one exempts a
/// namespace from `*`, which leaves the mutators on).
fn policies() -> Vec<(String, Policy)> {
    let mut out: Vec<(String, Policy)> = ["default", "strict", "audit"]
        .iter()
        .map(|name| {
            let path = repo(&format!("policies/{name}.yaml"));
            (name.to_string(), Policy::load(&path).unwrap())
        })
        .collect();
    out.push(("built-in".into(), Policy::builtin()));
    let custom = [
        (
            "custom-inject",
            "mutators: {sts-complete-volume-claim-templates: false}\n\
             defaults: {volumeClaimTemplate: {accessModes: [ReadWriteMany, ReadOnlyMany], \
             storage: 20Gi, storageClassName: fast-ssd, volumeMode: Filesystem}}\n\
             exemptions:\n\
             - {namespaces: [legacy], rules: [sts-inject-volume-claim-templates], reason: byo}\n\
             - {namespaces: [other], rules: ['*'], reason: old}",
        ),
        (
            "custom-complete",
            "mutators: {sts-inject-volume-claim-templates: false}\n\
             defaults: {volumeClaimTemplate: {accessModes: [ReadWriteOncePod], storage: 512Mi, \
             volumeMode: Block}}\n\
             exemptions:\n\
             - {namespaces: [other, legacy], rules: [sts-complete-volume-claim-templates, \
             sts-service-name], reason: byo}",
        ),
    ];
    for (name, yaml) in custom {
        out.push((name.into(), Policy::from_yaml(yaml, name).unwrap()));
    }
    out
}

#[derive(Default)]
struct Tally {
    compared: usize,
    /// Requests the mutators changed, in all and per mutator.
    changed: usize,
    applied: BTreeMap<&'static str, usize>,
}

/// The webhook gone: no ready endpoint in the webhook's Service.
fn gone() -> Value {
    cel_env::slice(Some(false))
}

/// Compares one CREATE under one policy: the mutators' result and the policy's, and the
/// policy's second pass.
fn compare(
    policy: &(String, Policy),
    map: Option<&Map>,
    what: &str,
    value: &Value,
    namespace: &str,
    tally: &mut Tally,
) -> Result<(), String> {
    let Some((sts, object)) = cel_env::stored(value) else {
        return Ok(());
    };
    let chain = Chain {
        policy: &policy.1,
        lookup: &NoLookup,
        today: today(),
    };
    let mutation = chain.mutate(&admit::Request {
        operation: Operation::Create,
        namespace,
        object: Subject::StatefulSet(&sts),
        old: None,
    });
    let mut expected = object.clone();
    json_patch::patch(&mut expected, &mutation.patch).unwrap();
    tally.compared += 1;
    if !mutation.is_empty() {
        tally.changed += 1;
    }
    for id in &mutation.applied {
        *tally.applied.entry(id).or_default() += 1;
    }
    let context = || format!("{what} in {namespace} under policy {}", policy.0);
    let got = match map {
        Some(map) => {
            let ops = map.ops(namespace, &object, &gone());
            let got = patched(&object, ops).map_err(|e| format!("{}: {e}", context()))?;
            let again = map.ops(namespace, &got, &gone());
            if !again.is_empty() {
                return Err(format!(
                    "{}: a second pass gives {again:?}\nobject: {got}",
                    context()
                ));
            }
            got
        }
        None => object.clone(),
    };
    if got == expected {
        return Ok(());
    }
    Err(format!(
        "{}: the policy gives\n{got}\nthe mutators ({:?})\n{expected}\nfrom {object}",
        context(),
        mutation.applied
    ))
}

/// Every object of the fixed set, with where it comes from and its own namespace.
fn fixed_objects() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let loaded = manifest::load(&[repo("tests/fixtures/corpus")], &mut std::io::empty());
    for doc in &loaded.documents {
        for item in manifest::items(&doc.value) {
            if item["kind"] == "StatefulSet" {
                let ns = item["metadata"]["namespace"].as_str().unwrap_or("default");
                let what = format!("{}:{}", doc.source.file, doc.source.line);
                out.push((what, ns.to_owned(), item.clone()));
            }
        }
    }
    let corpus = out.len();
    assert!(corpus >= 40, "the corpus has {corpus} StatefulSets");
    for entry in std::fs::read_dir(repo("tests/fixtures/admission")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let request = &review["request"];
        if request["kind"]["kind"] == "StatefulSet"
            && request["subResource"].is_null()
            && request["operation"] == "CREATE"
        {
            let what = path.file_name().unwrap().to_string_lossy().into_owned();
            let ns = request["namespace"].as_str().unwrap().to_owned();
            out.push((what, ns, request["object"].clone()));
        }
    }
    assert!(out.len() >= corpus + 4, "captured CREATE reviews missing");
    for (what, value) in objects::edge_cases() {
        out.push((what, "ns".to_owned(), value));
    }
    out
}

fn namespaces(own: &str) -> impl Iterator<Item = &str> {
    std::iter::once(own).chain(EXEMPT_NAMESPACES)
}

#[test]
fn the_policy_gives_the_mutators_result() {
    let objects = fixed_objects();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for policy in policies() {
        let map = Map::of(&policy.1, str::to_owned);
        assert!(map.is_some(), "{} enables a mutator", policy.0);
        for (what, ns, value) in &objects {
            for ns in namespaces(ns) {
                if let Err(e) = compare(&policy, map.as_ref(), what, value, ns, &mut tally) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{} objects, {} requests compared, {} changed by the mutators: {:?}",
        objects.len(),
        tally.compared,
        tally.changed,
        tally.applied
    );
    assert!(tally.changed >= 500, "{} changed", tally.changed);
    for id in [
        "sts-inject-volume-claim-templates",
        "sts-complete-volume-claim-templates",
    ] {
        assert!(tally.applied.get(id).is_some_and(|n| *n >= 100), "{id}");
    }
}

/// A policy whose mutators are all off, or have no CEL form, generates no
/// MutatingAdmissionPolicy, and the webhook changes nothing then either.
#[test]
fn no_enabled_mutator_no_policy() {
    let off = Policy::from_yaml(
        "mutators: {sts-inject-volume-claim-templates: false, \
         sts-complete-volume-claim-templates: false, svc-make-headless: true}",
        "off",
    )
    .unwrap();
    assert!(Map::of(&off, str::to_owned).is_none());
    let policy = ("off".to_owned(), off);
    let mut tally = Tally::default();
    for (what, ns, value) in fixed_objects() {
        compare(&policy, None, &what, &value, &ns, &mut tally).unwrap();
    }
    assert_eq!(tally.changed, 0);
    assert!(tally.compared > 0);
}

/// A policy by name, with its MutatingAdmissionPolicy compiled.
type Compiled = ((String, Policy), Option<Map>);

fn compiled_policies() -> &'static [Compiled] {
    static COMPILED: std::sync::OnceLock<Vec<Compiled>> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        policies()
            .into_iter()
            .map(|p| {
                let map = Map::of(&p.1, str::to_owned);
                (p, map)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(Config { cases: 300, failure_persistence: None, ..Config::default() })]

    #[test]
    fn generated_statefulsets_get_the_mutators_result(
        sts in objects::generated(),
        namespace in pick(vec!["ns", "legacy", "other"]),
    ) {
        for (policy, map) in compiled_policies() {
            compare(policy, map.as_ref(), "generated", &sts, namespace, &mut Tally::default())
                .map_err(TestCaseError::fail)?;
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 200, failure_persistence: None, ..Config::default() })]

    /// An `exempt-until` that is not a date voids the exemption, in the policy as in the
    /// webhook. Years from 2000: an earlier date has passed for the webhook, which the policy
    /// cannot tell (no clock).
    #[test]
    fn exempt_until_is_read_as_the_webhook_reads_it(until in prop_oneof![
        "[ \u{a0}\u{3000}]?[2-9][0-9]{3}-[01][0-9]-[0-3][0-9][ \t]?",
        "[2-9][0-9]{2}[02468]-02-29",
        "[2-9][0-9]{3}[01][0-9][0-3][0-9]",
        pick(vec![
            "", " ", "next year", "2026-02-30", "2100-02-29", "2000-02-29", "2400-02-29",
            "2099-13-01", "2099-00-10", "2099-12-00", "2099-1-01", "2099-12-31x",
            "\u{ff12}\u{ff10}\u{ff19}\u{ff19}-12-31", "2099-12-31\u{3000}", "20991231", "20000229", "21000229",
            "20991301", "2099-1231", "209912-31",
        ]).prop_map(str::to_owned),
    ]) {
        let (policy, map) = &compiled_policies()[3];
        prop_assert_eq!(&policy.0, "built-in");
        let sts = objects::exempt_until(&until);
        compare(policy, map.as_ref(), &until, &sts, "ns", &mut Tally::default())
            .map_err(TestCaseError::fail)?;
    }
}

/// A fixed sample of generated StatefulSets, the same on every run.
fn sample(n: usize) -> Vec<Value> {
    let mut runner = TestRunner::deterministic();
    let strategy = objects::generated();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// Every object the two tests below look at: the fixed set and a generated sample.
fn all_objects() -> Vec<(String, String, Value)> {
    let mut out = fixed_objects();
    out.extend(
        sample(100)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("sample {i}"), "ns".to_owned(), v)),
    );
    out
}

/// One voice: while an endpoint of the webhook's Service is ready (or its readiness unknown),
/// the policy changes nothing and the webhook's mutation is the only one.
#[test]
fn the_policy_mutates_nothing_while_the_webhook_is_ready() {
    let mut unknown = cel_env::slice(Some(true));
    unknown["endpoints"][0]
        .as_object_mut()
        .unwrap()
        .remove("conditions");
    let objects = all_objects();
    let (mut silent, mut spoke_when_gone) = (0, 0);
    for (name, policy) in policies() {
        let map = Map::of(&policy, str::to_owned).unwrap();
        for (what, ns, value) in &objects {
            let Some((_, object)) = cel_env::stored(value) else {
                continue;
            };
            for params in [cel_env::slice(Some(true)), unknown.clone()] {
                let ops = map.ops(ns, &object, &params);
                assert!(ops.is_empty(), "{what} in {ns} under {name}: {ops:?}");
                silent += 1;
            }
            spoke_when_gone += usize::from(!map.ops(ns, &object, &gone()).is_empty());
        }
    }
    eprintln!("{silent} silent evaluations; {spoke_when_gone} requests mutated when gone");
    assert!(spoke_when_gone >= 300, "{spoke_when_gone}");
}

/// The comparison can fail: a policy whose expressions are changed in a small way (another
/// default, a dropped `distinct()` or `trim()`, the record's order) is caught on some object.
#[test]
fn a_changed_policy_is_caught() {
    let objects = all_objects();
    let builtin = ("built-in".to_owned(), Policy::builtin());
    let edits: [(&str, &str, &str); 4] = [
        ("another storage", "'1Gi'", "'2Gi'"),
        ("no distinct()", ".distinct()", ""),
        ("no trim()", ".map(s, s.trim())", ""),
        (
            "applied ids first",
            "(variables.recorded + variables.applied.filter(id, !(id in variables.recorded)))",
            "(variables.applied + variables.recorded.filter(id, !(id in variables.applied)))",
        ),
    ];
    for (name, from, to) in edits {
        let found = std::cell::Cell::new(false);
        let edited = Map::of(&builtin.1, |text: &str| {
            found.set(found.get() || text.contains(from));
            text.replace(from, to)
        })
        .unwrap();
        assert!(found.get(), "{name}: the policy has no {from}");
        let caught = objects.iter().any(|(what, ns, value)| {
            compare(
                &builtin,
                Some(&edited),
                what,
                value,
                ns,
                &mut Tally::default(),
            )
            .is_err()
        });
        assert!(caught, "{name}: no object tells the changed policy apart");
    }
}

/// The one knowing difference: the policy has no clock, so an exemption whose date has passed
/// still keeps its mutators off, where the webhook runs them again.
#[test]
fn the_policy_honours_an_exemption_whose_date_has_passed() {
    let policy = Policy::builtin();
    let map = Map::of(&policy, str::to_owned).unwrap();
    let (sts, object) = cel_env::stored(&objects::exempt_until("2001-01-01")).unwrap();
    let chain = Chain {
        policy: &policy,
        lookup: &NoLookup,
        today: "2026-06-15".parse().unwrap(),
    };
    let mutation = chain.mutate(&admit::Request {
        operation: Operation::Create,
        namespace: "ns",
        object: Subject::StatefulSet(&sts),
        old: None,
    });
    assert_eq!(
        mutation.applied,
        [
            "sts-inject-volume-claim-templates",
            "sts-complete-volume-claim-templates"
        ]
    );
    assert_eq!(map.ops("ns", &object, &gone()), Vec::<Value>::new());
}
