//! StatefulSets at the mutators' edges: each body (mounts naming nothing, templates missing
//! each level, no metadata, no pod spec) with each kind of `stsguard.io/exempt` and
//! `stsguard.io/mutated` value the mutators read; and the shared generator's StatefulSets with
//! those annotations and such templates.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::generated::pick;

/// `stsguard.io/exempt` values: each mutator named, `*` (which leaves the mutators on), unknown
/// ids (which void the whole annotation), whitespace and empty items.
pub(crate) const EXEMPT: &[Option<&str>] = &[
    None,
    Some(""),
    Some("*"),
    Some("sts-inject-volume-claim-templates"),
    Some(" sts-complete-volume-claim-templates\u{a0}"),
    Some(",,sts-inject-volume-claim-templates, sts-service-name,"),
    Some("sts-complete-volume-claim-templates,sts-inject-volume-claim-templates"),
    Some("sts-nope"),
    Some("sts-inject-volume-claim-templates,sts-typo"),
    Some("sts-inject-volume-claim-templates sts-complete-volume-claim-templates"),
    Some("*sts-inject-volume-claim-templates"),
    Some("STS-INJECT-VOLUME-CLAIM-TEMPLATES"),
];

/// `stsguard.io/mutated` values an earlier invocation (or a user) left: spaces, duplicates,
/// empty items, ids of the mutators and others.
pub(crate) const MUTATED: &[Option<&str>] = &[
    None,
    Some(""),
    Some("   "),
    Some("sts-complete-volume-claim-templates"),
    Some(" sts-inject-volume-claim-templates , ,sts-inject-volume-claim-templates"),
    Some("other,other, other\u{3000}"),
    Some(",,"),
];

/// A StatefulSet whose mounts `data` and `wal` (the latter also in an init container) name no
/// volume, and `config` names a pod volume.
fn base() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "x",
                        "volumeMounts": [{"name": "wal", "mountPath": "/wal"}]}],
                    "containers": [{"name": "db", "image": "x", "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "wal", "mountPath": "/wal"},
                        {"name": "config", "mountPath": "/config"},
                        {"name": "data", "mountPath": "/again"}
                    ]}],
                    "volumes": [{"name": "config", "configMap": {"name": "db"}}]
                }
            }
        }
    })
}

