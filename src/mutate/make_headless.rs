//! `svc-make-headless` (off by default): a Service created for a StatefulSet that names it, with
//! no clusterIP of its own, becomes headless.

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{Apply, Mutator, add};
use crate::lookup::{Fact, Lookup};

pub(super) const MUTATOR: Mutator = Mutator {
    id: "svc-make-headless",
    summary: "sets spec.clusterIP: None on a Service CREATE that a StatefulSet in its namespace \
              names as serviceName and that leaves clusterIP unset",
    why: "A governing Service needs clusterIP: None for per-pod DNS, and clusterIP cannot be \
          changed after creation; setting it at creation saves a delete and recreate. Off by \
          default: it changes what people wrote. Needs cluster lookups (or, offline, the \
          StatefulSets in the same input).",
    default_enabled: false,
    mutable_fields_only: false,
    apply: Apply::Service(apply),
};

fn apply(svc: &Service, namespace: &str, lookup: &dyn Lookup) -> Vec<PatchOperation> {
    let spec = svc.spec.as_ref();
    let unset = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .is_none_or(str::is_empty);
    // ExternalName Services have no cluster IP to make headless.
    let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    let Some(name) = svc.metadata.name.as_deref() else {
        return vec![];
    };
    if !unset || external {
        return vec![];
    }
    match lookup.statefulsets_naming(namespace, name) {
        Fact::Found(list) if !list.is_empty() => {
            if spec.is_some() {
                vec![add(&["spec", "clusterIP"], json!("None"))]
            } else {
                vec![add(&["spec"], json!({"clusterIP": "None"}))]
            }
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        lookup::{InMemory, NoLookup},
        rules::testing::{sts, svc},
    };

    #[test]
    fn a_named_service_without_cluster_ip_becomes_headless() {
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let unset = svc().remove("/spec/clusterIP").build();
        let ops = apply(&unset, "ns", &facts);
        assert_eq!(ops.len(), 1);
        let mut doc = serde_json::to_value(&unset).unwrap();
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc["spec"]["clusterIP"], "None");
    }

    #[test]
    fn other_services_are_left_alone() {
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let chosen_ip = svc().set("/spec/clusterIP", json!("10.0.0.1")).build();
        assert!(
            apply(&chosen_ip, "ns", &facts).is_empty(),
            "an explicit clusterIP is kept"
        );
        let unnamed = svc()
            .remove("/spec/clusterIP")
            .set("/metadata/name", json!("other"))
            .build();
        assert!(
            apply(&unnamed, "ns", &facts).is_empty(),
            "no StatefulSet names it"
        );
        let external = svc()
            .remove("/spec/clusterIP")
            .set("/spec/type", json!("ExternalName"))
            .build();
        assert!(apply(&external, "ns", &facts).is_empty());
        let unset = svc().remove("/spec/clusterIP").build();
        assert!(
            apply(&unset, "ns", &NoLookup).is_empty(),
            "unknown without facts"
        );
    }
}
