//! `sts-termination-grace`: pods get time to stop gracefully.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-termination-grace",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "spec.template.spec.terminationGracePeriodSeconds is not 0",
    why: "A grace period of 0 force-kills pods: a member cannot leave its cluster, flush or \
          hand over, and ordered termination loses its point. The StatefulSet docs warn \
          against it.",
    fix: "Remove terminationGracePeriodSeconds (default 30) or set it to the time a member \
          needs to shut down cleanly.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let grace = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.termination_grace_period_seconds);
    match grace {
        Some(0) => vec![Finding::new(
            "spec.template.spec.terminationGracePeriodSeconds",
            "terminationGracePeriodSeconds is 0, so pods are force-killed instead of stopping \
             gracefully",
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
    fn unset_or_positive_grace_passes() {
        assert!(check_sts(check, sts()).is_empty());
        let thirty = sts().set(
            "/spec/template/spec/terminationGracePeriodSeconds",
            json!(30),
        );
        assert!(check_sts(check, thirty).is_empty());
    }

    #[test]
    fn zero_grace_is_reported() {
        let zero = sts().set(
            "/spec/template/spec/terminationGracePeriodSeconds",
            json!(0),
        );
        assert_eq!(check_sts(check, zero).len(), 1);
    }
}
