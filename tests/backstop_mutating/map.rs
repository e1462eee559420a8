//! The generated MutatingAdmissionPolicy read back from the printed YAML and evaluated with
//! the `cel` crate, and its result applied as the API server applies a JSONPatch mutation.

use std::sync::Arc;

use cel::{Env, Program, Value as Cel, objects::Key};
use serde_json::{Value, json};
use stsguard::{backstop::Kinds, policy::Policy};

use super::cel_env;

/// The generated MutatingAdmissionPolicy, compiled: its variables and its one JSONPatch
/// expression.
pub(crate) struct Map {
    env: Arc<Env>,
    variables: Vec<(String, Program)>,
    expression: Program,
}

impl Map {
    /// The policy's MutatingAdmissionPolicy as printed, each expression (variables too) passed
    /// through `edit` first; `None` when no enabled mutator has a CEL form.
    pub(crate) fn of(policy: &Policy, edit: impl Fn(&str) -> String) -> Option<Map> {
        let documents = cel_env::documents(policy, Kinds::Mutating);
        let map = documents
            .iter()
            .find(|d| d["kind"] == "MutatingAdmissionPolicy")?;
        let name = &map["metadata"]["name"];
        assert!(
            documents
                .iter()
                .any(|d| d["kind"] == "MutatingAdmissionPolicyBinding"
                    && d["spec"]["policyName"] == *name),
            "no binding for {name}"
        );
        let mut spec = map["spec"].clone();
        assert_eq!(spec["failurePolicy"], "Ignore");
        let mutations = spec["mutations"].as_array().unwrap();
        assert_eq!(mutations.len(), 1);
        assert_eq!(mutations[0]["patchType"], "JSONPatch");
        let expression = edit(mutations[0]["jsonPatch"]["expression"].as_str().unwrap());
        for variable in spec["variables"].as_array_mut().unwrap() {
            let text = edit(variable["expression"].as_str().unwrap());
            variable["expression"] = json!(text);
        }
        let env = cel_env::env();
        let variables = cel_env::variables(&env, &spec);
        let expression = cel_env::compile(&env, &expression);
        Some(Map {
            env,
            variables,
            expression,
        })
    }

    /// The operations the policy gives for a CREATE of `object` in `namespace`.
    pub(crate) fn ops(&self, namespace: &str, object: &Value, params: &Value) -> Vec<Value> {
        let request = cel_env::Request {
            operation: "CREATE",
            namespace,
            object,
            old: None,
            params,
        };
        let ctx = cel_env::context(&self.env, &self.variables, &request);
        match self.expression.execute(&ctx) {
            Ok(Cel::List(items)) => items.iter().map(json_of).collect(),
            other => panic!("the expression gives {other:?} for {object}"),
        }
    }
}

/// A CEL result as JSON (`JSONPatch` literals are maps here, see `cel_env::compile`).
fn json_of(value: &Cel) -> Value {
    match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => json!(b),
        Cel::Int(i) => json!(i),
        Cel::UInt(u) => json!(u),
        Cel::Float(f) => json!(f),
        Cel::String(s) => json!(s.as_str()),
        Cel::List(items) => Value::Array(items.iter().map(json_of).collect()),
        Cel::Map(map) => Value::Object(
            map.map
                .iter()
                .map(|(k, v)| {
                    let Key::String(k) = k else {
                        panic!("a non-string key {k:?} in a patch value")
                    };
                    (k.to_string(), json_of(v))
                })
                .collect(),
        ),
        other => panic!("{other:?} cannot be JSON"),
    }
}

/// The object with RFC 6902 operations applied, as the API server applies a JSONPatch mutation.
pub(crate) fn patched(object: &Value, ops: Vec<Value>) -> Result<Value, String> {
    let text = Value::Array(ops).to_string();
    let patch: json_patch::Patch =
        serde_json::from_str(&text).map_err(|e| format!("not a JSON patch: {e}: {text}"))?;
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| format!("{e}: {text}"))?;
    Ok(doc)
}
