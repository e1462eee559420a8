//! `sts-pod-anti-affinity`: replicas are spread over nodes.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-pod-anti-affinity",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Off,
    }],
    needs_lookup: false,
    summary: "a StatefulSet with more than one replica has pod anti-affinity or topology \
              spread constraints",
    why: "Replicas of a quorum system that land on one node fail together; a single node \
          drain or crash then takes the whole quorum down. Off by default, since small \
          clusters may not be able to spread.",
    fix: "Add spec.template.spec.affinity.podAntiAffinity (preferred or required, \
          topologyKey kubernetes.io/hostname) or topologySpreadConstraints.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    // replicas defaults to 1 when unset.
    if spec.replicas.unwrap_or(1) <= 1 {
        return vec![];
    }
    let pod = spec.template.spec.as_ref();
    let anti_affinity = pod
        .and_then(|p| p.affinity.as_ref())
        .is_some_and(|a| a.pod_anti_affinity.is_some());
    let spread = pod
        .and_then(|p| p.topology_spread_constraints.as_ref())
        .is_some_and(|t| !t.is_empty());
    if anti_affinity || spread {
        vec![]
    } else {
        vec![Finding::new(
            "spec.template.spec.affinity.podAntiAffinity",
            "replicas may all be scheduled on one node: no pod anti-affinity or topology \
             spread constraints",
        )]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, sts};

    #[test]
    fn unspread_replicas_are_reported() {
        assert_eq!(check_sts(check, sts()).len(), 1);
        assert!(check_sts(check, sts().set("/spec/replicas", json!(1))).is_empty());
    }

    #[test]
    fn anti_affinity_or_spread_passes() {
        let anti = sts().set(
            "/spec/template/spec/affinity",
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
        );
        assert!(check_sts(check, anti).is_empty());
        let spread = sts().set(
            "/spec/template/spec/topologySpreadConstraints",
            json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway"}]),
        );
        assert!(check_sts(check, spread).is_empty());
    }
}
