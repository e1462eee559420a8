//! `sts-vct-volatile-labels`: volumeClaimTemplate labels that change on every release.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target, indexed};

pub(super) const RULE: Rule = Rule {
    id: "sts-vct-volatile-labels",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: false,
    summary: "volumeClaimTemplate labels carry no value that changes with each chart release \
              (settings.volatileLabels: helm.sh/chart, app.kubernetes.io/version, …)",
    why: "volumeClaimTemplates are immutable: when a chart bumps its version label there, the \
          next `helm upgrade` fails with \"Forbidden: updates to statefulset spec for fields \
          other than ...\".",
    fix: "Keep only stable labels (app.kubernetes.io/name, app.kubernetes.io/instance) on \
          volumeClaimTemplates; put version labels on the pod template instead.",
    check: Check::StatefulSet(check),
};

fn check(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    let templates = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default();
    let mut findings = Vec::new();
    for (i, template) in templates.iter().enumerate() {
        let name = template.metadata.name.as_deref().unwrap_or("<unnamed>");
        for key in template.metadata.labels.iter().flatten().map(|(k, _)| k) {
            if ctx.settings.volatile_labels.iter().any(|v| v == key) {
                findings.push(Finding::new(
                    format!(
                        "{}.metadata.labels[{key}]",
                        indexed("spec.volumeClaimTemplates", i)
                    ),
                    format!(
                        "template {name:?} has label {key:?}, which changes on release; \
                         volumeClaimTemplates are immutable, so the next upgrade will fail"
                    ),
                ));
            }
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
    fn stable_labels_pass() {
        let stable = sts().set(
            "/spec/volumeClaimTemplates/0/metadata/labels",
            json!({"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "prod"}),
        );
        assert!(check_sts(check, stable).is_empty());
    }

    #[test]
    fn each_volatile_label_is_reported() {
        let volatile = sts().set(
            "/spec/volumeClaimTemplates/0/metadata/labels",
            json!({"helm.sh/chart": "web-1.2.3", "app.kubernetes.io/version": "7.2", "app": "web"}),
        );
        let found = check_sts(check, volatile);
        assert_eq!(
            paths(&found),
            [
                "spec.volumeClaimTemplates[0].metadata.labels[app.kubernetes.io/version]",
                "spec.volumeClaimTemplates[0].metadata.labels[helm.sh/chart]"
            ]
        );
    }
}
