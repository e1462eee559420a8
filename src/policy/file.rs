//! Policy files as written: the types a file deserializes into (unknown fields are errors) and
//! the validation that turns one into a [`Policy`], naming the field that is wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::{API_VERSION, FailureAction, KIND, Lookups, Mode, Policy, PolicyError};
use crate::{
    mutate::{self, Defaults, VolumeClaimTemplateDefaults},
    rules::{self, Action, RULES, Settings},
};

/// A policy file as written. See docs/src/policy.md, the book's "Policy reference", for every field.
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
                invalid(&field, unknown_id("rule", id, RULES.iter().map(|r| r.id)))
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
                    unknown_id("mutator", id, mutate::MUTATORS.iter().map(|m| m.id)),
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

/// What to say about an id that is not one of `known`: the closest, when one is close enough to
/// be a typo, else the whole list.
pub fn unknown_id<'a>(what: &str, id: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    let closest = known
        .iter()
        .map(|k| (strsim::levenshtein(id, k), *k))
        .min()
        .filter(|(distance, _)| *distance <= 3.max(id.len() / 5));
    match closest {
        Some((_, k)) => format!("unknown {what} id; did you mean {k:?}?"),
        None => format!("unknown {what} id; known ids: {}", known.join(", ")),
    }
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
