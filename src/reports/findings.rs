//! What the in-cluster reports keep: per object with violations, its findings as the admission
//! chain gives them (small: rule, action, result, message), never the object itself; and which
//! namespaces' reports no longer say what the findings say.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{Timestamp, civil::Date};

use crate::{
    admit::{self, Chain, Request},
    evaluate::Outcome,
    lookup::{Lookup, NoLookup},
    policy::{Lookups, Policy},
    report::{outcome_word, result_of},
    subject::{self, Object, Operation},
};

/// An object, namespace first so that a namespace's objects sit together.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    /// `Service` or `StatefulSet`.
    pub kind: &'static str,
    pub name: String,
}

impl Key {
    pub fn of(object: &Object) -> Key {
        let subject = object.subject();
        Key {
            namespace: subject::namespace(subject.metadata(), "default").to_owned(),
            kind: subject.target().kind(),
            name: subject.display_name().to_owned(),
        }
    }
}

/// One violation, as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub rule: &'static str,
    /// The policy's action for it: `deny` or `warn`.
    pub action: &'static str,
    /// `fail`, `warn` or `skip` (see `report::result_of`).
    pub result: &'static str,
    pub severity: &'static str,
    /// What the webhook did or would do with it: denied, warned, audited, exempted.
    pub outcome: &'static str,
    pub path: String,
    pub message: String,
    pub fix: String,
    pub exemption: Option<String>,
}

/// An object's findings.
#[derive(Clone, Debug)]
pub struct Judged {
    pub key: Key,
    pub uid: Option<String>,
    pub found: Vec<Found>,
}

/// Judges a stored object with the admission chain, as a CREATE of the object as it is stored:
/// defaulted as the API server defaults it, no mutation (the report is about what is stored,
/// which no mutator changes any more), no UPDATE grandfathering (what an UPDATE would let pass
/// is still a violation to fix).
pub fn judge(policy: &Policy, lookup: &dyn Lookup, object: Object, today: Date) -> Judged {
    let object = admit::default(object);
    let key = Key::of(&object);
    let subject = object.subject();
    let lookup: &dyn Lookup = match policy.lookups {
        Lookups::Auto => lookup,
        Lookups::Off => &NoLookup,
    };
    let verdict = Chain {
        policy,
        lookup,
        today,
    }
    .validate(&Request {
        operation: Operation::Create,
        namespace: &key.namespace,
        object: subject,
        old: None,
    });
    let found = verdict
        .violations
        .iter()
        .map(|v| {
            let (result, severity) = result_of(&v.outcome);
            Found {
                rule: v.rule.id,
                action: v.action.as_str(),
                result,
                severity,
                outcome: outcome_word(&v.outcome),
                path: v.finding.path.clone(),
                message: v.finding.message.clone(),
                fix: v.fix().to_owned(),
                exemption: match &v.outcome {
                    Outcome::Exempted { reason } => Some(reason.clone()),
                    _ => None,
                },
            }
        })
        .collect();
    Judged {
        uid: subject.metadata().uid.clone(),
        key,
        found,
    }
}

/// An object's findings as kept: since when they have been what they are, and the last pass
/// (or later change) that saw them.
#[derive(Clone, Debug)]
pub struct Entry {
    pub uid: Option<String>,
    pub found: Vec<Found>,
    pub since: Timestamp,
    seen: u64,
}

/// The findings of every object with violations, and the namespaces whose reports are stale.
#[derive(Debug, Default)]
pub struct Findings {
    entries: BTreeMap<Key, Entry>,
    /// Advanced by each full pass; entries carry the value at their last update.
    clock: u64,
    dirty: BTreeSet<String>,
}

impl Findings {
    /// Records an object's findings; its namespace's report is stale when they changed.
    pub fn set(&mut self, judged: Judged) {
        let Judged { key, uid, found } = judged;
        if found.is_empty() {
            self.remove(&key);
            return;
        }
        let seen = self.clock;
        match self.entries.get_mut(&key) {
            Some(entry) if entry.found == found && entry.uid == uid => entry.seen = seen,
            _ => {
                self.dirty.insert(key.namespace.clone());
                let since = Timestamp::now();
                self.entries.insert(
                    key,
                    Entry {
                        uid,
                        found,
                        since,
                        seen,
                    },
                );
            }
        }
    }

    /// Forgets an object (deleted, or without violations now).
    pub fn remove(&mut self, key: &Key) {
        if self.entries.remove(key).is_some() {
            self.dirty.insert(key.namespace.clone());
        }
    }

    /// Starts a full pass: what it does not see again is gone when it ends.
    pub fn begin_pass(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Ends a full pass: objects neither seen by it nor changed since it began are gone.
    pub fn end_pass(&mut self, pass: u64) {
        let dirty = &mut self.dirty;
        self.entries.retain(|key, entry| {
            let keep = entry.seen >= pass;
            if !keep {
                dirty.insert(key.namespace.clone());
            }
            keep
        });
    }

    /// Marks a namespace's report stale (one that exists but may be wrong).
    pub fn touch(&mut self, namespace: &str) {
        self.dirty.insert(namespace.to_owned());
    }

    /// The namespaces whose reports are stale; they are clean afterwards.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// A namespace's objects with findings, in kind and name order.
    pub fn namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Entry)> {
        let start = Key {
            namespace: namespace.to_owned(),
            kind: "",
            name: String::new(),
        };
        self.entries
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
    }

