//! Generated JSON values and structural mutations of JSON documents (edits at nodes chosen by
//! index, kept to the parts the rules and mutators read), for the property tests of reviews,
//! policies and manifests.

use proptest::{prelude::*, sample::Index};
use serde_json::{Value, json};

/// Strings the rules, the exemption parser and the envelope give meaning to.
pub const INTERESTING: &[&str] = &[
    "",
    " ",
    "None",
    "web",
    "cache",
    "data",
    "www",
    "cap",
    "Retain",
    "Delete",
    "OnDelete",
    "RollingUpdate",
    "Parallel",
    "OrderedReady",
    "ClusterIP",
    "ExternalName",
    "LoadBalancer",
    "apps/v1",
    "apps/v1beta1",
    "v1",
    "admission.k8s.io/v1",
    "AdmissionReview",
    "StatefulSet",
    "Service",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "scale",
    "*",
    "sts-service-name",
    "sts-readiness-probe, *",
    "sts-inject-volume-claim-templates",
    "svc-make-headless",
    "x,,y, ,",
    "2000-01-01",
    "2999-12-31",
    "2026-02-30",
    "1Gi",
    "0",
    "-1",
    "1e3",
    "ReadWriteOnce",
    "Filesystem",
    "app",
    "stsguard.io/exempt",
    "stsguard.io/exempt-until",
    "stsguard.io/mutated",
    "helm.sh/chart",
    "a/b~c",
    "~1",
    "é\u{0}\u{2028}😀",
];

/// Keys the objects and the envelope have, so that generated objects land on real fields.
pub const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "annotations",
    "labels",
    "spec",
    "serviceName",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "template",
    "containers",
    "initContainers",
    "volumes",
    "volumeMounts",
    "readinessProbe",
    "tcpSocket",
    "port",
    "terminationGracePeriodSeconds",
    "affinity",
    "podAntiAffinity",
    "topologySpreadConstraints",
    "volumeClaimTemplates",
    "accessModes",
    "resources",
    "requests",
    "storage",
    "updateStrategy",
    "type",
    "rollingUpdate",
    "partition",
    "podManagementPolicy",
    "persistentVolumeClaimRetentionPolicy",
    "whenDeleted",
    "whenScaled",
    "clusterIP",
    "publishNotReadyAddresses",
    "ports",
    "stsguard.io/exempt",
    "stsguard.io/exempt-reason",
    "stsguard.io/exempt-until",
    "stsguard.io/mutated",
    "uid",
    "object",
    "oldObject",
    "operation",
    "subResource",
    "dryRun",
    "request",
];

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// Numbers at the edges of the fields' types (i32 replicas and partitions, i64 seconds).
pub const NUMBERS: &[i64] = &[0, 1, 2, 3, -1, 30, 2_147_483_647, 2_147_483_648, i64::MIN];

pub fn json_value() -> impl Strategy<Value = Value> {
    let finite = |f: f64| serde_json::Number::from_f64(f).map(Value::Number);
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::sample::select(NUMBERS).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", finite),
        3 => prop::sample::select(INTERESTING).prop_map(Value::from),
        1 => "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// One structural change at a node chosen by `at`.
#[derive(Clone, Debug)]
pub enum Edit {
    /// A change that keeps the node's JSON type, so the object still reads and the rules and
    /// mutators see it: another interesting string or number, a flipped bool, an element or
    /// key removed.
    Tweak(Index, Index),
    Replace(Index, Value),
    Delete(Index),
    Retype(Index),
    Duplicate(Index),
    Insert(Index, String, Value),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(at, pick)| Edit::Tweak(at, pick)),
        2 => (any::<Index>(), json_value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        1 => any::<Index>().prop_map(Edit::Delete),
        2 => any::<Index>().prop_map(Edit::Retype),
        1 => any::<Index>().prop_map(Edit::Duplicate),
        1 => (any::<Index>(), key(), json_value()).prop_map(|(at, k, v)| Edit::Insert(at, k, v)),
    ]
}

/// Every JSON pointer at or below `under` (which must exist).
pub fn pointers(root: &Value, under: &str) -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(
                        v,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    if let Some(start) = root.pointer(under) {
        walk(start, under.to_owned(), &mut out);
    }
    out
}

pub fn tweak(node: &mut Value, pick: &Index) {
    match node {
        Value::Null => *node = Value::Object(serde_json::Map::new()),
        Value::Bool(b) => *b = !*b,
        Value::Number(_) => *node = Value::from(*pick.get(NUMBERS)),
        Value::String(s) => *s = (*pick.get(INTERESTING)).to_owned(),
        Value::Array(items) if !items.is_empty() => {
            items.remove(pick.index(items.len()));
        }
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(pick.index(map.len())).unwrap().clone();
            map.shift_remove(&key);
        }
        Value::Array(_) | Value::Object(_) => {}
    }
}

pub fn retype(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!(b.to_string()),
        Value::Number(n) => json!(n.to_string()),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!([s])),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect(),
        ),
        Value::Object(map) => Value::Array(map.values().cloned().collect()),
    }
}

/// Parts of an object the rules and mutators read.
pub const SUBTREES: &[&str] = &[
    "",
    "/metadata",
    "/metadata/annotations",
    "/spec",
    "/spec/selector",
    "/spec/template/metadata",
    "/spec/template/spec",
    "/spec/template/spec/containers",
    "/spec/volumeClaimTemplates",
    "/spec/updateStrategy",
    "/spec/persistentVolumeClaimRetentionPolicy",
];

/// Applies edits to nodes at or below `under`.
pub fn apply(root: &mut Value, under: &str, edits: &[Edit]) {
    for edit in edits {
        let paths = pointers(root, under);
        if paths.is_empty() {
            return;
        }
        let (Edit::Tweak(at, _)
        | Edit::Replace(at, _)
        | Edit::Delete(at)
        | Edit::Retype(at)
        | Edit::Duplicate(at)
        | Edit::Insert(at, _, _)) = edit;
        let path = at.get(&paths).clone();
        match edit {
            Edit::Tweak(_, pick) => tweak(root.pointer_mut(&path).unwrap(), pick),
            Edit::Replace(_, value) => *root.pointer_mut(&path).unwrap() = value.clone(),
            Edit::Retype(_) => {
                let node = root.pointer_mut(&path).unwrap();
                *node = retype(node);
            }
            Edit::Delete(_) => {
                let Some((parent, last)) = path.rsplit_once('/') else {
                    continue;
                };
                if path == under {
                    *root.pointer_mut(&path).unwrap() = Value::Null;
                    continue;
                }
                let last = last.replace("~1", "/").replace("~0", "~");
                match root.pointer_mut(parent).unwrap() {
                    Value::Object(map) => {
                        map.shift_remove(&last);
                    }
                    Value::Array(items) => {
                        items.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            }
            Edit::Duplicate(_) => match root.pointer_mut(&path).unwrap() {
                Value::Array(items) if !items.is_empty() => {
                    let first = items[0].clone();
                    items.push(first);
                }
                Value::Object(map) => {
                    if let Some((k, v)) = map.iter().next().map(|(k, v)| (k.clone(), v.clone())) {
                        map.insert(format!("{k}-2"), v);
                    }
                }
                other => *other = json!([other.clone(), other.clone()]),
            },
            Edit::Insert(_, k, v) => match root.pointer_mut(&path).unwrap() {
                Value::Object(map) => {
                    map.insert(k.clone(), v.clone());
                }
                Value::Array(items) => items.push(v.clone()),
                _ => {}
            },
        }
    }
}
