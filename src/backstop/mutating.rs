//! The injection mutators as a MutatingAdmissionPolicy (`<name>-mutate`, Kubernetes 1.36+):
//! while the webhook is down the API server itself still completes and injects
//! volumeClaimTemplates, so charts that rely on the injection keep working.
//!
//! One mutation of type JSONPatch whose expression gives the operations the mutators' Rust code
//! gives, in the same order, and the `stsguard.io/mutated` record. It uses only what the
//! Kubernetes CEL environment offers for 1.36 (the lists and strings extensions among it); map
//! literals wrap their values in `dyn()`, as the API server's type checker wants literals of one
//! element type.

use k8s_openapi::api::admissionregistration::v1::{
    JSONPatch, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
    MutatingAdmissionPolicyBindingSpec, MutatingAdmissionPolicySpec, Mutation, Variable,
};
use serde_json::{Value, json};

use super::{
    Target,
    cel::{WS, exempt_names_pattern, json_literal, list, lit},
    metadata, statefulsets, step_aside,
};
use crate::{
    exemption::EXEMPT_UNTIL,
    mutate::{Defaults, MUTATED, MUTATORS, Mutator},
    policy::Policy,
};

/// One mutator's CEL form: a list of JSONPatch operations over `object`.
pub(crate) struct MutatorForm {
    pub id: &'static str,
    pub ops: fn(&Defaults) -> String,
    /// True exactly where `ops` gives operations, written from the same checks but without
    /// `variables` or JSONPatch, so that a webhook's matchCondition can hold it
    /// (`match_condition`).
    pub acts: fn() -> String,
}

/// Every mutator the MutatingAdmissionPolicy carries, in the order the webhook runs them.
pub(crate) static MUTATOR_FORMS: &[MutatorForm] = &[
    MutatorForm {
        id: "sts-inject-volume-claim-templates",
        ops: inject,
        acts: inject_acts,
    },
    MutatorForm {
        id: "sts-complete-volume-claim-templates",
        ops: complete,
        acts: complete_acts,
    },
];

/// Mutators the policy leaves to the webhook, with the reason.
pub static MUTATORS_LEFT_OUT: &[(&str, &str)] = &[(
    "svc-make-headless",
    "it asks the cluster which StatefulSets name the Service, which CEL cannot",
)];

/// The policy and its binding, or `None` when no enabled mutator has a CEL form.
pub(crate) fn generate(
    policy: &Policy,
    target: &Target,
) -> Option<(MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding)> {
    let forms: Vec<(&MutatorForm, &Mutator)> = MUTATOR_FORMS
        .iter()
        .filter_map(|f| Some((f, MUTATORS.iter().find(|m| m.id == f.id)?)))
        .filter(|(f, _)| policy.mutator_enabled(f.id))
        .collect();
    if forms.is_empty() {
        return None;
    }
    let mut variables = step_aside::variables();
    variables.push(until_readable());
    variables.extend(mount_variables());
    for (form, mutator) in &forms {
        variables.push(Variable {
            name: ops_variable(form.id),
            expression: gated(form, mutator, policy),
        });
    }
    let applied: Vec<String> = forms
        .iter()
        .map(|(f, _)| {
            format!(
                "(size(variables.{}) > 0 ? [{}] : [])",
                ops_variable(f.id),
                lit(f.id)
            )
        })
        .collect();
    variables.push(Variable {
        name: "applied".to_owned(),
        expression: applied.join(" + "),
    });
    variables.extend(record_variables());
    let ops: Vec<String> = forms
        .iter()
        .map(|(f, _)| format!("variables.{}", ops_variable(f.id)))
        .chain(["variables.record".to_owned()])
        .collect();
    let name = format!("{}-mutate", target.name);
    let meta = metadata(&name, "mutate");
    let mut operations = vec!["CREATE"];
    if forms.iter().any(|(_, m)| m.mutable_fields_only) {
        operations.push("UPDATE");
    }
    let map = MutatingAdmissionPolicy {
        metadata: meta.clone(),
        spec: Some(MutatingAdmissionPolicySpec {
            // A failed expression leaves the object as it is: the webhook, once back, or the
            // validating backstop, says what is missing.
            failure_policy: Some("Ignore".to_owned()),
            param_kind: Some(step_aside::param_kind()),
            match_constraints: Some(statefulsets(&operations)),
            // As the mutating webhook: run again if a later plugin changed the object.
            reinvocation_policy: Some("IfNeeded".to_owned()),
            variables: Some(variables),
            mutations: Some(vec![Mutation {
                patch_type: "JSONPatch".to_owned(),
                json_patch: Some(JSONPatch {
                    expression: Some(format!(
                        "variables.{} ? [] : {}",
                        step_aside::WEBHOOK_READY,
                        ops.join(" + ")
                    )),
                }),
                ..Mutation::default()
            }]),
            ..MutatingAdmissionPolicySpec::default()
        }),
    };
    let binding = MutatingAdmissionPolicyBinding {
        metadata: meta,
        spec: Some(MutatingAdmissionPolicyBindingSpec {
            policy_name: Some(name),
            param_ref: Some(step_aside::param_ref(&target.scope.webhook_service)),
            match_resources: target.scope.match_resources.clone(),
        }),
    };
    Some((map, binding))
}

