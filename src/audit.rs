//! The offline audit: the webhook's admission chain (`admit`) over manifests, each object as a
//! CREATE, with cross-object facts taken from the manifests themselves (by proximity, see
//! [`ManifestFacts`]).

use jiff::civil::Date;
use json_patch::PatchOperation;

use crate::{
    admit::{Chain, Request},
    evaluate::{Outcome, Verdict},
    lookup::{Lookup, NoLookup},
    manifest::{self, Input, InputError, Loaded, Source},
    policy::{Lookups, Policy},
    rules::{Action, Target},
    subject::Operation,
};

mod facts;
mod read;

pub use facts::ManifestFacts;
use read::{Compact, Entry, Read};

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
    /// The mutating webhook's patch, against the object as written.
    pub patch: Vec<PatchOperation>,
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

/// An object on its way through the chain: as read, then (after the mutation step) as it would
/// be stored, with the mutation.
struct Staged {
    entry: Entry,
    mutated_by: Vec<&'static str>,
    patch: Vec<PatchOperation>,
}

/// Audits loaded manifests. Objects without a namespace are taken to be in `namespace`.
pub fn audit(loaded: &Loaded, policy: &Policy, namespace: &str, today: Date) -> AuditReport {
    let reads = crate::parallel::map(&loaded.documents, |doc| {
        read::read(&doc.source, &doc.text, &doc.value, namespace)
    });
    judge(
        reads,
        loaded.errors.clone(),
        loaded.notes.clone(),
        policy,
        today,
    )
}

/// The audit of inputs as read (`errors` and `notes` from reading them), without holding their
/// parsed documents: each document is parsed, classified and kept compactly on the thread that
/// parsed it, and each input's text is let go once its documents are read. Returns the report and
/// how many documents there were.
pub fn audit_inputs(
    inputs: Vec<Input>,
    mut errors: Vec<InputError>,
    notes: Vec<String>,
    policy: &Policy,
    namespace: &str,
    today: Date,
) -> (AuditReport, usize) {
    let mut reads = Vec::new();
    for input in inputs {
        let pieces = manifest::pieces_read(
            &input.file,
            &input.text,
            input.json,
            &mut errors,
            |source, text, value| read::read_parsed(source, text, value, namespace),
        );
        reads.extend(pieces.into_iter().filter_map(|p| p.value).flatten());
    }
    let documents = reads.len();
    let report = judge(reads, errors, notes, policy, today);
    (report, documents)
}

/// The chain's steps over all objects at once: mutation sees the objects as written (a Service
/// mutator asks which StatefulSets name it), evaluation sees them as they would be stored (a
/// StatefulSet is judged against its Service after that Service's mutation).
fn judge(
    reads: Vec<Read>,
    errors: Vec<InputError>,
    notes: Vec<String>,
    policy: &Policy,
    today: Date,
) -> AuditReport {
    let mut report = AuditReport {
        errors,
        ..AuditReport::default()
    };
    let mut entries = Vec::new();
    for read in reads {
        match read {
            Read::Object(entry) => entries.push(entry),
            Read::Invalid(error) => report.errors.push(error),
            Read::Other => report.skipped_documents += 1,
        }
    }

    let written = index(entries.iter());
    report.notes = notes;
    report.notes.extend(written.collisions());
    let mutated = crate::parallel::map(&entries, |entry| {
        let near = written.near(&entry.source.file);
        let object = entry.object.object()?;
        let (object, mutation) =
            chain(policy, &near, today).mutated(Operation::Create, &entry.namespace, object, None);
        let stored = if mutation.is_empty() {
            None
        } else {
            Some(Compact::of(object, &entry.namespace)?)
        };
        Ok::<_, String>((stored, mutation))
    });
    drop(written);
    let mut staged = Vec::with_capacity(entries.len());
    for (mut entry, mutated) in entries.into_iter().zip(mutated) {
        match mutated {
            Ok((stored, mutation)) => {
                if let Some(stored) = stored {
                    entry.object = stored;
                }
                staged.push(Staged {
                    entry,
                    mutated_by: mutation.applied,
                    patch: mutation.patch,
                });
            }
            Err(message) => report.errors.push(internal(&entry.source, message)),
        }
    }

    let stored = index(staged.iter().map(|s| &s.entry));
    let judged = crate::parallel::map(&staged, |staged| {
        let entry = &staged.entry;
        let near = stored.near(&entry.source.file);
        let object = entry.object.object()?;
        let subject = object.subject();
        let mut verdict = chain(policy, &near, today).validate(&Request {
            operation: Operation::Create,
            namespace: &entry.namespace,
            object: subject,
            old: None,
        });
        verdict.notes.extend(entry.note.clone());
        Ok::<_, String>(ObjectResult {
            source: entry.source.clone(),
            api_version: entry.api_version.clone(),
            target: subject.target(),
            name: subject.display_name().to_owned(),
            namespace: entry.namespace.clone(),
            mutated_by: staged.mutated_by.clone(),
            patch: staged.patch.clone(),
            verdict,
        })
    });
    for (staged, judged) in staged.iter().zip(judged) {
        match judged {
            Ok(result) => report.results.push(result),
            Err(message) => report.errors.push(internal(&staged.entry.source, message)),
        }
    }
    report
}

