//! The offline audit: the webhook's admission chain over manifests. Each StatefulSet is mutated
//! as the mutating webhook would on CREATE, then every StatefulSet and Service is evaluated with
//! the same `evaluate` the validating webhook uses, with cross-object facts taken from the
//! manifests themselves.

use std::sync::Arc;

use jiff::civil::Date;
use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy},
    core::v1::Service,
};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    evaluate::{Input, Outcome, Verdict, evaluate},
    lookup::{InMemory, Lookup, NoLookup},
    manifest::{Document, InputError, Loaded, Source},
    mutate::{self, mutate_statefulset},
    policy::{Lookups, Policy},
    rules::{Action, Target},
    subject::Subject,
};

/// A document stsguard judges, typed.
#[derive(Clone, Debug)]
pub enum Object {
    StatefulSet(Arc<StatefulSet>),
    Service(Arc<Service>),
}

impl Object {
    pub fn subject(&self) -> Subject<'_> {
        match self {
            Object::StatefulSet(s) => Subject::StatefulSet(s),
            Object::Service(s) => Subject::Service(s),
        }
    }
}

/// What a document is to stsguard.
pub enum Classified {
    Object(Object),
    /// A StatefulSet of a removed beta API version, read as apps/v1.
    Legacy(Object, String),
    /// Another kind; read (it may matter to nobody) and skipped.
    Other,
    Invalid(String),
}

/// StatefulSet API versions read as `apps/v1`; the old beta ones still appear in repositories.
const STATEFULSET_VERSIONS: &[&str] = &["apps/v1", "apps/v1beta2", "apps/v1beta1"];

/// Reads a document's apiVersion and kind and deserializes what stsguard checks.
pub fn classify(value: &Value) -> Classified {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "StatefulSet" if STATEFULSET_VERSIONS.contains(&api_version) => {
            let read = if api_version == "apps/v1" {
                StatefulSet::deserialize(value)
            } else {
                // The typed StatefulSet accepts only apps/v1; the beta versions' fields read the
                // same.
                let mut value = value.clone();
                value["apiVersion"] = Value::from("apps/v1");
                StatefulSet::deserialize(value)
            };
            match read {
                Ok(sts) if api_version == "apps/v1" => {
                    Classified::Object(Object::StatefulSet(Arc::new(sts)))
                }
                Ok(sts) => Classified::Legacy(
                    Object::StatefulSet(Arc::new(sts)),
                    format!(
                        "{api_version} is no longer served (removed in Kubernetes 1.16); audited \
                         as apps/v1, which also requires spec.selector"
                    ),
                ),
                Err(e) => {
                    Classified::Invalid(format!("not a valid {api_version} StatefulSet: {e}"))
                }
            }
        }
        "Service" if api_version == "v1" => {
            match serde_json::from_value::<Service>(value.clone()) {
                Ok(svc) => Classified::Object(Object::Service(Arc::new(svc))),
                Err(e) => Classified::Invalid(format!("not a valid v1 Service: {e}")),
            }
        }
        _ => Classified::Other,
    }
}

/// The audit of one object.
#[derive(Clone, Debug)]
pub struct ObjectResult {
    pub source: Source,
    pub api_version: String,
    pub target: Target,
    pub namespace: String,
    pub name: String,
    /// Mutators the mutating webhook would have applied before validation.
    pub mutated_by: Vec<&'static str>,
    pub verdict: Verdict,
}

impl ObjectResult {
    /// The strongest level among the violations: deny for what the webhook would reject.
    pub fn level(&self) -> Option<Action> {
        self.verdict
            .violations
            .iter()
            .map(|v| level(&v.outcome))
            .max()
    }
}

/// How a violation counts for `--fail-on`: only what the webhook would reject is deny-level.
pub fn level(outcome: &Outcome) -> Action {
    match outcome {
        Outcome::Denied => Action::Deny,
        _ => Action::Warn,
    }
}

/// The audit of all inputs.
#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    pub results: Vec<ObjectResult>,
    pub errors: Vec<InputError>,
    /// Documents of other kinds.
    pub skipped_documents: usize,
    /// Things about the input as a whole, such as an object defined twice.
    pub notes: Vec<String>,
}