/// The bodies, by name.
fn bodies() -> Vec<(&'static str, Value)> {
    let mut out = vec![("no templates", base())];

    let mut incomplete = base();
    incomplete["spec"]["volumeClaimTemplates"] = json!([
        {"metadata": {"name": "data"}},
        {"metadata": {"name": "logs"}, "spec": {}},
        {"metadata": {"name": "cache"}, "spec": {"accessModes": [], "resources": {}}},
        {"metadata": {"name": "tmp"}, "spec": {"resources": {"requests": {}}}},
        {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"cpu": "1"}}}},
        {"metadata": {"name": "full"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": ""}}}}
    ]);
    out.push(("incomplete templates, wal unresolved", incomplete));

    let mut empty_list = base();
    empty_list["spec"]["volumeClaimTemplates"] = json!([]);
    out.push(("an empty template list", empty_list));

    let mut complete = base();
    complete["spec"]["volumeClaimTemplates"] = ["data", "wal"]
        .iter()
        .map(|n| {
            json!({"metadata": {"name": n}, "spec": {"accessModes": ["ReadWriteOnce"],
                   "resources": {"requests": {"storage": "3Gi"}}}})
        })
        .collect();
    out.push(("nothing to do", complete));

    let mut no_pod_spec = base();
    no_pod_spec["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("spec");
    no_pod_spec["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}}]);
    out.push(("no pod spec", no_pod_spec));

    let mut no_mounts = base();
    for group in ["initContainers", "containers"] {
        no_mounts["spec"]["template"]["spec"][group][0]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
    }
    out.push(("no mounts", no_mounts));

    let mut no_spec = base();
    no_spec.as_object_mut().unwrap().remove("spec");
    out.push(("no spec", no_spec));
    out
}

/// Every body with each exemption, each record, both together, no annotations at all, an empty
/// annotation map, and no metadata at all.
pub(crate) fn edge_cases() -> Vec<(String, Value)> {
    let annotated = EXEMPT
        .iter()
        .map(|e| (*e, None))
        .chain(MUTATED.iter().map(|m| (None, *m)))
        .chain([(EXEMPT[3], MUTATED[4]), (EXEMPT[5], MUTATED[5])]);
    let annotated: Vec<_> = annotated.collect();
    let mut out = Vec::new();
    for (body, value) in bodies() {
        let mut bare = value.clone();
        bare.as_object_mut().unwrap().remove("metadata");
        out.push((format!("{body}, no metadata"), bare));
        let mut empty = value.clone();
        empty["metadata"]["annotations"] = json!({});
        out.push((format!("{body}, empty annotations"), empty));
        for (exempt, mutated) in &annotated {
            let mut annotations = serde_json::Map::new();
            if let Some(exempt) = exempt {
                annotations.insert("stsguard.io/exempt".into(), json!(exempt));
                annotations.insert("stsguard.io/exempt-until".into(), json!("2099-12-31"));
            }
            if let Some(mutated) = mutated {
                annotations.insert("stsguard.io/mutated".into(), json!(mutated));
            }
            let mut v = value.clone();
            if !annotations.is_empty() {
                v["metadata"]["annotations"] = Value::Object(annotations);
            }
            out.push((format!("{body}, exempt {exempt:?}, mutated {mutated:?}"), v));
        }
    }
    out
}

/// A StatefulSet both mutators would change, exempt from both until `until`.
pub(crate) fn exempt_until(until: &str) -> Value {
    let (_, mut value) = bodies().swap_remove(1);
    value["metadata"]["annotations"] = json!({
        "stsguard.io/exempt": "sts-inject-volume-claim-templates, sts-complete-volume-claim-templates",
        "stsguard.io/exempt-until": until,
    });
    value
}

/// A volumeClaimTemplate missing any of the levels the completing mutator fills, or none.
fn template() -> impl Strategy<Value = Value> {
    (
        pick(vec![
            None,
            Some(json!({})),
            Some(json!({"name": "data"})),
            Some(json!({"name": "logs"})),
        ]),
        any::<bool>(),
        pick(vec![json!(null), json!([]), json!(["ReadWriteOnce"])]),
        pick(vec![
            json!(null),
            json!({}),
            json!({"requests": {}}),
            json!({"requests": {"cpu": "1"}}),
            json!({"requests": {"storage": "2Gi"}}),
            json!({"limits": {"storage": "2Gi"}}),
        ]),
    )
        .prop_map(|(metadata, has_spec, modes, resources)| {
            let mut t = json!({});
            if let Some(metadata) = metadata {
                t["metadata"] = metadata;
            }
            if has_spec {
                t["spec"] = json!({});
                if !modes.is_null() {
                    t["spec"]["accessModes"] = modes;
                }
                if !resources.is_null() {
                    t["spec"]["resources"] = resources;
                }
            }
            t
        })
}

/// `spec.volumeClaimTemplates` to put in place of the generated one: `None` keeps it,
/// `Some(None)` removes it.
pub(crate) fn templates() -> impl Strategy<Value = Option<Option<Vec<Value>>>> {
    prop_oneof![
        Just(None),
        Just(Some(None)),
        prop::collection::vec(template(), 0..4).prop_map(|t| Some(Some(t))),
    ]
}

/// Generated StatefulSets with the mutators' own exemption and record annotations.
pub(crate) fn generated() -> impl Strategy<Value = Value> {
    (
        super::generated::statefulset(),
        pick(EXEMPT.to_vec()),
        pick(MUTATED.to_vec()),
        pick(vec!["keep", "no annotations", "no metadata"]),
        templates(),
    )
        .prop_map(|(mut sts, exempt, mutated, metadata, templates)| {
            match templates {
                Some(Some(list)) => sts["spec"]["volumeClaimTemplates"] = json!(list),
                Some(None) => {
                    sts["spec"]
                        .as_object_mut()
                        .unwrap()
                        .remove("volumeClaimTemplates");
                }
                None => {}
            }
            let annotations = sts["metadata"]
                .as_object_mut()
                .unwrap()
                .entry("annotations")
                .or_insert_with(|| json!({}));
            if let Some(exempt) = exempt {
                annotations["stsguard.io/exempt"] = json!(exempt);
            }
            if let Some(mutated) = mutated {
                annotations["stsguard.io/mutated"] = json!(mutated);
            }
            match metadata {
                "no annotations" => {
                    sts["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("annotations");
                }
                "no metadata" => {
                    sts.as_object_mut().unwrap().remove("metadata");
                }
                _ => {}
            }
            sts
        })
}
