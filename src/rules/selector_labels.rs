//! `sts-selector-labels`: spec.selector is set and selects the pod template's labels.

use std::collections::BTreeMap;

use k8s_openapi::{api::apps::v1::StatefulSet, apimachinery::pkg::apis::meta::v1::LabelSelector};

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};

pub(super) const RULE: Rule = Rule {
    id: "sts-selector-labels",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Deny,
    }],
    needs_lookup: false,
    summary: "spec.selector is not empty and selects spec.template.metadata.labels",
    why: "The controller finds its pods (and their ordinals) through spec.selector; a selector \
          that does not match the template adopts nothing and is rejected by apps/v1, and an \
          old manifest without one has no selector at all in apps/v1.",
    fix: "Set spec.selector.matchLabels to a subset of spec.template.metadata.labels, e.g. \
          {app: <name>}. The selector is immutable, so choose it once.",
    check: Check::StatefulSet(check),
};

const PATH: &str = "spec.selector";

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    let selector = &spec.selector;
    if is_empty(selector) {
        return vec![Finding::new(
            PATH,
            "spec.selector is empty, so the StatefulSet selects no pods",
        )];
    }
    let empty = BTreeMap::new();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    if selects(selector, labels) {
        vec![]
    } else {
        vec![Finding::new(
            PATH,
            "spec.selector does not select the pod template's labels \
             (spec.template.metadata.labels)",
        )]
    }
}

fn is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Whether a label selector selects an object with these labels (Kubernetes semantics).
pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, sts};

    #[test]
    fn matching_selector_passes() {
        assert!(check_sts(check, sts()).is_empty());
    }

    #[test]
    fn missing_or_mismatched_selector_is_reported() {
        let missing = check_sts(check, sts().remove("/spec/selector"));
        assert!(missing[0].message.contains("empty"));
        let other = check_sts(
            check,
            sts().set("/spec/selector/matchLabels/app", json!("db")),
        );
        assert!(other[0].message.contains("does not select"));
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("tier".into(), "db".into())].into();
        let sel = |ops: serde_json::Value| -> LabelSelector {
            serde_json::from_value(json!({"matchExpressions": ops})).unwrap()
        };
        assert!(selects(
            &sel(json!([{"key": "app", "operator": "In", "values": ["web", "x"]}])),
            &labels
        ));
        assert!(!selects(
            &sel(json!([{"key": "app", "operator": "NotIn", "values": ["web"]}])),
            &labels
        ));
        assert!(selects(
            &sel(json!([{"key": "tier", "operator": "Exists"}])),
            &labels
        ));
        assert!(!selects(
            &sel(json!([{"key": "zone", "operator": "Exists"}])),
            &labels
        ));
        assert!(selects(
            &sel(json!([{"key": "zone", "operator": "DoesNotExist"}])),
            &labels
        ));
        assert!(!selects(
            &sel(json!([{"key": "app", "operator": "Bogus"}])),
            &labels
        ));
    }
}
