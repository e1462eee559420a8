//! The backstop: the in-object rules as ValidatingAdmissionPolicies and the injection mutators
//! as a MutatingAdmissionPolicy, which the API server enforces itself, so that they hold while
//! the webhook is down and the webhook can fail open.
//!
//! One voice per violation: the API server runs admission policies before webhooks and stops at
//! the first denial, so every policy steps aside while the webhook's Service has a ready
//! endpoint (`step_aside`), and the user reads the webhook alone. Exemption annotations,
//! namespace exemptions and UPDATE grandfathering are written into the expressions. The
//! backstop is never stricter than the webhook: where CEL cannot say exactly what the webhook
//! decides (an `exempt-until` date needs a clock, admission CEL has none), it admits.
//!
//! The leader applies it from the policy in force (`registration::backstop`); `stsguard policy
//! export` prints it for those who keep it in git. The mutators' CEL forms also give the mutating
//! webhook's matchCondition (`match_condition`), which spares the API server the calls where no
//! mutator could act.

use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchResources, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
        NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};
use serde::{Deserialize, Serialize};

use crate::{
    policy::Policy,
    rules::{Action, RULES, Rule},
};

mod cel;
mod match_condition;
mod mutating;
mod step_aside;
mod validating;

use cel::{CelForm, FORMS};
pub use match_condition::{
    MUTATORS_COULD_ACT, match_condition_yaml, mutator_could_act, mutators_could_act,
    mutators_could_act_with,
};
pub use mutating::MUTATORS_LEFT_OUT;
pub use validating::case_of_variable;

/// Rules that judge a StatefulSet by itself but have no CEL form, with the reason. Empty today:
/// every such rule has one.
pub static LEFT_OUT: &[(&str, &str)] = &[];

/// The default name of the generated objects (`<name>-deny`, `<name>-warn`, `<name>-mutate`).
pub const DEFAULT_NAME: &str = "stsguard-backstop";

/// The label that says which level a generated policy or binding enforces (`deny`, `warn`,
/// `mutate`).
pub const LEVEL_LABEL: &str = "stsguard.io/backstop-level";

/// The levels, each the suffix of one policy's and one binding's name.
pub const LEVELS: [&str; 3] = ["deny", "warn", "mutate"];

/// A Service, by namespace and name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ServiceRef {
    type Err = String;

    /// `NAMESPACE/NAME`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(ServiceRef {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
        }
    }
}

/// Whom the backstop steps aside for and which requests it sees: the document the chart renders
/// into the ConfigMap the leader applies the backstop from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    /// The webhook's Service: while one of its endpoints is ready, the backstop is silent.
    pub webhook_service: ServiceRef,
    /// The requests the bindings pass to the policies: the webhooks' namespace and object
    /// selectors, so the backstop judges where the webhook would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_resources: Option<MatchResources>,
}

/// What the generated objects are called, and their scope.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The objects are `<name>-deny`, `<name>-warn` and `<name>-mutate`.
    pub name: String,
    pub scope: Scope,
}

impl Target {
    /// A target whose bindings leave these namespaces alone (the webhooks' own exclusions: their
    /// release namespace, kube-system), as the chart's namespace selector does.
    pub fn excluding(name: &str, webhook_service: ServiceRef, namespaces: &[String]) -> Target {
        let match_resources = (!namespaces.is_empty()).then(|| MatchResources {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(namespaces.to_vec()),
                }]),
                ..LabelSelector::default()
            }),
            ..MatchResources::default()
        });
        Target {
            name: name.to_owned(),
            scope: Scope {
                webhook_service,
                match_resources,
            },
        }
    }
}

/// The names of every object a backstop called `name` may have, policy and binding alike
/// (`<name>-<level>`), so that what a policy no longer needs can be removed.
pub fn object_names(name: &str) -> Vec<String> {
    LEVELS.iter().map(|l| format!("{name}-{l}")).collect()
}

/// The generated policies and bindings, and what they leave to the webhook.
#[derive(Debug)]
pub struct Backstop {
    pub validating: Vec<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)>,
    /// `None` when no enabled mutator has a CEL form.
    pub mutating: Option<(MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding)>,
    /// Enabled rules that need other objects, which only the webhook enforces.
    pub left_to_webhook: Vec<&'static str>,
}

/// How the backstop treats a rule case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Enforced by the backstop.
    Cel,
    /// Needs other objects: the webhook only, and reports afterwards.
    Lookup,
    /// Has no CEL form; the reason is in [`LEFT_OUT`].
    LeftOut,
}

/// Whether the backstop covers a rule.
pub fn coverage(rule: &Rule) -> Coverage {
    if rule.needs_lookup {
        Coverage::Lookup
    } else if FORMS.iter().any(|f| f.rule == rule.id) {
        Coverage::Cel
    } else {
        Coverage::LeftOut
    }
}

