//! `sts-pvc-retention`: claims are not deleted with the StatefulSet or on scale-down.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-pvc-retention",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "persistentVolumeClaimRetentionPolicy does not delete claims (whenDeleted, \
              whenScaled are Retain)",
    why: "With Delete, deleting the StatefulSet (or scaling it down) deletes the pods' \
          PersistentVolumeClaims and, with the usual reclaim policy, their data. A mistaken \
          `kubectl delete` or scale becomes data loss.",
    fix: "Set persistentVolumeClaimRetentionPolicy {whenDeleted: Retain, whenScaled: Retain} \
          unless the data is disposable (a cache); exempt such StatefulSets with a reason.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let Some(policy) = sts
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
    else {
        return vec![];
    };
    let fields = [
        (
            "whenDeleted",
            policy.when_deleted.as_deref(),
            "deleting the StatefulSet",
        ),
        ("whenScaled", policy.when_scaled.as_deref(), "scaling down"),
    ];
    fields
        .into_iter()
        .filter(|(_, value, _)| *value == Some("Delete"))
        .map(|(field, _, event)| {
            Finding::new(
                format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                format!("{field} is Delete, so {event} deletes the pods' claims and their data"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, paths, sts};

    #[test]
    fn retain_or_unset_passes() {
        assert!(check_sts(check, sts()).is_empty());
        let retain = sts().set(
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        assert!(check_sts(check, retain).is_empty());
    }

    #[test]
    fn delete_is_reported_per_field() {
        let delete = sts().set(
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
        );
        assert_eq!(
            paths(&check_sts(check, delete)),
            [
                "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
                "spec.persistentVolumeClaimRetentionPolicy.whenScaled"
            ]
        );
    }
}
