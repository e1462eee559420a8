//! The backstop: the in-object rules as ValidatingAdmissionPolicies, which the API server
//! enforces itself (Kubernetes 1.30+), so that the in-object rules hold while the webhook is
//! down and the webhook can fail open.
//!
//! One policy and binding per action level: `<name>-deny` holds the deny-level rule cases
//! (`validationActions: [Deny]`, or `[Audit, Warn]` in audit mode) and `<name>-warn` the
//! warn-level ones (`[Warn]`); a binding carries one set of actions for all of its policy's
//! validations. Exemption annotations, namespace exemptions and UPDATE grandfathering are
//! written into each validation. The backstop is never stricter than the webhook: where CEL
//! cannot say exactly what the webhook decides (an `exempt-until` date needs a clock, VAP CEL
//! has none), it admits.

use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
        ValidatingAdmissionPolicySpec, Validation, Variable,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};

use crate::{
    exemption::EXEMPT,
    mutate::MUTATORS,
    policy::{Mode, Policy},
    rules::{Action, RULES, Rule},
};

mod cel;

use cel::{CelForm, FORMS, exempt_covers_pattern, exempt_valid_pattern, lit};

/// Rules that judge a StatefulSet by itself but have no CEL form, with the reason. Empty today:
/// every such rule has one.
pub static LEFT_OUT: &[(&str, &str)] = &[];

/// The default name of the generated objects (`<name>-deny`, `<name>-warn`).
pub const DEFAULT_NAME: &str = "stsguard-backstop";

/// The label that says which level a generated policy or binding enforces (`deny`, `warn`).
pub const LEVEL_LABEL: &str = "stsguard.io/backstop-level";

/// The generated policies and bindings, and what they leave to the webhook.
#[derive(Debug)]
pub struct Backstop {
    pub objects: Vec<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)>,
    /// Enabled rules that need other objects, which only the webhook enforces.
    pub left_to_webhook: Vec<&'static str>,
}

impl Backstop {
    /// Binds the policies to every namespace but these (the webhooks' own exclusions: their
    /// release namespace, kube-system), as the chart does with its namespace selector.
    pub fn exclude_namespaces(&mut self, namespaces: &[String]) {
        if namespaces.is_empty() {
            return;
        }
        let selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(namespaces.to_vec()),
            }]),
            ..LabelSelector::default()
        };
        for (_, binding) in &mut self.objects {
            binding.spec.match_resources = Some(MatchResources {
                namespace_selector: Some(selector.clone()),
                ..MatchResources::default()
            });
        }
    }
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

/// The backstop for `policy`, its objects named `<name>-deny` and `<name>-warn`.
pub fn generate(policy: &Policy, name: &str) -> Backstop {
    let mut objects = Vec::new();
    for action in [Action::Deny, Action::Warn] {
        let validations: Vec<Validation> = FORMS
            .iter()
            .filter(|form| rule_of(form).is_some_and(|r| policy.action(r, form.case) == action))
            .map(|form| validation(form, policy, action))
            .collect();
        if validations.is_empty() {
            continue;
        }
        let level = action.as_str();
        let object_name = format!("{name}-{level}");
        let actions: &[&str] = match (action, policy.mode) {
            (Action::Deny, Mode::Enforce) => &["Deny"],
            (Action::Deny, Mode::Audit) => &["Audit", "Warn"],
            _ => &["Warn"],
        };
        let meta = ObjectMeta {
            name: Some(object_name.clone()),
            labels: Some([(LEVEL_LABEL.to_owned(), level.to_owned())].into()),
            ..ObjectMeta::default()
        };
        let vap = ValidatingAdmissionPolicy {
            metadata: meta.clone(),
            spec: Some(ValidatingAdmissionPolicySpec {
                // An expression that fails to evaluate admits: the backstop must never be
                // stricter than the webhook.
                failure_policy: Some("Ignore".to_owned()),
                match_constraints: Some(MatchResources {
                    match_policy: Some("Equivalent".to_owned()),
                    resource_rules: Some(vec![NamedRuleWithOperations {
                        api_groups: Some(vec!["apps".to_owned()]),
                        api_versions: Some(vec!["v1".to_owned()]),
                        operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                        resources: Some(vec!["statefulsets".to_owned()]),
                        scope: Some("Namespaced".to_owned()),
                        ..NamedRuleWithOperations::default()
                    }]),
                    ..MatchResources::default()
                }),
                variables: Some(variables()),
                validations: Some(validations),
                ..ValidatingAdmissionPolicySpec::default()
            }),
            ..ValidatingAdmissionPolicy::default()
        };
        let binding = ValidatingAdmissionPolicyBinding {
            metadata: meta,
            spec: ValidatingAdmissionPolicyBindingSpec {
                policy_name: object_name,
                validation_actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                ..ValidatingAdmissionPolicyBindingSpec::default()
            },
        };
        objects.push((vap, binding));
    }
    let left_to_webhook = RULES
        .iter()
        .filter(|r| coverage(r) != Coverage::Cel && policy.strongest_action(r) != Action::Off)
        .map(|r| r.id)
        .collect();
    Backstop {
        objects,
        left_to_webhook,
    }
}

