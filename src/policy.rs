//! Policy files: which rules run at which action, the mode, the defaults mutators inject, and
//! exemptions. A file deserializes into [`PolicyFile`] (unknown fields are errors) and is then
//! validated into a [`Policy`], so everything after start-up can trust it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{
    mutate::Defaults,
    rules::{self, Action, Rule, Settings},
};

mod file;

pub use file::{
    DefaultsFile, NamespaceExemption, PolicyFile, RETIRED_RETENTION, unknown_id as file_unknown_id,
};

/// The built-in policy, the same text as `policies/default.yaml`.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.yaml");

pub const API_VERSION: &str = "stsguard.io/v1alpha1";
pub const KIND: &str = "Policy";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {origin} is not valid: {message}")]
    Parse { origin: String, message: String },
    #[error("policy {origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// What the webhook does with deny-level violations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny-level violations reject the object.
    #[default]
    Enforce,
    /// Dry-run audit: everything is admitted; what would have been denied is returned as
    /// warnings and audit annotations.
    Audit,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        })
    }
}

/// How to answer when a rule fails internally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Reject the object, as a webhook with `failurePolicy: Fail` would.
    #[default]
    Deny,
    /// Admit the object with a warning.
    Allow,
}

/// Whether cluster lookups are used when a cluster is reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lookups {
    /// Use them when a kubeconfig or in-cluster configuration is found.
    #[default]
    Auto,
    /// Never; cross-object rules are skipped.
    Off,
}

/// The policy in force, replaced as a whole when a changed policy file loads; each review
/// works with the policy it started with.
#[derive(Debug)]
pub struct PolicySlot(std::sync::RwLock<std::sync::Arc<Policy>>);

impl PolicySlot {
    pub fn new(policy: Policy) -> Self {
        PolicySlot(std::sync::RwLock::new(std::sync::Arc::new(policy)))
    }

    pub fn get(&self) -> std::sync::Arc<Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(policy);
    }
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: Mode,
    pub failure_action: FailureAction,
    pub lookups: Lookups,
    pub defaults: Defaults,
    pub exemptions: Vec<NamespaceExemption>,
    pub settings: Settings,
    /// Overrides of rule case actions; cases not named keep their rule's default.
    pub(super) actions: BTreeMap<(&'static str, &'static str), Action>,
    pub(super) disabled_mutators: BTreeSet<&'static str>,
}

impl Policy {
    /// The built-in policy.
    pub fn builtin() -> Policy {
        Policy::from_yaml(DEFAULT_POLICY, "built-in default")
            .unwrap_or_else(|e| unreachable!("the built-in policy is checked by tests: {e}"))
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = serde_saphyr::from_str(text).map_err(|e| PolicyError::Parse {
            origin: match e.location() {
                Some(at) => format!("{origin}:{}:{}", at.line(), at.column()),
                None => origin.to_owned(),
            },
            message: crate::manifest::yaml_message(&e.to_string()),
        })?;
        file.validate(origin)
    }

    /// The action for one case of a rule.
    pub fn action(&self, rule: &Rule, case: &str) -> Action {
        if let Some(action) = self.actions.get(&(rule.id, case)) {
            return *action;
        }
        rule.case(case).map_or(Action::Off, |c| c.default)
    }

    /// The highest action any case of the rule has; `Off` means the rule need not run.
    pub fn strongest_action(&self, rule: &Rule) -> Action {
        rule.cases
            .iter()
            .map(|c| self.action(rule, c.name))
            .max()
            .unwrap_or(Action::Off)
    }

    pub fn mutator_enabled(&self, id: &str) -> bool {
        !self.disabled_mutators.contains(id)
    }

    /// The reason a namespace is exempt from a rule, if it is (`"*"` covers every rule).
    pub fn namespace_exemption(&self, namespace: &str, rule: &str) -> Option<&str> {
        self.namespace_exempts(namespace, |r| r == "*" || r == rule)
    }

    /// The reason a namespace is exempt from a mutator, if it is. Only a mutator named by its id
    /// is switched off: `"*"` exempts from the rules, and the fixes the mutators make (a
    /// volumeClaimTemplate completed so the API server accepts it) stay on unless asked for.
    pub fn namespace_mutator_exemption(&self, namespace: &str, mutator: &str) -> Option<&str> {
        self.namespace_exempts(namespace, |r| r == mutator)
    }