fn ops_variable(id: &str) -> String {
    format!("ops_{}", id.replace('-', "_"))
}

const UNTIL_READABLE: &str = "exemptUntilReadable";

/// Whether `stsguard.io/exempt-until` is absent or a date: the webhook drops the whole exemption
/// when it is not one (a typo must not leave a mutation off), so the policy mutates then too.
/// Read as a calendar date, `YYYY-MM-DD` or `YYYYMMDD`, trimmed as `str::trim` trims, each day
/// checked against its month and leap years. The rarer ISO 8601 forms jiff also reads (a date
/// followed by a time or a `[...]` annotation, a six-digit year) count as not a date here: the
/// policy then mutates where the webhook honours the exemption.
fn until_readable() -> Variable {
    let day = "(0[1-9]|1[0-9]|2[0-8])";
    let leap_year = "[0-9][0-9](0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00";
    let date = |sep: &str| {
        format!(
            "[0-9]{{4}}{sep}((0[13578]|1[02]){sep}({day}|29|30|31)|(0[469]|11){sep}({day}|29|30)|\
             02{sep}{day})|({leap_year}){sep}02{sep}29"
        )
    };
    let key = lit(EXEMPT_UNTIL);
    Variable {
        name: UNTIL_READABLE.to_owned(),
        expression: format!(
            "!has(object.metadata.annotations) || !({key} in object.metadata.annotations) || \
             object.metadata.annotations[{key}].matches('^{WS}*({}|{}){WS}*$')",
            date("-"),
            date("")
        ),
    }
}

/// The mutator's operations, or none where the webhook would not run it: on an UPDATE when it
/// touches immutable fields, in a namespace the policy exempts it in, or on an object whose
/// exemption annotation names it (whatever date its `exempt-until` holds: CEL has no clock).
fn gated(form: &MutatorForm, mutator: &Mutator, policy: &Policy) -> String {
    let mut skip = vec![format!(
        "variables.exemptApplies && variables.{UNTIL_READABLE} && \
         variables.exempt.matches('{}')",
        exempt_names_pattern(form.id)
    )];
    if !mutator.mutable_fields_only {
        skip.push("request.operation != 'CREATE'".to_owned());
    }
    let namespaces: Vec<String> = policy
        .exemptions
        .iter()
        .filter(|e| e.rules.iter().any(|r| r == form.id))
        .flat_map(|e| e.namespaces.iter().cloned())
        .collect();
    if !namespaces.is_empty() {
        skip.push(format!("request.namespace in {}", list(&namespaces)));
    }
    format!(
        "{} ? [] : {}",
        skip.iter()
            .map(|s| format!("({s})"))
            .collect::<Vec<_>>()
            .join(" || "),
        (form.ops)(&policy.defaults)
    )
}

const POD: &str = "object.spec.template.spec";
const HAS_POD: &str =
    "has(object.spec) && has(object.spec.template) && has(object.spec.template.spec)";