impl AuditReport {
    /// Whether any violation is at or above `fail_on`.
    pub fn fails(&self, fail_on: Action) -> bool {
        fail_on != Action::Off && self.results.iter().any(|r| r.level() >= Some(fail_on))
    }
}

/// Audits loaded manifests. Objects without a namespace are taken to be in `namespace`.
pub fn audit(loaded: &Loaded, policy: &Policy, namespace: &str, today: Date) -> AuditReport {
    let mut report = AuditReport {
        errors: loaded.errors.clone(),
        ..AuditReport::default()
    };
    // Each object with the mutators applied to it and a note about its API version, if any.
    let classified = crate::parallel::map(&loaded.documents, |doc| {
        let (object, note) = match classify(&doc.value) {
            Classified::Object(object) => (object, None),
            Classified::Legacy(object, note) => (object, Some(note)),
            other => return Err(other),
        };
        let ns = namespace_of(&object, namespace);
        let (object, mutated_by) = admit(object, &doc.value, &ns, policy, today);
        Ok((object, mutated_by, note))
    });
    let mut objects: Vec<(&Document, Object, Vec<&'static str>, Option<String>)> = Vec::new();
    for (doc, classified) in loaded.documents.iter().zip(classified) {
        match classified {
            Ok((object, mutated_by, note)) => objects.push((doc, object, mutated_by, note)),
            Err(Classified::Invalid(message)) => report.errors.push(InputError {
                file: doc.source.file.clone(),
                line: Some(doc.source.line),
                column: None,
                message,
            }),
            Err(_) => report.skipped_documents += 1,
        }
    }

    let mut seen: std::collections::HashMap<(Target, String, String), &Source> =
        std::collections::HashMap::new();
    for (doc, object, _, _) in &objects {
        let subject = object.subject();
        let key = (
            subject.target(),
            namespace_of(object, namespace),
            subject.display_name().to_owned(),
        );
        if let Some(first) = seen.insert(key.clone(), &doc.source) {
            report.notes.push(format!(
                "{} {}/{} is defined more than once ({first} and {}); cross-object checks use the last",
                key.0.kind(),
                key.1,
                key.2,
                doc.source
            ));
        }
    }

    let mut facts = InMemory::new();
    for (_, object, _, _) in &objects {
        match object {
            Object::StatefulSet(s) => facts.add_statefulset(namespace, s.clone()),
            Object::Service(s) => facts.add_service(namespace, s.clone()),
        }
    }
    let lookup: &dyn Lookup = match policy.lookups {
        Lookups::Auto => &facts,
        Lookups::Off => &NoLookup,
    };

    report.results = crate::parallel::map(&objects, |(doc, object, mutated_by, note)| {
        let subject = object.subject();
        let ns = namespace_of(object, namespace);
        let input = Input {
            subject,
            old: None,
            namespace: &ns,
        };
        let mut verdict = evaluate(&input, lookup, policy, today);
        verdict.notes.extend(note.clone());
        ObjectResult {
            source: doc.source.clone(),
            api_version: doc.value["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            target: subject.target(),
            name: subject.display_name().to_owned(),
            namespace: ns,
            mutated_by: mutated_by.clone(),
            verdict,
        }
    });
    report
}

fn namespace_of(object: &Object, default: &str) -> String {
    object
        .subject()
        .metadata()
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Applies what the mutating webhook would on CREATE; returns the object as the validating
/// webhook would see it, and the mutators that changed it.
fn admit(
    object: Object,
    value: &Value,
    namespace: &str,
    policy: &Policy,
    today: Date,
) -> (Object, Vec<&'static str>) {
    let Object::StatefulSet(sts) = object else {
        return (object, vec![]);
    };
    // The API server defaults the retention policy before any webhook sees the object.
    let defaulted = sts
        .spec
        .as_ref()
        .is_some_and(|s| s.persistent_volume_claim_retention_policy.is_none());
    let retain = || serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
    let sts = if defaulted {
        let mut sts = Arc::unwrap_or_clone(sts);
        if let Some(spec) = sts.spec.as_mut() {
            spec.persistent_volume_claim_retention_policy =
                Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                });
        }
        Arc::new(sts)
    } else {
        sts
    };
    let mutation = mutate_statefulset(&sts, namespace, mutate::Operation::Create, policy, today);
    if mutation.is_empty() {
        return (Object::StatefulSet(sts), vec![]);
    }
    let mut patched = value.clone();
    if defaulted && let Some(spec) = patched.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("persistentVolumeClaimRetentionPolicy".into(), retain());
    }
    let applied = json_patch::patch(&mut patched, &mutation.patch)
        .ok()
        .and_then(|()| serde_json::from_value::<StatefulSet>(patched).ok());
    match applied {
        Some(mutated) => (Object::StatefulSet(Arc::new(mutated)), mutation.applied),
        // A patch that does not apply to its own object would be a mutator bug; judge the
        // object as written rather than lose it.
        None => (Object::StatefulSet(sts), vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_into;

    fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    fn run(text: &str, policy: &Policy) -> AuditReport {
        let mut loaded = Loaded::default();
        parse_into(&mut loaded, "m.yaml", text, false);
        audit(&loaded, policy, "default", today())
    }

    const STS: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: nginx
          readinessProbe: {tcpSocket: {port: 80}}
          volumeMounts: [{name: data, mountPath: /data}]
";

    const HEADLESS: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: None, selector: {app: web}}
";

    #[test]
    fn the_service_in_the_input_is_the_governing_service() {
        let report = run(&format!("{STS}---\n{HEADLESS}"), &Policy::builtin());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.results.len(), 2);
        let sts = &report.results[0];
        // The mutating webhook would inject the template for the `data` mount first; the
        // retention policy is defaulted by the API server before webhooks run.
        assert_eq!(sts.mutated_by, ["sts-inject-volume-claim-templates"]);
        assert!(
            sts.verdict.violations.is_empty(),
            "{:?}",
            sts.verdict.violations
        );
        assert_eq!(sts.source.line, 1);
        assert_eq!(report.results[1].source.line, 16);
    }

    #[test]
    fn a_missing_or_cluster_ip_service_is_reported() {
        let alone = run(STS, &Policy::builtin());
        assert_eq!(
            alone.results[0].verdict.rule_ids(),
            ["sts-governing-service-exists"]
        );
        let cluster_ip = HEADLESS.replace("clusterIP: None", "clusterIP: 10.0.0.1");
        let report = run(&format!("{STS}---\n{cluster_ip}"), &Policy::builtin());
        assert_eq!(
            report.results[0].verdict.rule_ids(),
            ["sts-governing-service-headless"]
        );
        assert_eq!(
            report.results[1].verdict.rule_ids(),
            ["svc-headless-for-statefulset"]
        );
        assert!(report.fails(Action::Deny));
    }

    #[test]
    fn other_kinds_are_skipped_and_invalid_objects_are_errors() {
        let report = run(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
             apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicas: many}\n",
            &Policy::builtin(),
        );
        assert_eq!(report.skipped_documents, 1);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, Some(5));
        assert!(
            report.errors[0]
                .message
                .contains("not a valid apps/v1 StatefulSet")
        );
    }

    #[test]
    fn an_object_defined_twice_is_noted() {
        let report = run(&format!("{HEADLESS}---\n{HEADLESS}"), &Policy::builtin());
        assert_eq!(report.notes.len(), 1);
        assert!(
            report.notes[0]
                .contains("Service default/web is defined more than once (m.yaml:1 and m.yaml:6)"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn beta_statefulsets_are_audited_as_apps_v1_with_a_note() {
        let beta = STS.replace("apps/v1", "apps/v1beta1");
        let report = run(&beta, &Policy::builtin());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.results[0].verdict.notes[0].contains("apps/v1beta1 is no longer served"));
        assert_eq!(report.results[0].api_version, "apps/v1beta1");
    }

    #[test]
    fn lookups_off_skips_cross_object_rules() {
        let policy = Policy::from_yaml("lookups: off", "t").unwrap();
        let report = run(STS, &policy);
        assert!(report.results[0].verdict.violations.is_empty());
        assert!(
            report.results[0]
                .verdict
                .skipped
                .contains(&"sts-governing-service-exists")
        );
    }
}
