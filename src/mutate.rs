//! The mutating side: mutators that return JSON Patch operations, and the one function that runs
//! the enabled ones and records what changed.
//!
//! Mutations are data: the webhook sends the operations as an RFC 6902 patch, `stsguard mutate`
//! applies them to manifests. Running a mutation on its own result yields no operations.

use jiff::civil::Date;
use json_patch::{AddOperation, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use serde_json::Value;

use crate::{
    exemption::ObjectExemption,
    lookup::Lookup,
    policy::{Defaults, Policy},
    subject::Subject,
};

mod complete_volume_claim_templates;
mod default_pvc_retention;
mod inject_volume_claim_templates;
mod make_headless;

/// The annotation that records which mutators changed an object.
pub const MUTATED: &str = "stsguard.io/mutated";

/// A mutator as registered in [`MUTATORS`].
pub struct Mutator {
    pub id: &'static str,
    pub summary: &'static str,
    pub why: &'static str,
    pub default_enabled: bool,
    /// Whether it only touches fields that may change after creation, and so runs on UPDATE.
    pub mutable_fields_only: bool,
    pub apply: Apply,
}

/// What a mutator changes, with what it needs to know.
pub enum Apply {
    StatefulSet(fn(&StatefulSet, &Defaults) -> Vec<PatchOperation>),
    /// Service mutators may ask for cross-object facts (in `namespace`).
    Service(fn(&Service, &str, &dyn Lookup) -> Vec<PatchOperation>),
}

impl std::fmt::Debug for Mutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutator")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Every mutator, in the order they run.
pub static MUTATORS: &[Mutator] = &[
    inject_volume_claim_templates::MUTATOR,
    complete_volume_claim_templates::MUTATOR,
    default_pvc_retention::MUTATOR,
    make_headless::MUTATOR,
];

pub fn find(id: &str) -> Option<&'static Mutator> {
    MUTATORS.iter().find(|m| m.id == id)
}

/// Whether the object is being created or updated; they differ in what may be touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// What a mutation changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    pub patch: Vec<PatchOperation>,
    /// The ids of the mutators that changed something.
    pub applied: Vec<&'static str>,
}

impl Mutation {
    pub fn is_empty(&self) -> bool {
        self.patch.is_empty()
    }
}

/// Runs the enabled mutators on a StatefulSet and records them in [`MUTATED`].
pub fn mutate_statefulset(
    sts: &StatefulSet,
    namespace: &str,
    operation: Operation,
    policy: &Policy,
    today: Date,
) -> Mutation {
    run(
        Subject::StatefulSet(sts),
        namespace,
        operation,
        policy,
        today,
        |apply| match apply {
            Apply::StatefulSet(f) => f(sts, &policy.defaults),
            Apply::Service(_) => vec![],
        },
    )
}

/// Runs the enabled mutators on a Service, with cross-object facts from `lookup`.
pub fn mutate_service(
    svc: &Service,
    namespace: &str,
    operation: Operation,
    policy: &Policy,
    lookup: &dyn Lookup,
    today: Date,
) -> Mutation {
    run(
        Subject::Service(svc),
        namespace,
        operation,
        policy,
        today,
        |apply| match apply {
            Apply::Service(f) => f(svc, namespace, lookup),
            Apply::StatefulSet(_) => vec![],
        },
    )
}

/// Whether any enabled mutator looks at Services (and so needs cluster facts).
pub fn mutates_services(policy: &Policy) -> bool {
    MUTATORS
        .iter()
        .any(|m| matches!(m.apply, Apply::Service(_)) && policy.mutator_enabled(m.id))
}

fn run(
    subject: Subject,
    namespace: &str,
    operation: Operation,
    policy: &Policy,
    today: Date,
    apply: impl Fn(&Apply) -> Vec<PatchOperation>,
) -> Mutation {
    let exemption = ObjectExemption::of(&subject, today);
    let mut mutation = Mutation::default();
    for mutator in MUTATORS {
        let runs = policy.mutator_enabled(mutator.id)
            && (operation == Operation::Create || mutator.mutable_fields_only)
            && exemption.covers(mutator.id).is_none()
            && policy.namespace_exemption(namespace, mutator.id).is_none();
        if !runs {
            continue;
        }
        let ops = apply(&mutator.apply);
        if !ops.is_empty() {
            mutation.patch.extend(ops);
            mutation.applied.push(mutator.id);
        }
    }
    if !mutation.applied.is_empty() {
        mutation.patch.push(record(&subject, &mutation.applied));
    }
    mutation
}