/// The backstop for `policy`, named and bound as `target` says.
pub fn generate(policy: &Policy, target: &Target) -> Backstop {
    let left_to_webhook = RULES
        .iter()
        .filter(|r| coverage(r) != Coverage::Cel && policy.strongest_action(r) != Action::Off)
        .map(|r| r.id)
        .collect();
    Backstop {
        validating: validating::generate(policy, target),
        mutating: mutating::generate(policy, target),
        left_to_webhook,
    }
}

/// What every generated policy matches: StatefulSets (in any served version, as the webhooks
/// with `matchPolicy: Equivalent`) on these operations.
fn statefulsets(operations: &[&str]) -> MatchResources {
    MatchResources {
        match_policy: Some("Equivalent".to_owned()),
        resource_rules: Some(vec![NamedRuleWithOperations {
            api_groups: Some(vec!["apps".to_owned()]),
            api_versions: Some(vec!["v1".to_owned()]),
            operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
            resources: Some(vec!["statefulsets".to_owned()]),
            scope: Some("Namespaced".to_owned()),
            ..NamedRuleWithOperations::default()
        }]),
        ..MatchResources::default()
    }
}

/// A generated object's name and level label.
fn metadata(name: &str, level: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some([(LEVEL_LABEL.to_owned(), level.to_owned())].into()),
        ..ObjectMeta::default()
    }
}

fn rule_of(form: &CelForm) -> Option<&'static Rule> {
    crate::rules::find(form.rule)
}

/// Whether the backstop grandfathers this rule case on UPDATE by case rather than by field path
/// (one path per list element): it may then admit an update the webhook denies.
pub fn grandfathered_by_case(rule: &str, case: &str) -> bool {
    FORMS
        .iter()
        .any(|f| f.rule == rule && f.case == case && f.per_element)
}

/// Which objects `yaml` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kinds {
    /// The ValidatingAdmissionPolicies and their bindings (Kubernetes 1.30+).
    Validating,
    /// The MutatingAdmissionPolicy and its binding (Kubernetes 1.36+).
    Mutating,
}

/// The backstop as YAML documents, with a header saying what it leaves to the webhook.
pub fn yaml(
    backstop: &Backstop,
    kinds: Kinds,
    policy_origin: &str,
) -> Result<String, serde_saphyr::SerializeError> {
    let (what, format) = match kinds {
        Kinds::Validating => (
            "the in-object rules as ValidatingAdmissionPolicies (Kubernetes 1.30+)",
            "vap",
        ),
        Kinds::Mutating => (
            "the injection mutators as a MutatingAdmissionPolicy (Kubernetes 1.36+)",
            "map",
        ),
    };
    let mut out = format!(
        "# stsguard backstop: {what}.\n\
         # Generated by `stsguard policy export --format {format}` from {policy_origin}; do not edit.\n\
         # Silent while an endpoint of the webhook's Service is ready: the webhook speaks then.\n"
    );
    let mut documents: Vec<String> = Vec::new();
    match kinds {
        Kinds::Validating => {
            if backstop.left_to_webhook.is_empty() {
                out.push_str("# Every enabled rule is in it.\n");
            } else {
                out.push_str("# Left to the webhook (they need other objects):\n");
                for id in &backstop.left_to_webhook {
                    out.push_str(&format!("#   {id}\n"));
                }
            }
            for (vap, binding) in &backstop.validating {
                documents.push(serde_saphyr::to_string(vap)?);
                documents.push(serde_saphyr::to_string(binding)?);
            }
        }
        Kinds::Mutating => {
            for (id, why) in MUTATORS_LEFT_OUT {
                out.push_str(&format!("# Left to the webhook: {id} ({why}).\n"));
            }
            if let Some((map, binding)) = &backstop.mutating {
                documents.push(serde_saphyr::to_string(map)?);
                documents.push(serde_saphyr::to_string(binding)?);
            } else {
                out.push_str("# No enabled mutator has a CEL form: nothing to apply.\n");
            }
        }
    }
    out.push_str(&documents.join("---\n"));
    Ok(out)
}

/// The README's table: each rule, who judges it while the webhook is up, and what holds while
/// it is down.
pub fn coverage_markdown() -> String {
    let mut out = String::from(
        "| rule | webhook | backstop | while the webhook is down |\n|---|---|---|---|\n",
    );
    for rule in RULES {
        let (backstop, down) = match coverage(rule) {
            Coverage::Cel => ("yes", "enforced by the backstop"),
            Coverage::Lookup => (
                "no: needs other objects",
                "not enforced; reported later (`stsguard audit --cluster`)",
            ),
            Coverage::LeftOut => (
                "no: no CEL form",
                "not enforced; reported later (`stsguard audit --cluster`)",
            ),
        };
        out.push_str(&format!("| `{}` | yes | {backstop} | {down} |\n", rule.id));
    }
    out
}

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
