//! `sts-rolling-update-partition`: a partition that leaves no pod to update.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-rolling-update-partition",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "rollingUpdate.partition is below spec.replicas",
    why: "Only pods with an ordinal at or above the partition are updated; a partition at or \
          above the replica count means a template change updates no pod at all, which is \
          easy to leave behind after a staged rollout.",
    fix: "Lower spec.updateStrategy.rollingUpdate.partition (0 updates every pod) once the \
          canary pods are verified.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition);
    // replicas defaults to 1 when unset.
    let replicas = spec.replicas.unwrap_or(1);
    match partition {
        Some(p) if p > 0 && p >= replicas => vec![Finding::new(
            "spec.updateStrategy.rollingUpdate.partition",
            format!(
                "partition {p} is not below replicas {replicas}, so template changes update no pod"
            ),
        )],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, sts};

    fn with_partition(p: i32) -> crate::rules::testing::Sts {
        sts().set(
            "/spec/updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}}),
        )
    }

    #[test]
    fn partition_below_replicas_passes() {
        assert!(check_sts(check, with_partition(0)).is_empty());
        assert!(check_sts(check, with_partition(2)).is_empty());
    }

    #[test]
    fn partition_at_or_above_replicas_is_reported() {
        assert_eq!(check_sts(check, with_partition(3)).len(), 1);
        assert_eq!(check_sts(check, with_partition(5)).len(), 1);
        let scaled_to_zero = with_partition(0).set("/spec/replicas", json!(0));
        assert!(check_sts(check, scaled_to_zero).is_empty());
    }
}
