//! Evaluating the generated admission policies as the API server would, with the `cel` crate:
//! the environment (the lists and strings extensions the Kubernetes CEL environment has, and
//! `dyn()`), objects as the API server hands them to CEL, a policy's variables in order, and the
//! generated YAML read back, so that what is evaluated is what is printed.

use std::{collections::HashMap, sync::Arc};

use cel::{Context, Env, Program, Value as Cel};
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{Value, json};
use stsguard::{
    admit::{self, Classified},
    backstop::{self, Kinds, Target},
    policy::Policy,
    subject::Object,
};

/// The CEL environment: the standard library (with `dyn()`) and the lists and strings
/// extensions, as the Kubernetes CEL environment has them.
pub(crate) fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::lists).unwrap();
    env.add_extension(cel::extensions::strings).unwrap();
    Arc::new(env)
}

pub(crate) fn compile(env: &Env, expr: &str) -> Program {
    env.compile(&as_map_literals(expr))
        .unwrap_or_else(|e| panic!("cel cannot parse {expr}: {e:?}"))
}

/// `JSONPatch{op: .., path: .., value: ..}` as a map literal with the same fields: the crate's
/// struct values cannot be read back as JSON, and the map carries the same three fields.
fn as_map_literals(expr: &str) -> String {
    let count = expr.matches("JSONPatch{").count();
    let rewritten = expr
        .replace("JSONPatch{op: ", "{'op': ")
        .replace(", path: ", ", 'path': ")
        .replace(", value: ", ", 'value': ");
    assert_eq!(
        rewritten.matches("{'op': ").count(),
        count + expr.matches("{'op': ").count(),
        "every JSONPatch literal is rewritten: {expr}"
    );
    assert!(!rewritten.contains("JSONPatch"), "{rewritten}");
    rewritten
}

/// JSON as the API server hands it to CEL: integers as int, no nulls.
pub(crate) fn cel_value(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Cel::Float(n.as_f64().unwrap()), Cel::Int),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => Cel::from(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), cel_value(v)))
                .collect::<HashMap<String, Cel>>(),
        ),
    }
}

/// An EndpointSlice of the webhook's Service, with one endpoint in the given state
/// (`None`: no endpoint at all).
pub(crate) fn slice(ready: Option<bool>) -> Value {
    let endpoints = match ready {
        None => json!([]),
        Some(ready) => json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}]),
    };
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "stsguard-abcde", "namespace": "stsguard",
                        "labels": {"kubernetes.io/service-name": "stsguard"}},
           "addressType": "IPv4", "endpoints": endpoints})
}

/// One admission request as CEL sees it.
pub(crate) struct Request<'a> {
    pub operation: &'a str,
    pub namespace: &'a str,
    pub object: &'a Value,
    pub old: Option<&'a Value>,
    pub params: &'a Value,
}

/// A context with the request's variables and the policy's own `variables`, evaluated in order
/// (a variable may read the ones before it). A variable that fails to evaluate fails the test:
/// the generated expressions must evaluate on every object.
pub(crate) fn context(
    env: &Arc<Env>,
    variables: &[(String, Program)],
    request: &Request,
) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(env.clone());
    ctx.add_variable_from_value("object", cel_value(request.object));
    ctx.add_variable_from_value("oldObject", request.old.map_or(Cel::Null, cel_value));
    ctx.add_variable_from_value("params", cel_value(request.params));
    ctx.add_variable_from_value(
        "request",
        cel_value(&json!({"operation": request.operation, "namespace": request.namespace})),
    );
    let mut values: HashMap<String, Cel> = HashMap::new();
    for (name, program) in variables {
        ctx.add_variable_from_value("variables", Cel::from(values.clone()));
        let value = program
            .execute(&ctx)
            .unwrap_or_else(|e| panic!("variable {name} fails: {e:?}"));
        values.insert(name.clone(), value);
    }
    ctx.add_variable_from_value("variables", Cel::from(values));
    ctx
}

/// A webhook matchCondition on a captured review, bound as the API server binds it (`object`,
/// `oldObject`, and `request` without them and its uid). Anything but a bool fails the test:
/// an evaluation error would skip the webhook under `failurePolicy: Ignore`.
pub(crate) fn match_condition(program: &Program, review: &Value) -> bool {
    let request = &review["request"];
    let mut bare = request.clone();
    for key in ["object", "oldObject", "uid"] {
        bare.as_object_mut().unwrap().shift_remove(key);
    }
    let mut ctx = Context::with_env(env());
    ctx.add_variable_from_value("object", cel_value(&request["object"]));
    ctx.add_variable_from_value("oldObject", cel_value(&request["oldObject"]));
    ctx.add_variable_from_value("request", cel_value(&bare));
    match program.execute(&ctx) {
        Ok(Cel::Bool(b)) => b,
        other => panic!("a condition gives {other:?} on {review}"),
    }
}

/// The generated objects of one kind as printed, read back as JSON documents.
pub(crate) fn documents(policy: &Policy, kinds: Kinds) -> Vec<Value> {
    let generated = backstop::generate(policy, &target());
    let text = backstop::yaml(&generated, kinds, "test").unwrap();
    text.split("\n---\n")
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect()
}

pub(crate) fn target() -> Target {
    Target::excluding(
        backstop::DEFAULT_NAME,
        "stsguard/stsguard".parse().unwrap(),
        &["stsguard".to_owned(), "kube-system".to_owned()],
    )
}

/// A policy's variables, compiled in order.
pub(crate) fn variables(env: &Env, spec: &Value) -> Vec<(String, Program)> {
    spec["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                compile(env, v["expression"].as_str().unwrap()),
            )
        })
        .collect()
}

/// What the API server would hold for this StatefulSet, typed and as JSON: defaulted as it
/// defaults, serialized back, so absent and null read the same on every side; `None` when it is
/// not one.
pub(crate) fn stored(value: &Value) -> Option<(StatefulSet, Value)> {
    let object = match admit::classify(value) {
        Classified::Object(o) | Classified::Legacy(o, _) => admit::default(o),
        _ => return None,
    };
    let Object::StatefulSet(sts) = object else {
        return None;
    };
    let json = serde_json::to_value(sts.as_ref()).unwrap();
    Some((sts.as_ref().clone(), json))
}