/// The cross-object facts of `entries`, as the other objects' checks see them.
fn index<'a>(entries: impl Iterator<Item = &'a Entry>) -> ManifestFacts {
    ManifestFacts::of_definitions(entries.map(|e| (&e.source, &e.object.fact)))
}

/// An object the audit lost on the way (a bug, never the input's fault).
fn internal(source: &Source, message: String) -> InputError {
    InputError {
        file: source.file.clone(),
        line: Some(source.line),
        column: None,
        message: format!("{message}; please report this"),
    }
}

/// The chain with the policy's lookups: the manifests' facts, or none with `lookups: off`.
fn chain<'a>(policy: &'a Policy, facts: &'a dyn Lookup, today: Date) -> Chain<'a> {
    let lookup: &dyn Lookup = match policy.lookups {
        Lookups::Auto => facts,
        Lookups::Off => &NoLookup,
    };
    Chain {
        policy,
        lookup,
        today,
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
        // The mutating webhook would inject the template for the `data` mount first.
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
    fn a_file_mode_written_in_octal_reads_as_kubectl_reads_it() {
        let with_mode = STS.replace(
            "          volumeMounts: [{name: data, mountPath: /data}]\n",
            "          volumeMounts: [{name: data, mountPath: /data}, {name: conf, mountPath: /c}]\n      \
             volumes: [{name: conf, configMap: {name: web, defaultMode: 0644}}]\n",
        );
        assert!(with_mode.contains("defaultMode: 0644"));
        let report = run(&format!("{with_mode}---\n{HEADLESS}"), &Policy::builtin());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.results.len(), 2);
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
        // The line of the field, as far as it can be told: `replicas` is in `spec`'s flow map.
        assert_eq!(report.errors[0].line, Some(8));
        assert!(
            report.errors[0]
                .message
                .contains("not a valid apps/v1 StatefulSet: spec.replicas:")
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
    fn a_service_made_headless_by_the_mutator_is_admitted_as_by_the_webhook() {
        let plain = HEADLESS.replace("clusterIP: None, ", "");
        let policy = Policy::from_yaml("mutators: {svc-make-headless: true}", "t").unwrap();
        let report = run(&format!("{STS}---\n{plain}"), &policy);
        assert_eq!(report.results[1].mutated_by, ["svc-make-headless"]);
        for result in &report.results {
            assert!(result.verdict.violations.is_empty(), "{:?}", result.verdict);
        }
        let report = run(&format!("{STS}---\n{plain}"), &Policy::builtin());
        assert!(report.fails(Action::Deny));
    }

    #[test]
    fn unrelated_apps_in_one_directory_keep_their_own_verdicts() {
        // App b's ClusterIP Service `web` must still deny its StatefulSet although app a, read
        // later, defines a headless Service of the same name.
        let mut loaded = Loaded::default();
        let cluster_ip = HEADLESS.replace("clusterIP: None", "clusterIP: 10.0.0.1");
        parse_into(
            &mut loaded,
            "apps/b/all.yaml",
            &format!("{STS}---\n{cluster_ip}"),
            false,
        );
        parse_into(
            &mut loaded,
            "apps/a/all.yaml",
            &format!("{STS}---\n{HEADLESS}"),
            false,
        );
        let together = audit(&loaded, &Policy::builtin(), "default", today());
        let ids: Vec<_> = together
            .results
            .iter()
            .map(|r| r.verdict.rule_ids())
            .collect();
        assert_eq!(
            ids,
            [
                vec!["sts-governing-service-headless"],
                vec!["svc-headless-for-statefulset"],
                vec![],
                vec![]
            ]
        );
        assert_eq!(together.notes.len(), 2, "{:?}", together.notes);
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
