//! What lets `stsguard audit` stream its inputs instead of holding every parsed document:
//! the streamed audit reports exactly what the audit of loaded documents reports, and the part of
//! a StatefulSet kept as a cross-object fact (`statefulset_fact`) gives the Service-side rules and
//! mutators the same answers as the whole StatefulSet.

mod support;

use std::{path::PathBuf, sync::Arc};

use jiff::civil::Date;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use serde_json::{Value, json};
use stsguard::{
    admit::{self, Chain, Classified},
    audit::{audit, audit_inputs, statefulset_fact},
    lookup::InMemory,
    manifest::{self, Loaded},
    mutate::MUTATORS,
    policy::Policy,
    subject::{self, Object, Operation},
};
use support::properties::{corpus, repo};

fn today() -> Date {
    "2026-06-15".parse().unwrap()
}

/// The built-in policy, and every rule and mutator on.
fn policies() -> Vec<Policy> {
    let mutators: String = MUTATORS
        .iter()
        .map(|m| format!("{}: true, ", m.id))
        .collect();
    let every = Policy::from_yaml(
        &format!(
            "rules: {{sts-pod-management-policy: warn, sts-pod-anti-affinity: deny, \
             svc-publish-not-ready: warn}}\nmutators: {{{mutators}}}"
        ),
        "everything on",
    )
    .unwrap();
    vec![Policy::builtin(), every]
}

fn streamed(inputs: &[PathBuf], policy: &Policy) -> (String, usize) {
    let (mut errors, mut notes) = (Vec::new(), Vec::new());
    let read = manifest::read_inputs(inputs, &[], &mut std::io::empty(), &mut errors, &mut notes);
    let (report, documents) = audit_inputs(read, errors, notes, policy, "default", today());
    (format!("{report:#?}"), documents)
}

fn loaded(inputs: &[PathBuf], policy: &Policy) -> (String, usize) {
    let loaded = manifest::load(inputs, &mut std::io::empty());
    let report = audit(&loaded, policy, "default", today());
    (format!("{report:#?}"), loaded.documents.len())
}

/// Every corpus file alone, and the whole corpus at once (cross-object facts across files, the
/// proximity rules, collisions, invalid documents, lists, JSON): the same report, in the same
/// order, and the same count of documents.
#[test]
fn the_streamed_audit_reports_what_the_loaded_audit_reports() {
    let mut inputs: Vec<Vec<PathBuf>> = corpus()
        .iter()
        .map(|(path, _)| vec![PathBuf::from(path)])
        .collect();
    inputs.push(vec![repo("tests/fixtures/corpus")]);
    for policy in policies() {
        for input in &inputs {
            assert_eq!(
                streamed(input, &policy),
                loaded(input, &policy),
                "{input:?}"
            );
        }
    }
}

/// Services that a StatefulSet names, in the shapes the Service-side rules and mutators tell
/// apart: headless and selecting its pods, with a cluster IP and another selector, without a
/// selector as a NodePort, and without a cluster IP (which `svc-make-headless` fills in).
fn services_for(sts: &StatefulSet, namespace: &str) -> Vec<Service> {
    let Some(name) = subject::governing_service(sts) else {
        return vec![];
    };
    let labels = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let metadata = json!({"name": name, "namespace": namespace});
    [
        json!({"clusterIP": "None", "selector": labels}),
        json!({"clusterIP": "10.0.0.9", "selector": {"app": "other"}}),
        json!({"type": "NodePort"}),
        json!({"selector": labels, "ports": [{"port": 1}]}),
    ]
    .into_iter()
    .map(|spec| {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
                                      "metadata": metadata, "spec": spec}))
        .unwrap()
    })
    .collect()
}

/// For every StatefulSet of the corpus and every Service shape it could be governed by (and the
/// corpus's own Services), the Service's mutation and verdict with the StatefulSets as facts are
/// the same whether the facts hold the whole StatefulSets or only `statefulset_fact` of them.
#[test]
fn statefulset_facts_answer_as_the_whole_statefulsets() {
    let mut statefulsets: Vec<(String, Arc<StatefulSet>)> = Vec::new();
    let mut services: Vec<(String, Service)> = Vec::new();
    for (path, text) in corpus() {
        let mut loaded = Loaded::default();
        manifest::parse_into(&mut loaded, path, text, path.ends_with(".json"));
        for doc in &loaded.documents {
            let object = match admit::classify(&doc.value) {
                Classified::Object(object) | Classified::Legacy(object, _) => object,
                _ => continue,
            };
            let ns = subject::namespace(object.subject().metadata(), "default").to_owned();
            match admit::default(object) {
                Object::StatefulSet(sts) => statefulsets.push((ns, sts)),
                Object::Service(svc) => services.push((ns, svc.as_ref().clone())),
            }
        }
    }
    for (ns, sts) in &statefulsets {
        services.extend(services_for(sts, ns).into_iter().map(|s| (ns.clone(), s)));
    }
    assert!(statefulsets.len() >= 20 && services.len() >= 80);

    let mut whole = InMemory::new();
    let mut facts = InMemory::new();
    for (ns, sts) in &statefulsets {
        whole.add_statefulset(ns, sts.clone());
        facts.add_statefulset(ns, statefulset_fact(sts));
    }
    let mut judged = 0;
    for policy in policies() {
        for (ns, svc) in &services {
            let admit = |lookup: &InMemory| {
                let chain = Chain {
                    policy: &policy,
                    lookup,
                    today: today(),
                };
                let admitted = chain.admit(
                    Operation::Create,
                    ns,
                    Object::Service(Arc::new(svc.clone())),
                    None,
                );
                format!("{:#?}\n{:#?}", admitted.mutation, admitted.verdict)
            };
            let answer = admit(&whole);
            assert_eq!(answer, admit(&facts), "{ns}/{:?}", svc.metadata.name);
            judged += usize::from(answer.contains("svc-"));
        }
    }
    // Not vacuous: Service-side rules and mutators do fire on these.
    assert!(
        judged >= 40,
        "only {judged} answers name a Service rule or mutator"
    );
}

/// The fact keeps only what it names: a StatefulSet with everything set shrinks to its name,
/// namespace, serviceName, selector, template labels and container ports.
#[test]
fn a_statefulset_fact_keeps_only_what_other_objects_read() {
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "ns", "labels": {"a": "b"},
                     "annotations": {"x": "y"}},
        "spec": {"serviceName": "db", "replicas": 3,
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"z": "1"}},
                              "spec": {"containers": [{"name": "c", "image": "i",
                                                       "ports": [{"containerPort": 5432}],
                                                       "env": [{"name": "E", "value": "v"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}
    }))
    .unwrap();
    let fact: Value = serde_json::to_value(statefulset_fact(&sts)).unwrap();
    assert_eq!(
        fact,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "c",
                                                           "ports": [{"containerPort": 5432}]}]}}}
        })
    );
}
