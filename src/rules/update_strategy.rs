//! `sts-update-strategy`: updates roll out by themselves (not `OnDelete`).

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-update-strategy",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "spec.updateStrategy.type is not OnDelete",
    why: "With OnDelete a changed template reaches a pod only when someone deletes it by hand: \
          no ordered rolling update, no readiness gating, and pods silently run mixed versions.",
    fix: "Use updateStrategy.type: RollingUpdate (the default); use rollingUpdate.partition to \
          stage an update instead of OnDelete.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let kind = sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref());
    match kind {
        Some("OnDelete") => vec![Finding::new(
            "spec.updateStrategy.type",
            "updateStrategy is OnDelete, so template changes reach pods only when they are \
             deleted by hand",
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
    fn rolling_update_and_default_pass() {
        assert!(check_sts(check, sts()).is_empty());
        let rolling = sts().set("/spec/updateStrategy", json!({"type": "RollingUpdate"}));
        assert!(check_sts(check, rolling).is_empty());
    }

    #[test]
    fn on_delete_is_reported() {
        let found = check_sts(
            check,
            sts().set("/spec/updateStrategy", json!({"type": "OnDelete"})),
        );
        assert_eq!(found.len(), 1);
    }
}