/// The operation that adds the applied mutator ids to the [`MUTATED`] annotation, keeping ids
/// an earlier invocation recorded.
fn record(subject: &Subject, applied: &[&str]) -> PatchOperation {
    let mut ids: Vec<&str> = subject
        .annotation(MUTATED)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for id in applied {
        if !ids.contains(id) {
            ids.push(id);
        }
    }
    let value = ids.join(",");
    let metadata = subject.metadata();
    if metadata.annotations.is_some() {
        add(&["metadata", "annotations", MUTATED], Value::String(value))
    } else if *metadata == Default::default() {
        // Nothing says the object has a `metadata` at all (the typed object reads a missing one
        // as empty), and adding under a missing parent fails: add it whole.
        add(
            &["metadata"],
            serde_json::json!({"annotations": { MUTATED: value }}),
        )
    } else {
        add(
            &["metadata", "annotations"],
            serde_json::json!({ MUTATED: value }),
        )
    }
}

/// An `add` operation at the path made of these tokens (escaped as RFC 6901 requires).
pub(crate) fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::sts;

    pub(crate) fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    /// Applies a mutation to the object's JSON and deserializes the result.
    pub(crate) fn apply(sts: &StatefulSet, mutation: &Mutation) -> StatefulSet {
        let mut doc = serde_json::to_value(sts).unwrap();
        json_patch::patch(&mut doc, &mutation.patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn nothing_to_do_gives_no_patch() {
        let clean = sts()
            .set(
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            )
            .build();
        let m = mutate_statefulset(&clean, "ns", Operation::Create, &Policy::builtin(), today());
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn changes_are_recorded_and_a_second_pass_is_empty() {
        let bare = sts()
            .remove("/spec/volumeClaimTemplates")
            .remove("/metadata/annotations")
            .build();
        let policy = Policy::builtin();
        let first = mutate_statefulset(&bare, "ns", Operation::Create, &policy, today());
        assert_eq!(
            first.applied,
            [
                "sts-inject-volume-claim-templates",
                "sts-default-pvc-retention"
            ]
        );
        let patched = apply(&bare, &first);
        let annotations = patched.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[MUTATED],
            "sts-inject-volume-claim-templates,sts-default-pvc-retention"
        );
        let second = mutate_statefulset(&patched, "ns", Operation::Create, &policy, today());
        assert!(second.is_empty(), "{second:?}");
    }

    #[test]
    fn updates_touch_only_mutable_fields() {
        let bare = sts().remove("/spec/volumeClaimTemplates").build();
        let m = mutate_statefulset(&bare, "ns", Operation::Update, &Policy::builtin(), today());
        assert_eq!(m.applied, ["sts-default-pvc-retention"]);
        assert!(
            m.patch
                .iter()
                .all(|op| !op.path().to_string().contains("volumeClaimTemplates"))
        );
    }

    #[test]
    fn disabled_or_exempted_mutators_do_not_run() {
        let bare = sts().remove("/spec/volumeClaimTemplates").build();
        let policy = Policy::from_yaml(
            "mutators: {sts-default-pvc-retention: false}
exemptions: [{namespaces: [ns], rules: [sts-inject-volume-claim-templates], reason: byo storage}]",
            "t",
        )
        .unwrap();
        let m = mutate_statefulset(&bare, "ns", Operation::Create, &policy, today());
        assert!(m.is_empty(), "{m:?}");
        let annotated = sts()
            .remove("/spec/volumeClaimTemplates")
            .set("/metadata/annotations", json!({"stsguard.io/exempt": "*"}))
            .build();
        let m = mutate_statefulset(
            &annotated,
            "ns",
            Operation::Create,
            &Policy::builtin(),
            today(),
        );
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn annotation_keys_are_escaped_and_earlier_ids_kept() {
        let bare = sts()
            .remove("/spec/volumeClaimTemplates")
            .set(
                "/metadata/annotations",
                json!({MUTATED: "sts-default-pvc-retention"}),
            )
            .set(
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            )
            .build();
        let m = mutate_statefulset(&bare, "ns", Operation::Create, &Policy::builtin(), today());
        let last = m.patch.last().unwrap();
        assert_eq!(
            last.path().to_string(),
            "/metadata/annotations/stsguard.io~1mutated"
        );
        let patched = apply(&bare, &m);
        assert_eq!(
            patched.metadata.annotations.unwrap()[MUTATED],
            "sts-default-pvc-retention,sts-inject-volume-claim-templates"
        );
    }
}
