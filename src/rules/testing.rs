//! Chainable builders for the objects rule and mutator tests look at.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use serde_json::{Value, json};

use crate::{
    lookup::{Lookup, NoLookup},
    rules::{Context, Finding, Settings},
};

/// A StatefulSet that passes every default rule, changed step by step through JSON pointers.
pub(crate) struct Sts(Value);

pub(crate) fn sts() -> Sts {
    Sts(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "serviceName": "web",
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "nginx",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                }]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    }))
}

impl Sts {
    /// Sets the value at a JSON pointer, creating missing parent objects.
    pub(crate) fn set(mut self, pointer: &str, value: Value) -> Self {
        set_pointer(&mut self.0, pointer, value);
        self
    }

    /// Removes the value at a JSON pointer, if present.
    pub(crate) fn remove(mut self, pointer: &str) -> Self {
        remove_pointer(&mut self.0, pointer);
        self
    }

    pub(crate) fn build(self) -> StatefulSet {
        serde_json::from_value(self.0).expect("test StatefulSet deserializes")
    }
}

/// A headless Service `web` selecting `app: web`, changed through JSON pointers.
#[derive(Clone)]
pub(crate) struct Svc(Value);

pub(crate) fn svc() -> Svc {
    Svc(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80}]
        }
    }))
}

impl Svc {
    pub(crate) fn set(mut self, pointer: &str, value: Value) -> Self {
        set_pointer(&mut self.0, pointer, value);
        self
    }

    pub(crate) fn remove(mut self, pointer: &str) -> Self {
        remove_pointer(&mut self.0, pointer);
        self
    }

    pub(crate) fn build(self) -> Service {
        serde_json::from_value(self.0).expect("test Service deserializes")
    }
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut current = root;
    let tokens: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let (last, parents) = tokens.split_last().expect("pointer has a token");
    for token in parents {
        current = match current {
            Value::Object(map) => map.entry(*token).or_insert_with(|| json!({})),
            Value::Array(items) => &mut items[token.parse::<usize>().expect("array index")],
            other => panic!("cannot descend into {other}"),
        };
    }
    match current {
        Value::Object(map) => {
            map.insert((*last).to_owned(), value);
        }
        Value::Array(items) if *last == "-" => items.push(value),
        Value::Array(items) => items[last.parse::<usize>().expect("array index")] = value,
        other => panic!("cannot set a field of {other}"),
    }
}

fn remove_pointer(root: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer has a parent");
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(last);
        }
        Some(Value::Array(items)) => {
            items.remove(last.parse::<usize>().expect("array index"));
        }
        _ => {}
    }
}

/// Runs a StatefulSet check with no cluster facts and the default settings.
pub(crate) fn check_sts(
    check: fn(&StatefulSet, &Context) -> Vec<Finding>,
    sts: Sts,
) -> Vec<Finding> {
    check_sts_with(check, sts, &NoLookup)
}

pub(crate) fn check_sts_with(
    check: fn(&StatefulSet, &Context) -> Vec<Finding>,
    sts: Sts,
    lookup: &dyn Lookup,
) -> Vec<Finding> {
    let settings = Settings::default();
    let ctx = Context {
        namespace: "ns",
        lookup,
        settings: &settings,
    };
    check(&sts.build(), &ctx)
}

pub(crate) fn check_svc_with(
    check: fn(&Service, &Context) -> Vec<Finding>,
    svc: Svc,
    lookup: &dyn Lookup,
) -> Vec<Finding> {
    let settings = Settings::default();
    let ctx = Context {
        namespace: "ns",
        lookup,
        settings: &settings,
    };
    check(&svc.build(), &ctx)
}

/// The paths of findings, for terse assertions.
pub(crate) fn paths(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.path.as_str()).collect()
}
