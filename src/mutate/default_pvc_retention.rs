//! `sts-default-pvc-retention`: sets persistentVolumeClaimRetentionPolicy where it is unset.

use json_patch::PatchOperation;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::json;

use super::{Apply, Mutator, add};
use crate::policy::Defaults;

pub(super) const MUTATOR: Mutator = Mutator {
    id: "sts-default-pvc-retention",
    summary: "sets spec.persistentVolumeClaimRetentionPolicy (whenDeleted, whenScaled) from \
              defaults.persistentVolumeClaimRetentionPolicy where unset",
    why: "Makes what happens to the pods' claims on delete and scale-down explicit. The API \
          server defaults both to Retain before webhooks run, so in a cluster this matters for \
          other defaults and for `stsguard mutate` on manifests.",
    default_enabled: true,
    mutable_fields_only: true,
    apply: Apply::StatefulSet(apply),
};

const FIELD: &str = "persistentVolumeClaimRetentionPolicy";

fn apply(sts: &StatefulSet, defaults: &Defaults) -> Vec<PatchOperation> {
    let d = &defaults.persistent_volume_claim_retention_policy;
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    match spec.persistent_volume_claim_retention_policy.as_ref() {
        None => vec![add(
            &["spec", FIELD],
            json!({"whenDeleted": d.when_deleted, "whenScaled": d.when_scaled}),
        )],
        Some(current) => {
            let mut ops = Vec::new();
            if current.when_deleted.is_none() {
                ops.push(add(&["spec", FIELD, "whenDeleted"], json!(d.when_deleted)));
            }
            if current.when_scaled.is_none() {
                ops.push(add(&["spec", FIELD, "whenScaled"], json!(d.when_scaled)));
            }
            ops
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        mutate::{Mutation, tests::apply as apply_patch},
        policy::Policy,
        rules::testing::sts,
    };

    #[test]
    fn sets_the_policy_or_its_missing_half() {
        let defaults = Policy::from_yaml(
            "defaults: {persistentVolumeClaimRetentionPolicy: {whenDeleted: Retain, whenScaled: Delete}}",
            "t",
        )
        .unwrap()
        .defaults;
        for built in [
            sts().build(),
            sts()
                .set(
                    "/spec/persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain"}),
                )
                .build(),
        ] {
            let patch = apply(&built, &defaults);
            let patched = apply_patch(
                &built,
                &Mutation {
                    patch,
                    applied: vec![],
                },
            );
            let policy = patched
                .spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap();
            assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
            assert_eq!(policy.when_scaled.as_deref(), Some("Delete"));
        }
    }

    #[test]
    fn an_explicit_policy_is_kept() {
        let explicit = sts()
            .set(
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
            )
            .build();
        assert!(apply(&explicit, &Policy::builtin().defaults).is_empty());
    }
}