const HAS_TEMPLATES: &str = "has(object.spec) && has(object.spec.volumeClaimTemplates)";

/// The containers, init containers first (read where `HAS_POD` holds).
fn containers() -> String {
    format!(
        "(has({POD}.initContainers) ? {POD}.initContainers : []) + \
         (has({POD}.containers) ? {POD}.containers : [])"
    )
}

/// The names the volumeMounts use, each as often as it is used. A mount or volume without a
/// name (which the API server fills in, as its types have no `omitempty` there) is passed over
/// rather than read, so that no expression can fail on it.
fn mount_names() -> String {
    format!(
        "{HAS_POD} ? ({}).map(c, has(c.volumeMounts) ? \
         c.volumeMounts.filter(m, has(m.name)).map(m, m.name) : []).flatten() : []",
        containers()
    )
}

/// The names that resolve a mount: pod volumes and named templates.
fn volume_names() -> String {
    format!(
        "({HAS_POD} && has({POD}.volumes) ? {POD}.volumes.filter(v, has(v.name))\
         .map(v, v.name) : []) + ({HAS_TEMPLATES} ? object.spec.volumeClaimTemplates.filter(t, \
         has(t.metadata) && has(t.metadata.name)).map(t, t.metadata.name) : [])"
    )
}

/// The names the volumeMounts use, the names that resolve them, and those that resolve to
/// nothing, each once, in order.
fn mount_variables() -> Vec<Variable> {
    vec![
        Variable {
            name: "mountNames".to_owned(),
            expression: mount_names(),
        },
        Variable {
            name: "volumeNames".to_owned(),
            expression: volume_names(),
        },
        Variable {
            name: "unresolved".to_owned(),
            expression: "variables.mountNames.filter(n, !(n in variables.volumeNames)).distinct()"
                .to_owned(),
        },
    ]
}

/// Above these sizes `inject_acts` does not look and says "could act": its cost is the mounts
/// times the names, which must stay well inside the API server's per-call CEL limit (an
/// evaluation that exceeds it fails, and skips the webhook under `failurePolicy: Ignore`).
/// 32 containers × 64 mounts × 128 names is 262,144 comparisons; real pods are far smaller.
pub(crate) const MOST_CONTAINERS: usize = 32;
pub(crate) const MOST_MOUNTS: usize = 64;
pub(crate) const MOST_NAMES: usize = 128;

/// Whether `inject` adds a template: `size(variables.unresolved) > 0` with the variables
/// written out, the volume names and the containers computed once (each bound by a
/// one-element list). Standard CEL only (no `flatten`), which every API server with
/// matchConditions (1.30+) compiles.
fn inject_acts() -> String {
    format!(
        "{HAS_POD} && [{}].exists(vs, [{}].exists(cs, size(vs) > {MOST_NAMES} || \
         size(cs) > {MOST_CONTAINERS} || cs.exists(c, has(c.volumeMounts) && \
         (size(c.volumeMounts) > {MOST_MOUNTS} || \
         c.volumeMounts.exists(m, has(m.name) && !(m.name in vs))))))",
        volume_names(),
        containers()
    )
}

/// `sts-inject-volume-claim-templates`: a template from the defaults for each unresolved
/// mount, appended to the list or as a new list.
fn inject(defaults: &Defaults) -> String {
    let d = &defaults.volume_claim_template;
    let mut spec = json!({
        "accessModes": d.access_modes,
        "resources": {"requests": {"storage": d.storage}},
    });
    if let Some(class) = &d.storage_class_name {
        spec["storageClassName"] = json!(class);
    }
    if let Some(mode) = &d.volume_mode {
        spec["volumeMode"] = json!(mode);
    }
    let template = format!(
        "{{'metadata': dyn({{'name': n}}), 'spec': dyn({})}}",
        json_literal(&spec)
    );
    format!(
        "size(variables.unresolved) == 0 ? [] : {HAS_TEMPLATES} ? \
         variables.unresolved.map(n, JSONPatch{{op: 'add', path: '/spec/volumeClaimTemplates/-', \
         value: {template}}}) : [JSONPatch{{op: 'add', path: '/spec/volumeClaimTemplates', value: \
         variables.unresolved.map(n, {template})}}]"
    )
}

