//! Policy files: which rules run at which action, the mode, the defaults mutators inject, and
//! exemptions. A file deserializes into [`PolicyFile`] (unknown fields are errors) and is then
//! validated into a [`Policy`], so everything after start-up can trust it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    mutate::{self, Defaults, VolumeClaimTemplateDefaults},
    rules::{self, Action, RULES, Rule, Settings},
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

/// A policy file as written. See README.md, "Policy reference", for every field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Always `stsguard.io/v1alpha1`.
    pub api_version: Option<String>,
    /// Always `Policy`.
    pub kind: Option<String>,
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// `deny` (default) or `allow`: the answer when a rule fails internally.
    #[serde(default)]
    pub failure_action: FailureAction,
    /// `auto` (default) or `off`.
    #[serde(default)]
    pub lookups: Lookups,
    /// Rule id → action (`deny`, `warn`, `off`), or rule id → {case → action}.
    #[serde(default)]
    pub rules: BTreeMap<String, Value>,
    /// Mutator id → enabled.
    #[serde(default)]
    pub mutators: BTreeMap<String, bool>,
    /// What mutators inject.
    #[serde(default)]
    pub defaults: DefaultsFile,
    /// Namespaces whose objects are exempt from some or all rules.
    #[serde(default)]
    pub exemptions: Vec<NamespaceExemption>,
    /// Rule settings.
    #[serde(default)]
    pub settings: Settings,
}

/// `defaults` as written: what the mutators inject.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DefaultsFile {
    pub volume_claim_template: VolumeClaimTemplateDefaults,
    /// Retired: read only to say why it is refused (see [`RETIRED_RETENTION`]).
    pub persistent_volume_claim_retention_policy: Option<Value>,
}

/// Why `defaults.persistentVolumeClaimRetentionPolicy` and the `sts-default-pvc-retention`
/// mutator are gone: the API server sets the field before any mutating webhook sees the object,
/// so a different default never reached a stored object, while `stsguard mutate` offline did set
/// it. A policy that still asks for it is refused rather than silently ignored.
pub const RETIRED_RETENTION: &str = "was removed: the API server defaults \
    persistentVolumeClaimRetentionPolicy to Retain/Retain before mutating webhooks run, so a \
    policy default never reached a stored object; delete this entry (sts-pvc-retention still \
    judges the field)";

/// Objects in these namespaces are exempt from these rules (and mutators).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceExemption {
    pub namespaces: Vec<String>,
    /// Rule or mutator ids, or `"*"` for all (the default).
    #[serde(default = "all_rules")]
    pub rules: Vec<String>,
    /// Why; shown in every warning the exemption produces.
    pub reason: String,
}

fn all_rules() -> Vec<String> {
    vec!["*".to_owned()]
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
    actions: BTreeMap<(&'static str, &'static str), Action>,
    disabled_mutators: BTreeSet<&'static str>,
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
            origin: origin.to_owned(),
            message: e.to_string(),
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

    /// Sets every case of a rule to `action` (the command line's `--rule ID=ACTION`).
    pub fn with_rule(mut self, id: &str, action: Action) -> Result<Policy, PolicyError> {
        let rule = rules::find(id).ok_or_else(|| PolicyError::Invalid {
            origin: "--rule".to_owned(),
            field: id.to_owned(),
            message: format!("unknown rule id; known ids: {}", rule_ids()),
        })?;
        for case in rule.cases {
            self.actions.insert((rule.id, case.name), action);
        }
        Ok(self)
    }
}

impl PolicyFile {
    /// Checks every field against what stsguard knows, naming the field that is wrong.
    pub fn validate(self, origin: &str) -> Result<Policy, PolicyError> {
        let invalid = |field: &str, message: String| PolicyError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        if let Some(v) = self.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(invalid(
                "apiVersion",
                format!("{v:?} is not {API_VERSION:?}"),
            ));
        }
        if let Some(k) = self.kind.as_deref().filter(|k| *k != KIND) {
            return Err(invalid("kind", format!("{k:?} is not {KIND:?}")));
        }

        let mut actions = BTreeMap::new();
        for (id, setting) in &self.rules {
            let field = format!("rules.{id}");
            let rule = rules::find(id).ok_or_else(|| {
                invalid(
                    &field,
                    format!("unknown rule id; known ids: {}", rule_ids()),
                )
            })?;
            match setting {
                Value::String(_) | Value::Bool(false) => {
                    let action = parse_action(setting).map_err(|m| invalid(&field, m))?;
                    for case in rule.cases {
                        actions.insert((rule.id, case.name), action);
                    }
                }
                Value::Object(cases) => {
                    for (case_name, value) in cases {
                        let field = format!("{field}.{case_name}");
                        let case = rule.case(case_name).ok_or_else(|| {
                            let known: Vec<_> = rule.cases.iter().map(|c| c.name).collect();
                            invalid(
                                &field,
                                format!("unknown case; {id} has {}", known.join(", ")),
                            )
                        })?;
                        let action = parse_action(value).map_err(|m| invalid(&field, m))?;
                        actions.insert((rule.id, case.name), action);
                    }
                }
                other => {
                    return Err(invalid(
                        &field,
                        format!(
                            "expected an action (deny, warn, off) or a map of case to action, \
                             got {other}"
                        ),
                    ));
                }
            }
        }

