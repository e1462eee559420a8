//! `sts-readiness-probe`: every container has a readinessProbe.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target, indexed};

pub(super) const RULE: Rule = Rule {
    id: "sts-readiness-probe",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "every container in the pod template has a readinessProbe",
    why: "OrderedReady start-up and rolling updates wait for each pod to be Ready before they \
          touch the next one; without a readiness probe a pod is Ready as soon as it starts, so \
          the order protects nothing.",
    fix: "Add a readinessProbe (httpGet, tcpSocket, grpc or exec) to each container that \
          reports when the member can serve, e.g. has joined its cluster.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let containers = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.readiness_probe.is_none())
        .map(|(i, c)| {
            Finding::new(
                format!(
                    "{}.readinessProbe",
                    indexed("spec.template.spec.containers", i)
                ),
                format!("container {:?} has no readinessProbe", c.name),
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
    fn probed_containers_pass() {
        assert!(check_sts(check, sts()).is_empty());
    }

    #[test]
    fn each_unprobed_container_is_reported() {
        let built = sts()
            .remove("/spec/template/spec/containers/0/readinessProbe")
            .set(
                "/spec/template/spec/containers/-",
                json!({"name": "sidecar", "image": "x",
                "readinessProbe": {"tcpSocket": {"port": 1}}}),
            )
            .set(
                "/spec/template/spec/containers/-",
                json!({"name": "exporter", "image": "y"}),
            );
        let found = check_sts(check, built);
        assert_eq!(
            paths(&found),
            [
                "spec.template.spec.containers[0].readinessProbe",
                "spec.template.spec.containers[2].readinessProbe"
            ]
        );
        assert!(found[1].message.contains("exporter"));
    }
}
