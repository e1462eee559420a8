//! The in-object rules as ValidatingAdmissionPolicies: `<name>-deny` holds the deny-level rule
//! cases (`validationActions: [Deny]`, or `[Audit, Warn]` in audit mode) and `<name>-warn` the
//! warn-level ones (`[Warn]`); a binding carries one set of actions for all of its policy's
//! validations.
//!
//! Each rule case is a variable that is true when the object violates it: not exempt by
//! annotation or namespace, and at deny level on UPDATE, not already violated by the old object.
//! The deny policy has one validation over all of them, whose message lists every violated case:
//! the API server shows only the first failing validation of a denial, and a user must read the
//! whole list. The warn policy has one validation per case, as the webhook gives one warning per
//! violation.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation, Variable,
};

use super::{
    Target,
    cel::{CelForm, FORMS, exempt_covers_pattern, lit},
    metadata, rule_of, statefulsets, step_aside,
};
use crate::{
    policy::{Mode, Policy},
    rules::Action,
};

/// The variable that lists the messages of the violated deny-level cases.
const DENIED: &str = "denied";

/// The deny and warn policies with their bindings; a level without cases has none.
pub(crate) fn generate(
    policy: &Policy,
    target: &Target,
) -> Vec<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    let mut objects = Vec::new();
    for action in [Action::Deny, Action::Warn] {
        let forms: Vec<&CelForm> = FORMS
            .iter()
            .filter(|form| rule_of(form).is_some_and(|r| policy.action(r, form.case) == action))
            .collect();
        if forms.is_empty() {
            continue;
        }
        let level = action.as_str();
        let name = format!("{}-{level}", target.name);
        let actions: &[&str] = match (action, policy.mode) {
            (Action::Deny, Mode::Enforce) => &["Deny"],
            (Action::Deny, Mode::Audit) => &["Audit", "Warn"],
            _ => &["Warn"],
        };
        let mut variables = step_aside::variables();
        variables.extend(forms.iter().map(|form| Variable {
            name: variable_name(form),
            expression: violated(form, policy, action),
        }));
        let validations = if action == Action::Deny {
            variables.push(Variable {
                name: DENIED.to_owned(),
                expression: format!(
                    "[{}].filter(m, m != '')",
                    forms
                        .iter()
                        .map(|f| format!(
                            "variables.{} ? {} : ''",
                            variable_name(f),
                            lit(&message(f))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            vec![denial()]
        } else {
            forms.iter().map(|form| warning(form)).collect()
        };
        let meta = metadata(&name, level);
        let vap = ValidatingAdmissionPolicy {
            metadata: meta.clone(),
            spec: Some(ValidatingAdmissionPolicySpec {
                // An expression that fails to evaluate admits: the backstop must never be
                // stricter than the webhook.
                failure_policy: Some("Ignore".to_owned()),
                param_kind: Some(step_aside::param_kind()),
                match_constraints: Some(statefulsets(&["CREATE", "UPDATE"])),
                variables: Some(variables),
                validations: Some(validations),
                ..ValidatingAdmissionPolicySpec::default()
            }),
            ..ValidatingAdmissionPolicy::default()
        };
        let binding = ValidatingAdmissionPolicyBinding {
            metadata: meta,
            spec: ValidatingAdmissionPolicyBindingSpec {
                policy_name: name,
                validation_actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                param_ref: Some(step_aside::param_ref(&target.scope.webhook_service)),
                match_resources: target.scope.match_resources.clone(),
            },
        };
        objects.push((vap, binding));
    }
    objects
}

/// The one validation of the deny level: passes while the webhook is ready or nothing is
/// violated; its message lists every violated case.
fn denial() -> Validation {
    let ready = step_aside::WEBHOOK_READY;
    Validation {
        expression: format!("variables.{ready} || size(variables.{DENIED}) == 0"),
        message_expression: Some(format!(
            "'stsguard backstop (the webhook is not answering): ' + \
             string(size(variables.{DENIED})) + \
             (size(variables.{DENIED}) == 1 ? ' violation: ' : ' violations: ') + \
             variables.{DENIED}.join('; ')"
        )),
        // Shown only if the message expression fails.
        message: Some(
            "stsguard backstop (the webhook is not answering): this StatefulSet breaks \
             deny-level rules; `stsguard audit` lists them"
                .to_owned(),
        ),
        // 403, as the webhook answers, rather than the API server's default 422 Invalid.
        reason: Some("Forbidden".to_owned()),
    }
}

fn warning(form: &CelForm) -> Validation {
    Validation {
        expression: format!(
            "variables.{} || !variables.{}",
            step_aside::WEBHOOK_READY,
            variable_name(form)
        ),
        message: Some(message(form)),
        reason: Some("Forbidden".to_owned()),
        ..Validation::default()
    }
}

/// The variable of a rule case: an identifier made of the rule id and the case.
pub(crate) fn variable_name(form: &CelForm) -> String {
    format!("{}_{}", form.rule, form.case).replace('-', "_")
}

/// The rule case a generated variable stands for.
pub fn case_of_variable(name: &str) -> Option<(&'static str, &'static str)> {
    FORMS
        .iter()
        .find(|form| variable_name(form) == name)
        .map(|form| (form.rule, form.case))
}

/// What the backstop says about one violated case: rule, case, path, what and fix.
pub(crate) fn message(form: &CelForm) -> String {
    let rule = rule_of(form).unwrap_or_else(|| unreachable!("FORMS names known rules (tested)"));
    let case = if rule.cases.len() > 1 {
        format!(" ({})", form.case)
    } else {
        String::new()
    };
    format!(
        "{}{case} at {}: {}. Fix: {}",
        rule.id,
        form.path,
        form.what,
        super::flat(rule.fix)
    )
}

/// True when the object violates the case: not exempt by annotation or namespace, some part
/// violated, and at deny level on UPDATE that part not already violated by the old object.
fn violated(form: &CelForm, policy: &Policy, action: Action) -> String {
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
        pass.push(format!(
            "request.namespace in {}",
            super::cel::list(&namespaces)
        ));
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
    format!(
        "!({})",
        pass.iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" || ")
    )
}