    fn namespace_exempts(&self, namespace: &str, covers: impl Fn(&str) -> bool) -> Option<&str> {
        self.exemptions
            .iter()
            .find(|e| {
                e.namespaces.iter().any(|n| n == namespace) && e.rules.iter().any(|r| covers(r))
            })
            .map(|e| e.reason.as_str())
    }

    pub fn with_mode(mut self, mode: Mode) -> Policy {
        self.mode = mode;
        self
    }

    /// Sets one case of a rule, or every case when `case` is `None`, to `action` (the command
    /// line's `--rule ID[.CASE]=ACTION`).
    pub fn with_rule(
        mut self,
        id: &str,
        case: Option<&str>,
        action: Action,
    ) -> Result<Policy, PolicyError> {
        let invalid = |field: String, message| PolicyError::Invalid {
            origin: "--rule".to_owned(),
            field,
            message,
        };
        let rule = rules::find(id).ok_or_else(|| {
            invalid(
                id.to_owned(),
                file::unknown_id("rule", id, rules::RULES.iter().map(|r| r.id)),
            )
        })?;
        let cases: Vec<&rules::Case> = match case {
            None => rule.cases.iter().collect(),
            Some(name) => vec![rule.case(name).ok_or_else(|| {
                let known: Vec<_> = rule.cases.iter().map(|c| c.name).collect();
                invalid(
                    format!("{id}.{name}"),
                    format!("unknown case; {id} has {}", known.join(", ")),
                )
            })?],
        };
        for case in cases {
            self.actions.insert((rule.id, case.name), action);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{file::is_positive_quantity, *};
    use crate::{mutate, rules::RULES};

    fn err(text: &str) -> String {
        Policy::from_yaml(text, "test.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn builtin_policy_states_every_rule_default() {
        let file: PolicyFile = serde_saphyr::from_str(DEFAULT_POLICY).unwrap();
        let policy = Policy::builtin();
        for rule in RULES {
            assert!(
                file.rules.contains_key(rule.id),
                "default.yaml does not list {}",
                rule.id
            );
            for case in rule.cases {
                assert_eq!(
                    policy.action(rule, case.name),
                    case.default,
                    "default.yaml changes the default of {} {}",
                    rule.id,
                    case.name
                );
            }
        }
        for mutator in mutate::MUTATORS {
            assert!(
                file.mutators.contains_key(mutator.id),
                "default.yaml lacks {}",
                mutator.id
            );
            assert_eq!(policy.mutator_enabled(mutator.id), mutator.default_enabled);
        }
        assert_eq!(policy.mode, Mode::Enforce);
    }

    #[test]
    fn an_empty_policy_is_the_rule_defaults() {
        let policy = Policy::from_yaml("{}", "empty").unwrap();
        let rule = rules::find("sts-volume-claim-templates").unwrap();
        assert_eq!(policy.action(rule, "missing"), Action::Warn);
        assert_eq!(policy.action(rule, "incomplete"), Action::Deny);
        assert_eq!(policy.defaults, Defaults::default());
    }

    #[test]
    fn a_plain_action_sets_every_case_and_a_map_sets_one() {
        let rule = rules::find("sts-volume-claim-templates").unwrap();
        let all = Policy::from_yaml("rules: {sts-volume-claim-templates: deny}", "t").unwrap();
        assert_eq!(all.action(rule, "missing"), Action::Deny);
        let one = Policy::from_yaml(
            "rules: {sts-volume-claim-templates: {incomplete: warn}}",
            "t",
        )
        .unwrap();
        assert_eq!(one.action(rule, "missing"), Action::Warn);
        assert_eq!(one.action(rule, "incomplete"), Action::Warn);
        assert_eq!(one.strongest_action(rule), Action::Warn);
    }

    #[test]
    fn errors_name_the_origin_field_and_problem() {
        let e = err("rules: {sts-readines-probe: deny}");
        assert!(e.contains("did you mean \"sts-readiness-probe\"?"), "{e}");
        let e = err("rules: {sts-readiness-probe: [deny\n");
        assert_eq!(
            e, "policy test.yaml:1:30 is not valid: unclosed bracket '['",
            "the file, not <input>"
        );
        let e = err("rules: {sts-nope: deny}");
        assert!(
            e.contains("test.yaml")
                && e.contains("rules.sts-nope")
                && e.contains("unknown rule id"),
            "{e}"
        );
        let e = err("rules: {sts-service-name: maybe}");
        assert!(
            e.contains("rules.sts-service-name") && e.contains("deny, warn, off"),
            "{e}"
        );
        let e = err("rules: {sts-volume-claim-templates: {absent: warn}}");
        assert!(
            e.contains("unknown case") && e.contains("missing, incomplete"),
            "{e}"
        );
        let e = err("mode: loud");
        assert!(e.contains("test.yaml") && e.contains("loud"), "{e}");
        let e = err("modes: audit");
        assert!(e.contains("modes"), "{e}");
        let e = err("defaults: {volumeClaimTemplate: {storage: lots}}");
        assert!(e.contains("defaults.volumeClaimTemplate.storage"), "{e}");
        let e = err("defaults: {volumeClaimTemplate: {accessModes: [ReadWriteSometimes]}}");
        assert!(
            e.contains("accessModes") && e.contains("ReadWriteSometimes"),
            "{e}"
        );
        let e = err("exemptions: [{namespaces: [a], reason: ''}]");
        assert!(e.contains("exemptions[0].reason"), "{e}");
        let e = err("exemptions: [{namespaces: [a], rules: [sts-nope], reason: x}]");
        assert!(e.contains("exemptions[0].rules"), "{e}");
        let e = err("mutators: {sts-nope: false}");
        assert!(e.contains("mutators.sts-nope"), "{e}");
        let e = err("apiVersion: v1");
        assert!(e.contains("apiVersion"), "{e}");
        // What the API server defaults before webhooks cannot be a policy default.
        let e = err("defaults: {persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete}}");
        assert!(
            e.contains("defaults.persistentVolumeClaimRetentionPolicy")
                && e.contains("before mutating webhooks run"),
            "{e}"
        );
        let e = err("mutators: {sts-default-pvc-retention: true}");
        assert!(
            e.contains("mutators.sts-default-pvc-retention") && e.contains("was removed"),
            "{e}"
        );
    }

    #[test]
    fn bare_off_means_off_everywhere() {
        let policy = Policy::from_yaml(
            "lookups: off\nrules: {sts-service-name: off, sts-volume-claim-templates: {missing: off}}",
            "t",
        )
        .unwrap();
        assert_eq!(policy.lookups, Lookups::Off);
        assert_eq!(
            policy.action(rules::find("sts-service-name").unwrap(), "default"),
            Action::Off
        );
        let e = err("rules: {sts-service-name: true}");
        assert!(e.contains("deny, warn, off"), "{e}");
    }

    #[test]
    fn every_shipped_policy_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
                loaded += 1;
            }
        }
        assert!(loaded >= 3, "expected default, strict and audit policies");
        let builtin = std::fs::read_to_string(dir.join("default.yaml")).unwrap();
        assert_eq!(builtin, DEFAULT_POLICY);
        let strict = Policy::load(&dir.join("strict.yaml")).unwrap();
        for rule in RULES {
            for case in rule.cases {
                assert_eq!(
                    strict.action(rule, case.name),
                    Action::Deny,
                    "{} {}",
                    rule.id,
                    case.name
                );
            }
        }
        assert_eq!(
            Policy::load(&dir.join("audit.yaml")).unwrap().mode,
            Mode::Audit
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let e = Policy::load(Path::new("/nonexistent/policy.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/policy.yaml"), "{e}");
    }

    #[test]
    fn namespace_exemptions_match_rules_or_all() {
        let policy = Policy::from_yaml(
            "exemptions: [{namespaces: [infra], rules: [sts-readiness-probe], reason: vendored},
                          {namespaces: [legacy], reason: migrating}]",
            "t",
        )
        .unwrap();
        assert_eq!(
            policy.namespace_exemption("infra", "sts-readiness-probe"),
            Some("vendored")
        );
        assert_eq!(
            policy.namespace_exemption("infra", "sts-service-name"),
            None
        );
        assert_eq!(
            policy.namespace_exemption("legacy", "sts-service-name"),
            Some("migrating")
        );
        assert_eq!(policy.namespace_exemption("apps", "sts-service-name"), None);
    }

    #[test]
    fn quantities() {
        for good in ["1Gi", "500M", "1.5Ti", "1e9", "10", "0.5Gi", "100k"] {
            assert!(is_positive_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "0", "0Gi", "1GB", "-1Gi", "1..2Gi", "lots", "1e"] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }
}