    /// Violations by (rule, action), skipped (exempted) ones not counted.
    pub fn counts(&self) -> HashMap<(&'static str, &'static str), usize> {
        let mut counts = HashMap::new();
        for found in self.entries.values().flat_map(|e| &e.found) {
            if found.result != "skip" {
                *counts.entry((found.rule, found.action)).or_default() += 1;
            }
        }
        counts
    }

    /// Forgets everything (a replica that stops leading keeps nothing).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::{
        lookup::InMemory,
        policy::Mode,
        rules::testing::{sts, svc},
    };

    fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    /// The StatefulSet `ns/web` judged with a ClusterIP Service `web` in the lookup.
    fn judge_web(policy: &Policy, object: k8s_openapi::api::apps::v1::StatefulSet) -> Judged {
        let service = svc().set("/spec/clusterIP", json!("10.0.0.1")).build();
        let lookup = InMemory::new().with_service("ns", service);
        judge(
            policy,
            &lookup,
            Object::StatefulSet(Arc::new(object)),
            today(),
        )
    }

    fn results(judged: &Judged) -> Vec<(&str, &str, &str, &str)> {
        judged
            .found
            .iter()
            .map(|f| (f.rule, f.action, f.result, f.outcome))
            .collect()
    }

    #[test]
    fn judged_with_the_cluster_facts_as_the_webhook_judges_a_creation() {
        let judged = judge_web(&Policy::builtin(), sts().build());
        assert_eq!(
            judged.key,
            Key {
                namespace: "ns".into(),
                kind: "StatefulSet",
                name: "web".into()
            }
        );
        assert_eq!(
            results(&judged),
            [("sts-governing-service-headless", "deny", "fail", "denied")]
        );
    }

    #[test]
    fn audit_mode_still_fails_and_an_exemption_is_skipped() {
        let audit = Policy::builtin().with_mode(Mode::Audit);
        assert_eq!(
            results(&judge_web(&audit, sts().build())),
            [("sts-governing-service-headless", "deny", "fail", "audited")]
        );
        let exempt = sts()
            .set(
                "/metadata/annotations",
                json!({"stsguard.io/exempt": "sts-governing-service-headless",
                       "stsguard.io/exempt-reason": "migrating"}),
            )
            .build();
        let judged = judge_web(&Policy::builtin(), exempt);
        assert_eq!(
            results(&judged),
            [("sts-governing-service-headless", "deny", "skip", "exempted")]
        );
        assert!(
            judged.found[0]
                .exemption
                .as_deref()
                .unwrap()
                .contains("migrating")
        );
    }

    fn judged(ns: &str, name: &str, rules: &[&'static str]) -> Judged {
        Judged {
            key: Key {
                namespace: ns.into(),
                kind: "StatefulSet",
                name: name.into(),
            },
            uid: None,
            found: rules
                .iter()
                .map(|rule| Found {
                    rule,
                    action: "deny",
                    result: "fail",
                    severity: "high",
                    outcome: "denied",
                    path: "spec".into(),
                    message: "m".into(),
                    fix: "f".into(),
                    exemption: None,
                })
                .collect(),
        }
    }

    #[test]
    fn only_changes_make_a_namespace_stale() {
        let mut findings = Findings::default();
        findings.set(judged("a", "x", &["r1"]));
        assert_eq!(findings.take_dirty(), BTreeSet::from(["a".to_owned()]));
        findings.set(judged("a", "x", &["r1"]));
        assert!(findings.take_dirty().is_empty());
        findings.set(judged("a", "x", &[]));
        assert_eq!(findings.take_dirty(), BTreeSet::from(["a".to_owned()]));
        assert_eq!(findings.namespace("a").count(), 0);
    }

    #[test]
    fn a_pass_forgets_what_it_did_not_see_but_keeps_what_changed_during_it() {
        let mut findings = Findings::default();
        findings.set(judged("a", "gone", &["r1"]));
        findings.set(judged("b", "stays", &["r1"]));
        findings.take_dirty();
        let pass = findings.begin_pass();
        findings.set(judged("b", "stays", &["r1"]));
        findings.set(judged("c", "new-during-pass", &["r2"]));
        findings.end_pass(pass);
        let names: Vec<_> = ["a", "b", "c"]
            .iter()
            .flat_map(|ns| findings.namespace(ns).map(|(k, _)| k.name.clone()))
            .collect();
        assert_eq!(names, ["stays", "new-during-pass"]);
        assert_eq!(
            findings.take_dirty(),
            BTreeSet::from(["a".to_owned(), "c".to_owned()])
        );
        assert_eq!(findings.counts()[&("r1", "deny")], 1);
    }

    #[test]
    fn a_namespace_lists_only_its_own_objects() {
        let mut findings = Findings::default();
        for (ns, name) in [("a", "1"), ("ab", "2"), ("a", "3"), ("", "4")] {
            findings.set(judged(ns, name, &["r"]));
        }
        let names: Vec<_> = findings
            .namespace("a")
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(names, ["1", "3"]);
    }
}