/// What `complete` fills in a template `t`, each true when that part is missing: the whole
/// spec, accessModes, resources, resources.requests, the storage request. Each reads only what
/// the ones before it found present; `requests` maps to Quantities, which the API server's
/// type checker cannot type, so `resources` is read as dyn.
fn missing(t: &str) -> [String; 5] {
    let resources = format!("dyn({t}.spec.resources)");
    [
        format!("!has({t}.spec)"),
        format!("!has({t}.spec.accessModes) || size({t}.spec.accessModes) == 0"),
        format!("!has({t}.spec.resources)"),
        format!("!has({resources}.requests)"),
        format!("!('storage' in {resources}.requests)"),
    ]
}

/// `sts-complete-volume-claim-templates`: in each template, whatever of accessModes and
/// resources.requests.storage is missing, from the defaults.
fn complete(defaults: &Defaults) -> String {
    let d = &defaults.volume_claim_template;
    let t = "object.spec.volumeClaimTemplates[i]";
    let at = |rest: &str| format!("'/spec/volumeClaimTemplates/' + string(i) + '/spec{rest}'");
    let add = |rest: &str, value: &Value| {
        format!(
            "[JSONPatch{{op: 'add', path: {}, value: {}}}]",
            at(rest),
            json_literal(value)
        )
    };
    let storage = json!(d.storage);
    let [no_spec, no_modes, no_resources, no_requests, no_storage] = missing(t);
    let per_template = format!(
        "{no_spec} ? {whole} : ({no_modes} ? {modes} : []) + \
         ({no_resources} ? {res} : {no_requests} ? {req} : {no_storage} ? {sto} : [])",
        whole = add(
            "",
            &json!({"accessModes": d.access_modes, "resources": {"requests": {"storage": storage}}})
        ),
        modes = add("/accessModes", &json!(d.access_modes)),
        res = add("/resources", &json!({"requests": {"storage": storage}})),
        req = add("/resources/requests", &json!({"storage": storage})),
        sto = add("/resources/requests/storage", &storage),
    );
    format!(
        "{HAS_TEMPLATES} ? lists.range(size(object.spec.volumeClaimTemplates))\
         .map(i, {per_template}).flatten() : []"
    )
}

/// Whether `complete` fills anything: some template misses some part. `||` reads left to
/// right here as the ternaries above do, and CEL's `||` is true when one side is, whatever
/// error the other raises.
fn complete_acts() -> String {
    let parts = missing("t").map(|p| format!("({p})")).join(" || ");
    format!("{HAS_TEMPLATES} && object.spec.volumeClaimTemplates.exists(t, {parts})")
}

/// The `stsguard.io/mutated` record: the ids already there, trimmed, then each applied id not
/// among them, comma-separated; added where the object has annotations, or with them.
fn record_variables() -> Vec<Variable> {
    let key = lit(MUTATED);
    let escaped = MUTATED.replace('~', "~0").replace('/', "~1");
    vec![
        Variable {
            name: "recorded".to_owned(),
            expression: format!(
                "has(object.metadata) && has(object.metadata.annotations) && {key} in \
                 object.metadata.annotations ? object.metadata.annotations[{key}].split(',')\
                 .map(s, s.trim()).filter(s, s != '') : []"
            ),
        },
        Variable {
            name: "record".to_owned(),
            expression: format!(
                "size(variables.applied) == 0 ? [] : !has(object.metadata) ? \
                 [JSONPatch{{op: 'add', path: '/metadata', value: {{'annotations': {{{key}: \
                 {value}}}}}}}] : has(object.metadata.annotations) ? [JSONPatch{{op: 'add', \
                 path: '/metadata/annotations/{escaped}', value: {value}}}] : \
                 [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{{key}: \
                 {value}}}}}]",
                value = "(variables.recorded + variables.applied.filter(id, \
                         !(id in variables.recorded))).join(',')"
            ),
        },
    ]
}
