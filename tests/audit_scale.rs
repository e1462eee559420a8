//! What lets `stsguard audit` stream its inputs instead of holding every parsed document: the
//! streamed audit reports exactly what the audit of loaded documents reports. (That the compact
//! cross-object facts it keeps answer as the whole objects is checked by the facts equivalence
//! test in `src/rules/governing_service/equivalence.rs`.)

mod support;

use std::path::PathBuf;

use jiff::civil::Date;
use stsguard::{
    audit::{audit, audit_inputs},
    manifest,
    mutate::MUTATORS,
    policy::Policy,
};
use support::properties::{corpus, repo};

fn today() -> Date {
    "2026-06-15".parse().unwrap()
}

/// The built-in policy, and every rule and mutator on.
fn policies() -> Vec<Policy> {
    let mutators: String = MUTATORS
        .iter()
        .map(|m| format!("{}: true, ", m.id))
        .collect();
    let every = Policy::from_yaml(
        &format!(
            "rules: {{sts-pod-management-policy: warn, sts-pod-anti-affinity: deny, \
             svc-publish-not-ready: warn}}\nmutators: {{{mutators}}}"
        ),
        "everything on",
    )
    .unwrap();
    vec![Policy::builtin(), every]
}

fn streamed(inputs: &[PathBuf], policy: &Policy) -> (String, usize) {
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    let read = manifest::read_inputs(inputs, &[], &mut std::io::empty(), &mut errors, &mut notes);
    let (report, documents) = audit_inputs(read, errors, notes, policy, "default", today());
    (format!("{report:#?}"), documents)
}

fn loaded(inputs: &[PathBuf], policy: &Policy) -> (String, usize) {
    let loaded = manifest::load(inputs, &mut std::io::empty());
    let report = audit(&loaded, policy, "default", today());
    (format!("{report:#?}"), loaded.documents.len())
}

/// Every corpus file alone, and the whole corpus at once (cross-object facts across files, the
/// proximity rules, collisions, invalid documents, lists, JSON): the same report, in the same
/// order, and the same count of documents.
#[test]
fn the_streamed_audit_reports_what_the_loaded_audit_reports() {
    let mut inputs: Vec<Vec<PathBuf>> = corpus()
        .iter()
        .map(|(path, _)| vec![PathBuf::from(path)])
        .collect();
    inputs.push(vec![repo("tests/fixtures/corpus")]);
    for policy in policies() {
        for input in &inputs {
            assert_eq!(
                streamed(input, &policy),
                loaded(input, &policy),
                "{input:?}"
            );
        }
    }
}