fn rule_of(form: &CelForm) -> Option<&'static Rule> {
    crate::rules::find(form.rule)
}

/// The variables every validation reads: the exemption annotation and whether it applies.
fn variables() -> Vec<Variable> {
    let known = RULES
        .iter()
        .map(|r| r.id)
        .chain(MUTATORS.iter().map(|m| m.id));
    vec![
        Variable {
            name: "exempt".to_owned(),
            expression: format!(
                "has(object.metadata.annotations) && {key} in object.metadata.annotations ? \
                 object.metadata.annotations[{key}] : ''",
                key = lit(EXEMPT)
            ),
        },
        Variable {
            name: "exemptApplies".to_owned(),
            expression: format!(
                "variables.exempt.matches('{}')",
                exempt_valid_pattern(known)
            ),
        },
    ]
}

/// The validation of one rule case at one action: it passes when the object is exempt (by
/// annotation or namespace), when no part is violated, or, at deny level on UPDATE, when each
/// violated part was already violated in the old object.
fn validation(form: &CelForm, policy: &Policy, action: Action) -> Validation {
    let rule = rule_of(form).unwrap_or_else(|| unreachable!("FORMS names known rules (tested)"));
    let mut pass = vec![format!(
        "variables.exemptApplies && variables.exempt.matches('{}')",
        exempt_covers_pattern(form.rule)
    )];
    let namespaces: Vec<String> = policy
        .exemptions
        .iter()
        .filter(|e| e.rules.iter().any(|r| r == "*" || r == form.rule))
        .flat_map(|e| e.namespaces.iter().cloned())
        .collect();
    if !namespaces.is_empty() {
        pass.push(format!("request.namespace in {}", cel::list(&namespaces)));
    }
    let parts: Vec<String> = (form.parts)("object", &policy.settings)
        .into_iter()
        .zip((form.parts)("oldObject", &policy.settings))
        .map(|(new, old)| match action {
            Action::Deny => format!("(!({new}) || request.operation == 'UPDATE' && ({old}))"),
            _ => format!("!({new})"),
        })
        .collect();
    pass.push(parts.join(" && "));
    let case = if rule.cases.len() > 1 {
        format!(" ({})", form.case)
    } else {
        String::new()
    };
    Validation {
        expression: pass
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" || "),
        message: Some(format!(
            "{}{case} at {}: {}. Fix: {}",
            rule.id,
            form.path,
            form.what,
            flat(rule.fix)
        )),
        reason: Some("Invalid".to_owned()),
        ..Validation::default()
    }
}

/// The rule case a generated validation enforces, read back from its message.
pub fn check_of(validation: &Validation) -> Option<(&'static str, &'static str)> {
    let message = validation.message.as_deref()?;
    FORMS.iter().find_map(|form| {
        let rule = rule_of(form)?;
        let prefix = if rule.cases.len() > 1 {
            format!("{} ({}) at {}: ", rule.id, form.case, form.path)
        } else {
            format!("{} at {}: ", rule.id, form.path)
        };
        message
            .starts_with(&prefix)
            .then_some((form.rule, form.case))
    })
}

/// Whether the backstop grandfathers this rule case on UPDATE by case rather than by field path
/// (one path per list element): it may then admit an update the webhook denies.
pub fn grandfathered_by_case(rule: &str, case: &str) -> bool {
    FORMS
        .iter()
        .any(|f| f.rule == rule && f.case == case && f.per_element)
}

/// The backstop as YAML documents, with a header saying what it leaves to the webhook.
pub fn yaml(
    backstop: &Backstop,
    policy_origin: &str,
) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = format!(
        "# stsguard backstop: the in-object rules as ValidatingAdmissionPolicies (Kubernetes 1.30+).\n\
         # Generated by `stsguard policy export --format vap` from {policy_origin}; do not edit.\n"
    );
    if backstop.left_to_webhook.is_empty() {
        out.push_str("# Every enabled rule is in it.\n");
    } else {
        out.push_str("# Left to the webhook (they need other objects):\n");
        for id in &backstop.left_to_webhook {
            out.push_str(&format!("#   {id}\n"));
        }
    }
    for (i, (vap, binding)) in backstop.objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(vap)?);
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(binding)?);
    }
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
