//! Building an AdmissionReview request around a manifest, shaped as the API server sends one, so
//! that a running webhook can be tried with curl and tests can drive the webhook path with the
//! manifests the audit reads.

use serde_json::{Value, json};

use super::wire::{API_VERSION, KIND};
use crate::subject::Operation;

/// An `admission.k8s.io/v1` AdmissionReview asking about `object` (on DELETE, `old` is the object
/// being deleted and `object` is ignored). A StatefulSet of a beta API version is sent as
/// apps/v1, as the API server converts it; an object without a namespace is in `namespace`.
pub fn admission_review(
    uid: &str,
    operation: Operation,
    object: &Value,
    old: Option<&Value>,
    namespace: &str,
) -> Value {
    let convert = |value: &Value| {
        let mut value = value.clone();
        if value["kind"] == "StatefulSet" {
            value["apiVersion"] = json!("apps/v1");
        }
        value
    };
    let subject = match operation {
        Operation::Delete => old.unwrap_or(object),
        _ => object,
    };
    let kind = subject["kind"].as_str().unwrap_or_default();
    let (group, resource) = match kind {
        "StatefulSet" => ("apps", "statefulsets"),
        "Service" => ("", "services"),
        other => ("", other),
    };
    let version = "v1";
    let namespace = subject["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(namespace);
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": subject["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": namespace,
            "operation": operation.as_str(),
            "userInfo": {"username": "stsguard-review", "groups": ["system:authenticated"]},
            "object": if operation == Operation::Delete { Value::Null } else { convert(object) },
            "oldObject": old.map(convert).unwrap_or(Value::Null),
            "dryRun": false,
            "options": null,
        }
    })
}
