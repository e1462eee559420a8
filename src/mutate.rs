//! The mutating side: the mutator table, what each needs, and the one function that runs a set
//! of mutators over an object and records what changed. Which mutators run (policy, exemptions,
//! operation) is the admission chain's decision (`admit`), not theirs.
//!
//! Mutations are data: the webhook sends the operations as an RFC 6902 patch, `stsguard mutate`
//! applies them to manifests. Running a mutation on its own result yields no operations.

use json_patch::{AddOperation, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    lookup::Lookup,
    subject::{Subject, Target},
};

mod complete_volume_claim_templates;
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

impl Mutator {
    /// The kind of object it changes.
    pub fn target(&self) -> Target {
        match self.apply {
            Apply::StatefulSet(_) => Target::StatefulSet,
            Apply::Service(_) => Target::Service,
        }
    }
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
    make_headless::MUTATOR,
];

pub fn find(id: &str) -> Option<&'static Mutator> {
    MUTATORS.iter().find(|m| m.id == id)
}

/// Values the mutators inject, from the policy's `defaults`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Defaults {
    pub volume_claim_template: VolumeClaimTemplateDefaults,
}

/// The fields of an injected (or completed) volumeClaimTemplate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VolumeClaimTemplateDefaults {
    /// e.g. `[ReadWriteOnce]`.
    pub access_modes: Vec<String>,
    /// A Kubernetes quantity, e.g. `1Gi`.
    pub storage: String,
    /// Omitted when unset, so the cluster's default StorageClass applies.
    pub storage_class_name: Option<String>,
    /// `Filesystem` or `Block`; omitted when unset.
    pub volume_mode: Option<String>,
}

impl Default for VolumeClaimTemplateDefaults {
    fn default() -> Self {
        VolumeClaimTemplateDefaults {
            access_modes: vec!["ReadWriteOnce".to_owned()],
            storage: "1Gi".to_owned(),
            storage_class_name: None,
            volume_mode: None,
        }
    }
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

/// Runs `mutators` on the object, in order, and records those that changed something in
/// [`MUTATED`]. Mutators of the other kind are passed over.
pub fn run<'m>(
    subject: Subject,
    namespace: &str,
    defaults: &Defaults,
    lookup: &dyn Lookup,
    mutators: impl IntoIterator<Item = &'m Mutator>,
) -> Mutation {
    let mut mutation = Mutation::default();
    for mutator in mutators {
        let ops = match (&mutator.apply, subject) {
            (Apply::StatefulSet(f), Subject::StatefulSet(sts)) => f(sts, defaults),
            (Apply::Service(f), Subject::Service(svc)) => f(svc, namespace, lookup),
            _ => continue,
        };
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
    use crate::{lookup::NoLookup, rules::testing::sts};

    /// Applies a mutation to the object's JSON and deserializes the result.
    pub(crate) fn apply(sts: &StatefulSet, mutation: &Mutation) -> StatefulSet {
        let mut doc = serde_json::to_value(sts).unwrap();
        json_patch::patch(&mut doc, &mutation.patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    fn all(sts: &StatefulSet) -> Mutation {
        run(
            Subject::StatefulSet(sts),
            "ns",
            &Defaults::default(),
            &NoLookup,
            MUTATORS,
        )
    }

    #[test]
    fn nothing_to_do_gives_no_patch() {
        let m = all(&sts().build());
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn changes_are_recorded_and_a_second_pass_is_empty() {
        let bare = sts()
            .remove("/spec/volumeClaimTemplates")
            .remove("/metadata/annotations")
            .build();
        let first = all(&bare);
        assert_eq!(first.applied, ["sts-inject-volume-claim-templates"]);
        let patched = apply(&bare, &first);
        let annotations = patched.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[MUTATED], "sts-inject-volume-claim-templates");
        let second = all(&patched);
        assert!(second.is_empty(), "{second:?}");
    }

    #[test]
    fn annotation_keys_are_escaped_and_earlier_ids_kept() {
        let bare = sts()
            .remove("/spec/volumeClaimTemplates")
            .set(
                "/metadata/annotations",
                json!({MUTATED: "sts-complete-volume-claim-templates"}),
            )
            .build();
        let m = all(&bare);
        let last = m.patch.last().unwrap();
        assert_eq!(
            last.path().to_string(),
            "/metadata/annotations/stsguard.io~1mutated"
        );
        let patched = apply(&bare, &m);
        assert_eq!(
            patched.metadata.annotations.unwrap()[MUTATED],
            "sts-complete-volume-claim-templates,sts-inject-volume-claim-templates"
        );
    }
}
