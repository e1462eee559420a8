//! Server-side apply as the API server does it, for flat objects: every leaf field (scalars and,
//! as for CRDs without list-type markers, whole lists) has the field managers that set it. An
//! apply that changes a field another manager owns is a 409 conflict unless forced; fields a
//! manager applied before and leaves out of its next apply are removed; an update (create, PUT,
//! merge or JSON patch) takes the fields it changes from everyone else. `metadata.managedFields`
//! is written back as the API server shows it, so clients that read it see real entries.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who owns each leaf field of one object.
#[derive(Clone, Debug, Default)]
pub struct Owners(BTreeMap<Vec<String>, BTreeMap<String, Operation>>);

/// The leaf fields of an object that managers can own: everything but the identity and the
/// bookkeeping in `metadata` (labels, annotations and ownerReferences are owned like any field).
fn leaves(object: &Value) -> BTreeMap<Vec<String>, Value> {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if path.len() == 1
                        && path[0] == "metadata"
                        && !matches!(key.as_str(), "labels" | "annotations" | "ownerReferences")
                    {
                        continue;
                    }
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ if path.is_empty() => {}
            _ => {
                out.insert(path.clone(), value.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(object, &mut Vec::new(), &mut out);
    out
}

fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, key| v.get(key))
}

fn set(object: &mut Value, path: &[String], value: Value) {
    let mut at = object;
    for key in &path[..path.len() - 1] {
        if !at.get(key).is_some_and(Value::is_object) {
            at[key.as_str()] = json!({});
        }
        at = &mut at[key.as_str()];
    }
    at[path[path.len() - 1].as_str()] = value;
}

fn remove(object: &mut Value, path: &[String]) {
    let (last, parents) = path.split_last().expect("a field path is never empty");
    if let Some(Value::Object(map)) = parents.iter().try_fold(&mut *object, |v, k| v.get_mut(k)) {
        map.remove(last);
    }
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

impl Owners {
    /// A create, PUT or non-apply patch by `manager` turned `old` into `new`.
    pub fn update(&mut self, manager: &str, old: &Value, new: &Value) {
        let now = leaves(new);
        self.0.retain(|path, _| now.contains_key(path));
        for (path, value) in now {
            if get(old, &path) != Some(&value) {
                self.0.insert(
                    path,
                    BTreeMap::from([(manager.to_owned(), Operation::Update)]),
                );
            }
        }
    }

    /// Applies `config` by `manager` to `current` (`Value::Null` when the object is new) and
    /// returns the object to store, or the conflicts as the API server words them.
    pub fn apply(
        &mut self,
        manager: &str,
        current: &Value,
        config: &Value,
        force: bool,
    ) -> Result<Value, String> {
        let applied = leaves(config);
        let conflicts: Vec<String> = applied
            .iter()
            .filter(|(path, value)| get(current, path).is_some_and(|cur| cur != *value))
            .flat_map(|(path, _)| {
                self.0
                    .get(path)
                    .into_iter()
                    .flat_map(|owners| owners.keys())
                    .filter(|owner| *owner != manager)
                    .map(move |owner| format!("conflict with \"{owner}\": {}", dotted(path)))
            })
            .collect();
        if !conflicts.is_empty() && !force {
            let fields = if conflicts.len() == 1 {
                "conflict"
            } else {
                "conflicts"
            };
            return Err(format!(
                "Apply failed with {} {fields}: {}",
                conflicts.len(),
                conflicts.join("\n")
            ));
        }
        let mut object = if current.is_null() {
            json!({})
        } else {
            current.clone()
        };
        // Fields this manager applied before and no longer applies go, unless someone else
        // still owns them.
        let dropped: Vec<Vec<String>> = self
            .0
            .iter()
            .filter(|(path, owners)| {
                owners.get(manager) == Some(&Operation::Apply) && !applied.contains_key(*path)
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in dropped {
            let owners = self.0.get_mut(&path).expect("listed above");
            owners.remove(manager);
            if owners.is_empty() {
                self.0.remove(&path);
                remove(&mut object, &path);
            }
        }
        for (path, value) in applied {
            let changed = get(&object, &path) != Some(&value);
            let owners = self.0.entry(path.clone()).or_default();
            if changed {
                owners.clear();
            }
            owners.insert(manager.to_owned(), Operation::Apply);
            set(&mut object, &path, value);
        }
        for key in ["apiVersion", "kind"] {
            object[key] = config[key].clone();
        }
        for key in ["name", "namespace"] {
            if let Some(value) = config["metadata"].get(key) {
                object["metadata"][key] = value.clone();
            }
        }
        Ok(object)
    }

    /// `metadata.managedFields` as the API server writes it: one entry per manager and
    /// operation, with the fields in FieldsV1 form (`f:` keys).
    pub fn managed_fields(&self, api_version: &str, time: &str) -> Value {
        let mut entries: BTreeMap<(String, Operation), Map<String, Value>> = BTreeMap::new();
        for (path, owners) in &self.0 {
            for (manager, operation) in owners {
                let mut at = entries.entry((manager.clone(), *operation)).or_default();
                for key in path {
                    at = at
                        .entry(format!("f:{key}"))
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .expect("built as objects");
                }
            }
        }
        Value::Array(
            entries
                .into_iter()
                .map(|((manager, operation), fields)| {
                    json!({"manager": manager, "operation": operation.as_str(),
                           "apiVersion": api_version, "time": time,
                           "fieldsType": "FieldsV1", "fieldsV1": fields})
                })
                .collect(),
        )
    }
}
