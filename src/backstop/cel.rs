//! The CEL form of each in-object rule case: an expression over an object (`object` or
//! `oldObject`) that is true when the case is violated, written to decide exactly what the
//! rule's Rust check decides.
//!
//! The expressions use only what Kubernetes documents for ValidatingAdmissionPolicy since 1.30
//! and what the `cel` crate evaluates too (the equivalence test runs them): field selection,
//! `has()`, `in`, `size()`, `all`/`exists`/`map`/`filter`, ternaries and `matches` (RE2 and the
//! `regex` crate agree on the patterns used here). No optional types, no string or list
//! extension functions, no clock.

use crate::rules::Settings;

/// One rule case with a CEL form.
pub(crate) struct CelForm {
    pub rule: &'static str,
    pub case: &'static str,
    /// Where, in the notation of the webhook's paths (`[*]`: any element).
    pub path: &'static str,
    /// What a violation is, for the validation's message.
    pub what: &'static str,
    /// The case's checks over an object root (`object`, `oldObject`): one expression per field
    /// path the Rust rule reports, each true when violated there.
    pub parts: fn(&str, &Settings) -> Vec<String>,
    /// Whether one part stands for many field paths (one per list element). UPDATE
    /// grandfathering then compares the case, not each path: an update is denied only when the
    /// old object had no violation of the case at all. The backstop may then admit an update
    /// that the webhook denies (a new element violating next to an old one), never the reverse.
    pub per_element: bool,
}

