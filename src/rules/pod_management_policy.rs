//! `sts-pod-management-policy`: pods start and stop in order (not `Parallel`).

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-pod-management-policy",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Off,
    }],
    needs_lookup: false,
    summary: "spec.podManagementPolicy is not Parallel",
    why: "Parallel launches and terminates all pods at once, giving up ordered start-up and \
          scaling. Some systems want that, so the rule is off by default; turn it on where \
          members must join one at a time.",
    fix: "Use podManagementPolicy: OrderedReady (the default). The field is immutable: the \
          StatefulSet must be recreated (kubectl delete --cascade=orphan, then apply).",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    match sts
        .spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
    {
        Some("Parallel") => vec![Finding::new(
            "spec.podManagementPolicy",
            "podManagementPolicy is Parallel, so pods start and stop all at once, not in order",
        )],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, sts};

    #[test]
    fn ordered_ready_passes_and_parallel_is_reported() {
        assert!(check_sts(check, sts()).is_empty());
        let ordered = sts().set("/spec/podManagementPolicy", json!("OrderedReady"));
        assert!(check_sts(check, ordered).is_empty());
        let parallel = sts().set("/spec/podManagementPolicy", json!("Parallel"));
        assert_eq!(check_sts(check, parallel).len(), 1);
    }
}
