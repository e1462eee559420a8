//! The rule table: every rule's id, default action, rationale and check function.
//!
//! A rule is a small pure function over a typed object. It reports *what* is wrong and *where*;
//! how much that matters (deny, warn, off) is decided by the policy, and what to do with it
//! (mode, exemptions, UPDATE grandfathering) by `evaluate`.

use std::fmt;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use serde::{Deserialize, Serialize};

pub use crate::subject::Target;
use crate::{lookup::Lookup, subject::Operation};

mod governing_service;
mod governing_service_delete;
mod pod_anti_affinity;
mod pod_management_policy;
mod pvc_retention;
mod readiness_probe;
mod rolling_update_partition;
mod selector_labels;
mod service_name;
mod termination_grace;
mod update_strategy;
mod vct_volatile_labels;
mod volume_claim_templates;
mod volume_mounts;

pub(crate) use governing_service::governs_cleanly;
pub(crate) use volume_mounts::unresolved_mounts;

#[cfg(test)]
pub(crate) mod testing;

/// How a violation of a rule is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The rule is not evaluated.
    Off,
    /// Reported as a warning; the object is admitted.
    Warn,
    /// The object is rejected (in enforce mode).
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Warn => "warn",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way a rule can be violated. Most rules have a single case; a rule whose cases differ in
/// severity (no templates at all vs. a template that can never be bound) names each, so the
/// policy can set their actions apart.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    pub default: Action,
}

/// A single case named `default`, for rules that are violated in one way only.
pub const DEFAULT_CASE: &str = "default";

/// What a rule looks at, with its check function. The variant also says which requests the rule
/// judges: StatefulSet and Service checks judge creations and updates (the new object),
/// `ServiceDelete` judges the deletion of a Service (the object being deleted).
pub enum Check {
    StatefulSet(fn(&StatefulSet, &Context) -> Vec<Finding>),
    Service(fn(&Service, &Context) -> Vec<Finding>),
    ServiceDelete(fn(&Service, &Context) -> Vec<Finding>),
}

impl Check {
    /// Whether this check judges a request of this operation.
    pub fn judges(&self, operation: Operation) -> bool {
        match self {
            Check::StatefulSet(_) | Check::Service(_) => operation != Operation::Delete,
            Check::ServiceDelete(_) => operation == Operation::Delete,
        }
    }
}

/// A rule as registered in [`RULES`].
pub struct Rule {
    pub id: &'static str,
    pub target: Target,
    pub cases: &'static [Case],
    /// Whether the rule needs cluster facts (the governing Service, the StatefulSets naming a
    /// Service). Without lookups such rules are skipped, and the answer says so.
    pub needs_lookup: bool,
    /// What it checks, in one line.
    pub summary: &'static str,
    /// Why it matters for a StatefulSet's guarantees.
    pub why: &'static str,
    /// How to fix a violation.
    pub fix: &'static str,
    pub check: Check,
}

impl Rule {
    pub fn case(&self, name: &str) -> Option<&'static Case> {
        self.cases.iter().find(|c| c.name == name)
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a check function reports: one violation of its rule, in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Which of the rule's cases this is.
    pub case: &'static str,
    /// The field path, in the notation `kubectl explain` and API errors use.
    pub path: String,
    /// What is wrong, in a sentence.
    pub message: String,
    /// A fix specific to this finding (for example a Service ready to paste); falls back to the
    /// rule's `fix`.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            case: DEFAULT_CASE,
            path: path.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn case(mut self, case: &'static str) -> Self {
        self.case = case;
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What a rule may know besides the object: the namespace it lives in, cluster facts through
/// [`Lookup`], and the policy's rule settings.
pub struct Context<'a> {
    pub namespace: &'a str,
    pub lookup: &'a dyn Lookup,
    pub settings: &'a Settings,
}

/// Settings rules read, from the policy's `settings`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Settings {
    /// Label keys whose values change on each release (`sts-vct-volatile-labels`).
    pub volatile_labels: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            volatile_labels: ["helm.sh/chart", "app.kubernetes.io/version", "chart"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Every rule stsguard knows, in the order they are reported and listed.
pub static RULES: &[Rule] = &[
    service_name::RULE,
    volume_claim_templates::RULE,
    volume_mounts::RULE,
    selector_labels::RULE,
    readiness_probe::RULE,
    update_strategy::RULE,
    rolling_update_partition::RULE,
    termination_grace::RULE,
    pod_management_policy::RULE,
    vct_volatile_labels::RULE,
    pvc_retention::RULE,
    pod_anti_affinity::RULE,
    governing_service::HEADLESS,
    governing_service::EXISTS,
    governing_service::SELECTOR,
    governing_service::SVC_HEADLESS_FOR_STATEFULSET,
    governing_service::SVC_SELECTOR_FOR_STATEFULSET,
    governing_service::SVC_GOVERNING_TYPE,
    governing_service::SVC_PUBLISH_NOT_READY,
    governing_service_delete::RULE,
];

/// The rule with this id, if there is one.
pub fn find(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// Whether an object annotation or policy entry names a rule id that exists.
pub fn is_known(id: &str) -> bool {
    find(id).is_some()
}

/// A user-supplied value as messages echo it: at most 64 characters, so that a huge name
/// cannot make a huge answer.
pub(crate) fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &value[..at]).into(),
        None => value.into(),
    }
}

/// Joins a path and a list index the way API errors do: `spec.template.spec.containers[0]`.
pub(crate) fn indexed(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn rule_ids_are_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for rule in RULES {
            assert!(seen.insert(rule.id), "duplicate rule id {}", rule.id);
            assert!(
                rule.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "rule id {} is not kebab-case",
                rule.id
            );
            let prefix = match rule.target {
                Target::StatefulSet => "sts-",
                Target::Service => "svc-",
            };
            assert!(
                rule.id.starts_with(prefix),
                "{} should start with {prefix}",
                rule.id
            );
        }
    }

    #[test]
    fn clipped_values_keep_their_start() {
        assert_eq!(clip("web"), "web");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), 65);
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn every_rule_has_cases_and_text() {
        for rule in RULES {
            assert!(!rule.cases.is_empty(), "{} has no case", rule.id);
            let mut names = HashSet::new();
            for case in rule.cases {
                assert!(
                    names.insert(case.name),
                    "{} repeats case {}",
                    rule.id,
                    case.name
                );
            }
            for text in [rule.summary, rule.why, rule.fix] {
                assert!(text.len() > 10, "{} lacks documentation", rule.id);
            }
        }
    }
}