/// Every rule case the backstop enforces. A rule that is not `needs_lookup` must be here with
/// all its cases, or in [`super::LEFT_OUT`] with the reason (a unit test checks).
pub(crate) static FORMS: &[CelForm] = &[
    CelForm {
        rule: "sts-service-name",
        case: "default",
        path: "spec.serviceName",
        what: "spec.serviceName is missing or not a valid Service name (a DNS-1123 label: \
               lowercase letters, digits and '-', starting and ending with a letter or digit, at \
               most 63 characters)",
        parts: |o, _| {
            let name = format!("{o}.spec.serviceName");
            vec![format!(
                "!(has({o}.spec) && has({name}) && {})",
                service_name_valid(&name)
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-volume-claim-templates",
        case: "missing",
        path: "spec.volumeClaimTemplates",
        what: "no volumeClaimTemplates: the pods get no stable per-pod storage",
        parts: |o, _| {
            vec![format!(
                "!(has({o}.spec) && has({o}.spec.volumeClaimTemplates) && \
                 size({o}.spec.volumeClaimTemplates) > 0)"
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-volume-claim-templates",
        case: "incomplete",
        path: "spec.volumeClaimTemplates[*].spec",
        what: "a volumeClaimTemplate has no accessModes or no resources.requests.storage, so \
               its claims cannot be created",
        // `requests` is a map of Quantity, a schema with no type, so the API server's type
        // checker drops the field and warns "undefined field 'requests'" on every selection of
        // it (tests/backstop_types.rs); through `dyn()` it is selected at run time, as before.
        parts: |o, _| {
            let resources = "dyn(t.spec.resources)";
            vec![format!(
                "has({o}.spec) && has({o}.spec.volumeClaimTemplates) && \
                 {o}.spec.volumeClaimTemplates.exists(t, !has(t.spec) || \
                 !has(t.spec.accessModes) || size(t.spec.accessModes) == 0 || \
                 !has(t.spec.resources) || !has({resources}.requests) || \
                 !('storage' in {resources}.requests) || \
                 string({resources}.requests['storage']).matches('^{WS}*$'))"
            )]
        },
        per_element: true,
    },
    CelForm {
        rule: "sts-volume-mounts",
        case: "default",
        path: "spec.template.spec.containers[*].volumeMounts[*].name",
        what: "a container volumeMount names neither a pod volume nor a volumeClaimTemplate",
        parts: |o, _| {
            let pod = format!("{o}.spec.template.spec");
            vec![format!(
                "{} && (has({pod}.initContainers) ? {pod}.initContainers : []).exists(c, \
                 has(c.volumeMounts) && c.volumeMounts.exists(m, \
                 !(has({pod}.volumes) && {pod}.volumes.exists(v, v.name == m.name)) && \
                 !(has({o}.spec.volumeClaimTemplates) && \
                 {o}.spec.volumeClaimTemplates.exists(t, has(t.metadata) && \
                 has(t.metadata.name) && t.metadata.name == m.name)))) || {} && \
                 (has({pod}.containers) ? {pod}.containers : []).exists(c, \
                 has(c.volumeMounts) && c.volumeMounts.exists(m, \
                 !(has({pod}.volumes) && {pod}.volumes.exists(v, v.name == m.name)) && \
                 !(has({o}.spec.volumeClaimTemplates) && \
                 {o}.spec.volumeClaimTemplates.exists(t, has(t.metadata) && \
                 has(t.metadata.name) && t.metadata.name == m.name))))",
                has_pod(o),
                has_pod(o)
            )]
        },
        per_element: true,
    },
    CelForm {
        rule: "sts-selector-labels",
        case: "default",
        path: "spec.selector",
        what: "spec.selector is empty or does not select the pod template's labels \
               (spec.template.metadata.labels)",
        parts: |o, _| {
            let sel = format!("{o}.spec.selector");
            let labels = format!(
                "(has({o}.spec.template) && has({o}.spec.template.metadata) && \
                 has({o}.spec.template.metadata.labels) ? {o}.spec.template.metadata.labels : \
                 {{}})"
            );
            vec![format!(
                "has({o}.spec) && (!has({sel}) || \
                 (!has({sel}.matchLabels) || size({sel}.matchLabels) == 0) && \
                 (!has({sel}.matchExpressions) || size({sel}.matchExpressions) == 0) || \
                 has({sel}.matchLabels) && !{sel}.matchLabels.all(k, k in {labels} && \
                 {labels}[k] == {sel}.matchLabels[k]) || \
                 has({sel}.matchExpressions) && !{sel}.matchExpressions.all(r, \
                 r.operator == 'In' ? r.key in {labels} && has(r.values) && \
                 {labels}[r.key] in r.values : \
                 r.operator == 'NotIn' ? !(r.key in {labels}) || !has(r.values) || \
                 !({labels}[r.key] in r.values) : \
                 r.operator == 'Exists' ? r.key in {labels} : \
                 r.operator == 'DoesNotExist' ? !(r.key in {labels}) : false))"
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-readiness-probe",
        case: "default",
        path: "spec.template.spec.containers[*].readinessProbe",
        what: "a container in the pod template has no readinessProbe",
        parts: |o, _| {
            let pod = format!("{o}.spec.template.spec");
            vec![format!(
                "{} && has({pod}.containers) && {pod}.containers.exists(c, \
                 !has(c.readinessProbe))",
                has_pod(o)
            )]
        },
        per_element: true,
    },
    CelForm {
        rule: "sts-update-strategy",
        case: "default",
        path: "spec.updateStrategy.type",
        what: "spec.updateStrategy.type is OnDelete, so template changes reach pods only when \
               they are deleted by hand",
        parts: |o, _| {
            vec![format!(
                "has({o}.spec) && has({o}.spec.updateStrategy) && \
                 has({o}.spec.updateStrategy.type) && {o}.spec.updateStrategy.type == 'OnDelete'"
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-rolling-update-partition",
        case: "default",
        path: "spec.updateStrategy.rollingUpdate.partition",
        what: "spec.updateStrategy.rollingUpdate.partition is not below spec.replicas, so \
               template changes update no pod",
        parts: |o, _| {
            let p = format!("{o}.spec.updateStrategy.rollingUpdate.partition");
            vec![format!(
                "has({o}.spec) && has({o}.spec.updateStrategy) && \
                 has({o}.spec.updateStrategy.rollingUpdate) && has({p}) && {p} > 0 && \
                 {p} >= (has({o}.spec.replicas) ? {o}.spec.replicas : 1)"
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-termination-grace",
        case: "default",
        path: "spec.template.spec.terminationGracePeriodSeconds",
        what: "spec.template.spec.terminationGracePeriodSeconds is 0, so pods are force-killed \
               instead of stopping gracefully",
        parts: |o, _| {
            let grace = format!("{o}.spec.template.spec.terminationGracePeriodSeconds");
            vec![format!("{} && has({grace}) && {grace} == 0", has_pod(o))]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-pod-management-policy",
        case: "default",
        path: "spec.podManagementPolicy",
        what: "spec.podManagementPolicy is Parallel, so pods start and stop all at once, not \
               in order",
        parts: |o, _| {
            vec![format!(
                "has({o}.spec) && has({o}.spec.podManagementPolicy) && \
                 {o}.spec.podManagementPolicy == 'Parallel'"
            )]
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-vct-volatile-labels",
        case: "default",
        path: "spec.volumeClaimTemplates[*].metadata.labels",
        what: "a volumeClaimTemplate carries a label that changes on each release \
               (settings.volatileLabels); volumeClaimTemplates are immutable, so the next \
               upgrade will fail",
        parts: |o, settings| {
            if settings.volatile_labels.is_empty() {
                return vec!["false".to_owned()];
            }
            vec![format!(
                "has({o}.spec) && has({o}.spec.volumeClaimTemplates) && \
                 {o}.spec.volumeClaimTemplates.exists(t, has(t.metadata) && \
                 has(t.metadata.labels) && t.metadata.labels.exists(k, k in {}))",
                list(&settings.volatile_labels)
            )]
        },
        per_element: true,
    },
    CelForm {
        rule: "sts-pvc-retention",
        case: "default",
        path: "spec.persistentVolumeClaimRetentionPolicy",
        what: "persistentVolumeClaimRetentionPolicy whenDeleted or whenScaled is Delete, so \
               deleting or scaling down the StatefulSet deletes the pods' claims and their data",
        parts: |o, _| {
            ["whenDeleted", "whenScaled"]
                .map(|field| {
                    let policy = format!("{o}.spec.persistentVolumeClaimRetentionPolicy");
                    format!(
                        "has({o}.spec) && has({policy}) && has({policy}.{field}) && \
                         {policy}.{field} == 'Delete'"
                    )
                })
                .to_vec()
        },
        per_element: false,
    },
    CelForm {
        rule: "sts-pod-anti-affinity",
        case: "default",
        path: "spec.template.spec.affinity.podAntiAffinity",
        what: "more than one replica and no pod anti-affinity or topology spread constraints: \
               the replicas may all be scheduled on one node",
        parts: |o, _| {
            let pod = format!("{o}.spec.template.spec");
            vec![format!(
                "has({o}.spec) && (has({o}.spec.replicas) ? {o}.spec.replicas : 1) > 1 && \
                 !({has_pod} && has({pod}.affinity) && has({pod}.affinity.podAntiAffinity)) && \
                 !({has_pod} && has({pod}.topologySpreadConstraints) && \
                 size({pod}.topologySpreadConstraints) > 0)",
                has_pod = has_pod(o)
            )]
        },
        per_element: false,
    },
];

/// Whether the CEL string `name` is a valid Service name, as `src/rules/service_name.rs`
/// decides it: a DNS-1123 label, what API servers with RelaxedServiceNameValidation accept (the
/// larger set, so the backstop never denies a name the cluster takes).
pub(crate) fn service_name_valid(name: &str) -> String {
    format!("size({name}) <= 63 && {name}.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
}

/// Whether the pod template's spec is there to look at.
fn has_pod(o: &str) -> String {
    format!("has({o}.spec) && has({o}.spec.template) && has({o}.spec.template.spec)")
}

/// The characters Rust's `str::trim` removes (Unicode White_Space), as an RE2 class; written
/// with `\\x{..}` escapes inside a CEL string literal.
pub(crate) const WS: &str = "[\\\\x{9}-\\\\x{D}\\\\x{20}\\\\x{85}\\\\x{A0}\\\\x{1680}\
                             \\\\x{2000}-\\\\x{200A}\\\\x{2028}\\\\x{2029}\\\\x{202F}\\\\x{205F}\
                             \\\\x{3000}]";

/// A CEL string literal.
pub(crate) fn lit(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL list of string literals.
pub(crate) fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| lit(i)).collect();
    format!("[{}]", items.join(", "))
}

/// A regex alternative matching exactly one of `ids` (kebab-case, so nothing to escape but
/// kept safe anyway).
fn alternatives<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let escaped: Vec<String> = ids
        .into_iter()
        .map(|id| {
            id.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c.to_string()
                    } else {
                        format!("\\\\x{{{:X}}}", u32::from(c))
                    }
                })
                .collect()
        })
        .collect();
    escaped.join("|")
}

/// A CEL pattern (the body of a string literal) matching an `stsguard.io/exempt` value that
/// applies: every comma-separated item, trimmed, is empty, `*` or a known id. Any other item
/// voids the whole annotation, as `src/exemption.rs` decides.
pub(crate) fn exempt_valid_pattern<'a>(known: impl IntoIterator<Item = &'a str>) -> String {
    let item = format!("{WS}*(\\\\*|{})?{WS}*", alternatives(known));
    format!("^{item}(,{item})*$")
}

/// A CEL pattern matching an `stsguard.io/exempt` value that names `id` or `*`.
pub(crate) fn exempt_covers_pattern(id: &str) -> String {
    format!("(^|,){WS}*(\\\\*|{}){WS}*(,|$)", alternatives([id]))
}

/// A CEL pattern matching an `stsguard.io/exempt` value that names `id` itself (`*` does not
/// cover mutators).
pub(crate) fn exempt_names_pattern(id: &str) -> String {
    format!("(^|,){WS}*({}){WS}*(,|$)", alternatives([id]))
}

/// A JSON value as a CEL literal. Map values are wrapped in `dyn()`: the API server's type
/// checker wants the entries of a literal to be of one type, and `{'a': [..], 'b': {..}}` are
/// not.
pub(crate) fn json_literal(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lit(s),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(json_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: dyn({})", lit(k), json_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
