//! `sts-volume-mounts`: every volumeMount resolves to a pod volume or a volumeClaimTemplate.

use std::collections::HashSet;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Container};

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target, indexed};

pub(super) const RULE: Rule = Rule {
    id: "sts-volume-mounts",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Deny,
    }],
    needs_lookup: false,
    summary: "every container volumeMount names a pod volume or a volumeClaimTemplate",
    why: "A mount of a volume that neither the pod nor a volumeClaimTemplate defines is \
          rejected by the API server; the usual intent is per-pod persistent storage.",
    fix: "Add a volumeClaimTemplate with the mount's name (the mutating webhook injects one \
          from the policy defaults), or add a pod volume of that name.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    unresolved_mounts(sts)
        .into_iter()
        .map(|m| {
            Finding::new(
                m.path,
                format!(
                    "container {:?} mounts {:?}, which is neither a pod volume nor a \
                     volumeClaimTemplate",
                    m.container, m.volume
                ),
            )
        })
        .collect()
}

/// A volumeMount whose volume is defined nowhere.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnresolvedMount<'a> {
    pub path: String,
    pub container: &'a str,
    pub volume: &'a str,
}

/// The volumeMounts of all containers and init containers that name no pod volume and no
/// volumeClaimTemplate, each volume name once, in the order they appear.
pub(crate) fn unresolved_mounts(sts: &StatefulSet) -> Vec<UnresolvedMount<'_>> {
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    let pod = spec.template.spec.as_ref();
    let mut known: HashSet<&str> = pod
        .and_then(|p| p.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    known.extend(
        spec.volume_claim_templates
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.metadata.name.as_deref()),
    );
    let groups: [(&str, &[Container]); 2] = [
        (
            "spec.template.spec.initContainers",
            pod.and_then(|p| p.init_containers.as_deref())
                .unwrap_or_default(),
        ),
        (
            "spec.template.spec.containers",
            pod.map(|p| p.containers.as_slice()).unwrap_or_default(),
        ),
    ];
    let mut unresolved = Vec::new();
    for (base, containers) in groups {
        for (ci, container) in containers.iter().enumerate() {
            for (mi, mount) in container
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if known.insert(mount.name.as_str()) {
                    unresolved.push(UnresolvedMount {
                        path: format!("{}.volumeMounts[{mi}].name", indexed(base, ci)),
                        container: &container.name,
                        volume: &mount.name,
                    });
                }
            }
        }
    }
    unresolved
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, paths, sts};

    #[test]
    fn mounts_of_templates_and_pod_volumes_resolve() {
        let built = sts()
            .set(
                "/spec/template/spec/volumes",
                json!([{"name": "config", "emptyDir": {}}]),
            )
            .set(
                "/spec/template/spec/containers/0/volumeMounts/-",
                json!({"name": "config", "mountPath": "/etc/app"}),
            );
        assert!(check_sts(check, built).is_empty());
    }

    #[test]
    fn unknown_mounts_are_reported_once_per_volume() {
        let built = sts()
            .set(
                "/spec/template/spec/initContainers",
                json!([{"name": "init", "image": "busybox",
                        "volumeMounts": [{"name": "wal", "mountPath": "/wal"}]}]),
            )
            .set(
                "/spec/template/spec/containers/0/volumeMounts/-",
                json!({"name": "wal", "mountPath": "/wal"}),
            );
        let found = check_sts(check, built);
        assert_eq!(
            paths(&found),
            ["spec.template.spec.initContainers[0].volumeMounts[0].name"]
        );
        assert!(found[0].message.contains("\"wal\""));
    }
}
