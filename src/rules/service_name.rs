//! `sts-service-name`: a StatefulSet must name its governing Service, by a name a Service can
//! have.
//!
//! Service names are DNS-1035 labels (a lowercase letter first) on API servers without the
//! RelaxedServiceNameValidation feature gate, and DNS-1123 labels (a digit may come first) on
//! those with it. stsguard cannot see the API server's gates, so this rule accepts every
//! DNS-1123 label, the larger set: it never denies a name the cluster accepts. A digit-first
//! name on a cluster without the gate names a Service that cannot exist, which
//! `sts-governing-service-exists` reports (with the reason) from the cluster facts.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target, clip};

pub(super) const RULE: Rule = Rule {
    id: "sts-service-name",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Deny,
    }],
    needs_lookup: false,
    summary: "spec.serviceName is set and is a valid Service name (a DNS-1123 label, as API \
              servers with RelaxedServiceNameValidation accept)",
    why: "Pods get their stable DNS names (web-0.web.ns.svc) from the governing headless Service \
          that spec.serviceName names; without it they have no stable network identity. \
          Kubernetes 1.33 made the field optional, but the guarantee still needs it.",
    fix: "Set spec.serviceName to the name of a headless Service (spec.clusterIP: None) in the \
          same namespace whose selector matches the pod template labels.",
    check: Check::StatefulSet(check),
};

const PATH: &str = "spec.serviceName";

fn check(sts: &StatefulSet, _: &Context) -> Vec<Finding> {
    // The API server sends a missing serviceName as "", manifests leave it out: both are missing.
    let name = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .unwrap_or_default();
    if name.is_empty() {
        return vec![Finding::new(
            PATH,
            "serviceName is missing, so the pods get no stable network identity",
        )];
    }
    match dns_label_problem(name) {
        Some(problem) => vec![Finding::new(
            PATH,
            format!(
                "serviceName {:?} is not a valid Service name: {problem}",
                clip(name)
            ),
        )],
        None => vec![],
    }
}

/// Why `name` is not a DNS-1123 label (the form Service names take where the API server has
/// RelaxedServiceNameValidation; without it they are DNS-1035 labels, which also start with a
/// letter), if it is not.
pub(crate) fn dns_label_problem(name: &str) -> Option<&'static str> {
    if name.len() > 63 {
        return Some("it is longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("it must start with a lowercase letter or digit");
    }
    if !name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("it must end with a lowercase letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("it may contain only lowercase letters, digits and '-'");
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::{check_sts, paths, sts};

    #[test]
    fn a_valid_name_passes() {
        assert!(check_sts(check, sts()).is_empty());
    }

    #[test]
    fn missing_and_empty_names_are_both_missing() {
        for built in [
            sts().remove("/spec/serviceName"),
            sts().set("/spec/serviceName", json!("")),
        ] {
            let found = check_sts(check, built);
            assert_eq!(paths(&found), [PATH]);
            assert!(found[0].message.contains("missing"));
        }
    }

    #[test]
    fn names_that_are_not_dns_labels_are_reported() {
        for bad in ["Web", "-web", "web-", "web_svc", "web.svc", &"a".repeat(64)] {
            let found = check_sts(check, sts().set("/spec/serviceName", json!(bad)));
            assert_eq!(found.len(), 1, "{bad} should be rejected");
            assert!(
                found[0].message.contains("not a valid Service name"),
                "{bad}"
            );
        }
        // Digit-first names are Services on clusters with RelaxedServiceNameValidation.
        for good in ["w", "web-0", "a1-b2", "1abc", "0", &"a".repeat(63)] {
            assert!(check_sts(check, sts().set("/spec/serviceName", json!(good))).is_empty());
        }
    }
}