        let mut disabled_mutators = BTreeSet::new();
        for (id, enabled) in &self.mutators {
            if id == "sts-default-pvc-retention" {
                return Err(invalid(
                    &format!("mutators.{id}"),
                    RETIRED_RETENTION.to_owned(),
                ));
            }
            let mutator = mutate::find(id).ok_or_else(|| {
                invalid(
                    &format!("mutators.{id}"),
                    format!("unknown mutator id; known ids: {}", mutator_ids()),
                )
            })?;
            if !enabled {
                disabled_mutators.insert(mutator.id);
            }
        }

        let vct = &self.defaults.volume_claim_template;
        let vct_field = "defaults.volumeClaimTemplate";
        if vct.access_modes.is_empty() {
            return Err(invalid(
                &format!("{vct_field}.accessModes"),
                "must name at least one access mode".to_owned(),
            ));
        }
        for mode in &vct.access_modes {
            if !ACCESS_MODES.contains(&mode.as_str()) {
                return Err(invalid(
                    &format!("{vct_field}.accessModes"),
                    format!("{mode:?} is not one of {}", ACCESS_MODES.join(", ")),
                ));
            }
        }
        if !is_positive_quantity(&vct.storage) {
            return Err(invalid(
                &format!("{vct_field}.storage"),
                format!(
                    "{:?} is not a positive Kubernetes quantity such as 1Gi",
                    vct.storage
                ),
            ));
        }
        if let Some(mode) = vct
            .volume_mode
            .as_deref()
            .filter(|m| !matches!(*m, "Filesystem" | "Block"))
        {
            return Err(invalid(
                &format!("{vct_field}.volumeMode"),
                format!("{mode:?} is not Filesystem or Block"),
            ));
        }
        if let Some(class) = vct.storage_class_name.as_deref().filter(|c| c.is_empty()) {
            return Err(invalid(
                &format!("{vct_field}.storageClassName"),
                format!("{class:?} is empty; leave it out to use the cluster's default class"),
            ));
        }
        if self
            .defaults
            .persistent_volume_claim_retention_policy
            .is_some()
        {
            return Err(invalid(
                "defaults.persistentVolumeClaimRetentionPolicy",
                RETIRED_RETENTION.to_owned(),
            ));
        }

        for (i, exemption) in self.exemptions.iter().enumerate() {
            let field = format!("exemptions[{i}]");
            if exemption.namespaces.is_empty() || exemption.namespaces.iter().any(String::is_empty)
            {
                return Err(invalid(
                    &format!("{field}.namespaces"),
                    "must list one or more namespace names".to_owned(),
                ));
            }
            if exemption.reason.trim().is_empty() {
                return Err(invalid(
                    &format!("{field}.reason"),
                    "must say why the namespaces are exempt".to_owned(),
                ));
            }
            if let Some(unknown) = exemption
                .rules
                .iter()
                .find(|r| *r != "*" && !rules::is_known(r) && mutate::find(r).is_none())
            {
                return Err(invalid(
                    &format!("{field}.rules"),
                    format!("{unknown:?} is not a rule or mutator id"),
                ));
            }
        }

        Ok(Policy {
            mode: self.mode,
            failure_action: self.failure_action,
            lookups: self.lookups,
            defaults: Defaults {
                volume_claim_template: self.defaults.volume_claim_template,
            },
            exemptions: self.exemptions,
            settings: self.settings,
            actions,
            disabled_mutators,
        })
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn parse_action(value: &Value) -> Result<Action, String> {
    match value {
        Value::String(s) if s == "deny" => Ok(Action::Deny),
        Value::String(s) if s == "warn" => Ok(Action::Warn),
        Value::String(s) if s == "off" => Ok(Action::Off),
        // YAML 1.1 readers turn a bare `off` into false.
        Value::Bool(false) => Ok(Action::Off),
        _ => Err(format!("{value} is not one of deny, warn, off")),
    }
}

fn rule_ids() -> String {
    RULES.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
}

fn mutator_ids() -> String {
    mutate::MUTATORS
        .iter()
        .map(|m| m.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `s` is a Kubernetes quantity above zero (`1Gi`, `500M`, `1.5Ti`, `1e9`).
pub(crate) fn is_positive_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let valid_number = !number.is_empty()
        && number.matches('.').count() <= 1
        && number != "."
        && number.chars().any(|c| c.is_ascii_digit() && c != '0');
    let valid_suffix = SUFFIXES.contains(&suffix)
        || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
            !exp.is_empty()
                && exp
                    .trim_start_matches(['+', '-'])
                    .chars()
                    .all(|c| c.is_ascii_digit())
        });
    valid_number && valid_suffix
}

#[cfg(test)]
mod tests {
    use super::*;

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
