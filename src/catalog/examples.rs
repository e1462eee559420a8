//! An example violation of every rule, for `stsguard rules <id>`: a StatefulSet (and its
//! governing Service) that passes everything, changed in one place, then judged by the chain.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{
    admit::{Chain, Classified, classify},
    evaluate::Violation,
    lookup::InMemory,
    policy::Policy,
    subject::{Object, Operation},
    time::today,
};

/// The changes (JSON pointer, new value; `null` removes) that make the example violate a rule,
/// and whether they apply to the StatefulSet or the Service (the rule's own kind judges).
fn changes(rule: &str) -> Option<(Kind, Vec<(&'static str, Value)>)> {
    use Kind::{Service, StatefulSet};
    let probe = "/spec/template/spec/containers/0";
    Some(match rule {
        "sts-service-name" => (StatefulSet, vec![("/spec/serviceName", Value::Null)]),
        "sts-volume-claim-templates" => (
            StatefulSet,
            vec![("/spec/volumeClaimTemplates/0/spec/accessModes", Value::Null)],
        ),
        "sts-volume-mounts" => (
            StatefulSet,
            vec![(
                "/spec/template/spec/containers/0/volumeMounts/1",
                json!({"name": "logs", "mountPath": "/logs"}),
            )],
        ),
        "sts-selector-labels" => (
            StatefulSet,
            vec![("/spec/selector/matchLabels", json!({"app": "db"}))],
        ),
        "sts-readiness-probe" => (StatefulSet, vec![(probe, Value::Null)]),
        "sts-update-strategy" => (
            StatefulSet,
            vec![("/spec/updateStrategy", json!({"type": "OnDelete"}))],
        ),
        "sts-rolling-update-partition" => (
            StatefulSet,
            vec![(
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3}}),
            )],
        ),
        "sts-termination-grace" => (
            StatefulSet,
            vec![(
                "/spec/template/spec/terminationGracePeriodSeconds",
                json!(0),
            )],
        ),
        "sts-pod-management-policy" => (
            StatefulSet,
            vec![("/spec/podManagementPolicy", json!("Parallel"))],
        ),
        "sts-vct-volatile-labels" => (
            StatefulSet,
            vec![(
                "/spec/volumeClaimTemplates/0/metadata/labels",
                json!({"helm.sh/chart": "web-1.2.3"}),
            )],
        ),
        "sts-pvc-retention" => (
            StatefulSet,
            vec![(
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Delete", "whenScaled": "Retain"}),
            )],
        ),
        "sts-pod-anti-affinity" => (StatefulSet, vec![("/spec/replicas", json!(3))]),
        "sts-governing-service-headless" | "svc-headless-for-statefulset" => {
            (Service, vec![("/spec/clusterIP", json!("10.96.0.10"))])
        }
        "sts-governing-service-exists" => (StatefulSet, vec![("/spec/serviceName", json!("www"))]),
        "sts-governing-service-selector" => {
            (Service, vec![("/spec/selector", json!({"app": "db"}))])
        }
        "svc-governing-type" => (Service, vec![("/spec/type", json!("NodePort"))]),
        "svc-publish-not-ready" => (
            Service,
            vec![("/spec/publishNotReadyAddresses", Value::Null)],
        ),
        "svc-delete-governing-service" => (Service, vec![]),
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    StatefulSet,
    Service,
}

fn statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "serviceName": "web", "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "nginx",
                    "readinessProbe": {"tcpSocket": {"port": 80}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                }]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"},
                 "publishNotReadyAddresses": true, "ports": [{"port": 80}]}
    })
}

fn change(value: &mut Value, pointer: &str, new: &Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let Some(parent) = value.pointer_mut(parent) else {
        return;
    };
    match (parent, new) {
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), new) => {
            map.insert(key.to_owned(), new.clone());
        }
        (Value::Array(items), new) => match key.parse::<usize>() {
            Ok(i) if i < items.len() => items[i] = new.clone(),
            _ => items.push(new.clone()),
        },
        _ => {}
    }
}

/// An example of the rule violated: the object that violates it, as YAML, and the violations of
/// that rule the chain finds in it (every rule on, every mutator off, so nothing is fixed first).
pub fn example(rule: &str) -> Option<(String, Vec<Violation>)> {
    let (kind, edits) = changes(rule)?;
    let (mut sts, mut svc) = (statefulset(), service());
    let target = if kind == Kind::StatefulSet {
        &mut sts
    } else {
        &mut svc
    };
    for (pointer, new) in &edits {
        change(target, pointer, new);
    }
    let object = |value: &Value| match classify(value) {
        Classified::Object(object) => Some(object),
        _ => None,
    };
    let (sts_object, svc_object) = (object(&sts)?, object(&svc)?);
    let mut facts = InMemory::new();
    if let Object::StatefulSet(s) = &sts_object {
        facts.add_statefulset("default", Arc::clone(s));
    }
    if let Object::Service(s) = &svc_object {
        facts.add_service("default", Arc::clone(s));
    }
    let policy = strict_without_mutators().ok()?;
    let chain = Chain {
        policy: &policy,
        lookup: &facts,
        today: today(),
    };
    let judged_kind = match crate::rules::find(rule)?.target {
        crate::subject::Target::StatefulSet => Kind::StatefulSet,
        crate::subject::Target::Service => Kind::Service,
    };
    let (judged, operation) = match judged_kind {
        Kind::StatefulSet => (sts_object, Operation::Create),
        Kind::Service if rule == "svc-delete-governing-service" => (svc_object, Operation::Delete),
        Kind::Service => (svc_object, Operation::Create),
    };
    let admitted = chain.admit(operation, "default", judged, None);
    let found: Vec<Violation> = admitted
        .verdict
        .violations
        .into_iter()
        .filter(|v| v.rule.id == rule)
        .collect();
    // The judged object, and the other one where the rule compares the two.
    let mut shown = vec![if judged_kind == Kind::StatefulSet {
        &sts
    } else {
        &svc
    }];
    if kind != judged_kind || crate::rules::find(rule)?.needs_lookup {
        shown.push(if judged_kind == Kind::StatefulSet {
            &svc
        } else {
            &sts
        });
    }
    let yaml: Vec<String> = shown
        .into_iter()
        .map(serde_saphyr::to_string)
        .collect::<Result<_, _>>()
        .ok()?;
    Some((yaml.join("---\n"), found))
}

/// The strict policy with every mutator off.
fn strict_without_mutators() -> Result<Policy, crate::policy::PolicyError> {
    let rules: String = crate::rules::RULES
        .iter()
        .map(|r| format!("{}: deny, ", r.id))
        .collect();
    let mutators: String = crate::mutate::MUTATORS
        .iter()
        .map(|m| format!("{}: false, ", m.id))
        .collect();
    Policy::from_yaml(
        &format!("rules: {{{rules}}}\nmutators: {{{mutators}}}\n"),
        "example",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RULES;

    /// Every rule's example really violates it, and only once.
    #[test]
    fn every_example_violates_its_rule() {
        for rule in RULES {
            let Some((yaml, found)) = example(rule.id) else {
                continue;
            };
            assert!(
                !found.is_empty(),
                "{}: the example does not violate it:\n{yaml}",
                rule.id
            );
        }
    }
}
