//! `sts-volume-claim-templates`: a StatefulSet has stable storage, and each template can bind.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, Finding, Rule, Target, indexed};

pub(super) const RULE: Rule = Rule {
    id: "sts-volume-claim-templates",
    target: Target::StatefulSet,
    cases: &[
        Case {
            name: MISSING,
            default: Action::Warn,
        },
        Case {
            name: INCOMPLETE,
            default: Action::Deny,
        },
    ],
    needs_lookup: false,
    summary: "volumeClaimTemplates exist (missing), and each has accessModes and \
              resources.requests.storage (incomplete)",
    why: "Per-pod PersistentVolumeClaims that follow each pod across restarts are one of the \
          guarantees a StatefulSet exists for. A template without accessModes or a storage \
          request can never be turned into a claim, so its pods never start.",
    fix: "Add spec.volumeClaimTemplates with accessModes (e.g. [ReadWriteOnce]) and \
          resources.requests.storage (e.g. 1Gi), or let the mutating webhook fill them in from \
          the policy defaults.",
    check: Check::StatefulSet(check),
};

pub(crate) const MISSING: &str = "missing";
pub(crate) const INCOMPLETE: &str = "incomplete";
const PATH: &str = "spec.volumeClaimTemplates";

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let templates = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default();
    if templates.is_empty() {
        return vec![
            Finding::new(
                PATH,
                "no volumeClaimTemplates: the pods get no stable per-pod storage",
            )
            .case(MISSING),
        ];
    }
    let mut findings = Vec::new();
    for (i, template) in templates.iter().enumerate() {
        let path = indexed(PATH, i);
        let name = template.metadata.name.as_deref().unwrap_or("<unnamed>");
        let spec = template.spec.as_ref();
        if spec
            .and_then(|s| s.access_modes.as_ref())
            .is_none_or(|m| m.is_empty())
        {
            findings.push(
                Finding::new(
                    format!("{path}.spec.accessModes"),
                    format!(
                        "template {name:?} has no accessModes, so its claims cannot be created"
                    ),
                )
                .case(INCOMPLETE),
            );
        }
        let storage = spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        if storage.is_none_or(|q| q.0.trim().is_empty()) {
            findings.push(
                Finding::new(
                    format!("{path}.spec.resources.requests.storage"),
                    format!(
                        "template {name:?} requests no storage, so its claims cannot be created"
                    ),
                )
                .case(INCOMPLETE),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, paths, sts};

    #[test]
    fn complete_templates_pass() {
        assert!(check_sts(check, sts()).is_empty());
    }

    #[test]
    fn no_templates_is_the_missing_case() {
        for built in [
            sts().remove("/spec/volumeClaimTemplates"),
            sts().set("/spec/volumeClaimTemplates", json!([])),
        ] {
            let found = check_sts(check, built);
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].case, MISSING);
        }
    }

    #[test]
    fn templates_without_access_modes_or_storage_are_incomplete() {
        let found = check_sts(
            check,
            sts()
                .remove("/spec/volumeClaimTemplates/0/spec/accessModes")
                .remove("/spec/volumeClaimTemplates/0/spec/resources"),
        );
        assert_eq!(
            paths(&found),
            [
                "spec.volumeClaimTemplates[0].spec.accessModes",
                "spec.volumeClaimTemplates[0].spec.resources.requests.storage"
            ]
        );
        assert!(found.iter().all(|f| f.case == INCOMPLETE));

        let empty_modes = sts().set("/spec/volumeClaimTemplates/0/spec/accessModes", json!([]));
        assert_eq!(check_sts(check, empty_modes).len(), 1);
        let other_request = sts().set(
            "/spec/volumeClaimTemplates/0/spec/resources/requests",
            json!({"cpu": "1"}),
        );
        assert_eq!(check_sts(check, other_request).len(), 1);
    }
}
