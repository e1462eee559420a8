//! The mutating webhook's matchCondition `stsguard-mutators-could-act`: the API server calls
//! `/mutate` only when some mutator the policy enables could change the object, so that a
//! StatefulSet with nothing to inject or complete costs it one call (`/validate`), not two.
//!
//! Built from the mutators' CEL forms (`mutating::MUTATOR_FORMS`, the backstop's own checks) and
//! the policy: a disabled mutator drops out, an enabled one without a form lets every request of
//! its kind through. Exemptions (annotations, namespaces) are not read: the condition may only
//! let through more than the mutators act on, never less. The webhook's answer to a skipped
//! request would have been "allowed, no patch" (`tests/mutate_skip_properties.rs` proves it over
//! the corpus, the captured reviews and generated objects); an object that does not read as its
//! type, which `/mutate` would refuse, is refused by `/validate` all the same.
//!
//! The API server evaluates it again on reinvocation, but never reinvokes a webhook it skipped in
//! the first round: a later webhook that makes a skipped StatefulSet need a mutation leaves it to
//! `/validate` to deny (the chart's `webhook.mutateOnlyWhenNeeded: false` is for such clusters).
//!
//! Every field is tested with `has()` before it is read and `object` only on the operations
//! where it is set, and the volumeMount check stops looking (and sends) past a size, so that no
//! evaluation fails, by error or by cost: a failed matchCondition would skip the webhook under
//! `failurePolicy: Ignore`.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;

use super::mutating::MUTATOR_FORMS;
use crate::{
    mutate::{MUTATORS, Mutator},
    policy::Policy,
    subject::Target,
};

/// The condition's name in the webhook configuration.
pub const MUTATORS_COULD_ACT: &str = "stsguard-mutators-could-act";

/// Forms of the mutators that only the webhook runs (no MutatingAdmissionPolicy form), each
/// true where the mutator could act whatever the cluster says.
static WEBHOOK_ONLY_FORMS: &[(&str, Form)] = &[("svc-make-headless", make_headless)];

/// A mutator's form: the CEL that is true where it could act.
type Form = fn() -> String;

/// `svc-make-headless`: a named Service whose clusterIP is unset or empty and that is not an
/// ExternalName; whether a StatefulSet names it is the cluster's to say, so that is not read.
fn make_headless() -> String {
    "has(object.metadata) && has(object.metadata.name) && \
     (!has(object.spec) || !has(object.spec.clusterIP) || object.spec.clusterIP == '') && \
     !(has(object.spec) && has(object.spec.type) && object.spec.type == 'ExternalName')"
        .to_owned()
}

/// Whether `mutator` could act, as CEL; `None` when it has no form (anything may make it act).
pub fn mutator_could_act(mutator: &Mutator) -> Option<String> {
    MUTATOR_FORMS
        .iter()
        .find(|f| f.id == mutator.id)
        .map(|f| (f.acts)())
        .or_else(|| {
            WEBHOOK_ONLY_FORMS
                .iter()
                .find(|(id, _)| *id == mutator.id)
                .map(|(_, form)| form())
        })
}

/// The condition for `policy`.
pub fn mutators_could_act(policy: &Policy) -> MatchCondition {
    mutators_could_act_with(policy, mutator_could_act)
}

/// The condition with each mutator's form given by `acts` (a test gives altered forms, to see
/// that the proof notices).
#[doc(hidden)]
pub fn mutators_could_act_with(
    policy: &Policy,
    acts: impl Fn(&Mutator) -> Option<String>,
) -> MatchCondition {
    let of_kind = |target: Target| {
        let parts: Vec<String> = MUTATORS
            .iter()
            .filter(|m| m.target() == target && policy.mutator_enabled(m.id))
            .map(|m| {
                let operations = if m.mutable_fields_only {
                    "(request.operation == 'CREATE' || request.operation == 'UPDATE')"
                } else {
                    "request.operation == 'CREATE'"
                };
                let acts = acts(m).unwrap_or_else(|| "true".to_owned());
                format!("({operations} && {acts})")
            })
            .collect();
        if parts.is_empty() {
            "false".to_owned()
        } else {
            parts.join(" || ")
        }
    };
    let expression = format!(
        "request.resource.resource == 'statefulsets' ? ({}) : \
         request.resource.resource == 'services' ? ({}) : true",
        of_kind(Target::StatefulSet),
        of_kind(Target::Service)
    );
    MatchCondition {
        name: MUTATORS_COULD_ACT.to_owned(),
        expression,
    }
}

/// The condition as the YAML list item the chart appends to the mutating webhook's
/// `matchConditions` (`charts/stsguard/files/mutators-match-condition.yaml`), with a header.
pub fn match_condition_yaml(policy: &Policy, policy_origin: &str) -> String {
    let condition = mutators_could_act(policy);
    let enabled: Vec<&str> = MUTATORS
        .iter()
        .filter(|m| policy.mutator_enabled(m.id))
        .map(|m| m.id)
        .collect();
    format!(
        "# The mutating webhook's matchCondition: /mutate is called only when one of these \
         mutators could act:\n\
         #   {}\n\
         # Generated by `stsguard policy export --format match-condition` from {policy_origin}; \
         do not edit.\n\
         - name: {}\n  expression: {}\n",
        if enabled.is_empty() {
            "(none)".to_owned()
        } else {
            enabled.join(", ")
        },
        condition.name,
        yaml_string(&condition.expression)
    )
}

/// A YAML double-quoted scalar (JSON's string syntax is one), so the expression stays one line.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}
