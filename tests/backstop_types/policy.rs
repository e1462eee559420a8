//! The environment an API server gives an admission policy's expressions, and the type
//! check of a whole policy document: which variables are declared and with which types, and
//! where the CEL sits in the document.

use k8s_openapi::api::{
    core::v1::ObjectReference,
    discovery::v1::{
        Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
    },
};
use serde_json::Value;

use super::{
    check::{Env, check},
    schema::{Document, Type, from_example},
};

pub fn statefulset(apps: &Document) -> Type {
    apps.resource("io.k8s.api.apps.v1.StatefulSet")
        .expect("a StatefulSet has a CEL type")
}

/// An EndpointSlice (discovery.k8s.io/v1), the type of `params` for a policy whose paramKind
/// names it. Its OpenAPI document is not among the fixtures, so the type is read from a fully
/// populated k8s-openapi value (every field present, maps left empty), and its metadata is
/// the ObjectMeta of the apps/v1 document. Every field it has is one the API server's type has
/// too (k8s-openapi is generated from the same schema), so nothing it accepts is undefined
/// there; the leaves are less exact (maps of dyn), which only makes it more lenient.
pub fn endpoint_slice(apps: &Document) -> Type {
    let name = || Some("x".to_owned());
    let slice = EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(true),
            }),
            deprecated_topology: Some(Default::default()),
            hints: Some(EndpointHints {
                for_nodes: Some(vec![ForNode { name: "n".into() }]),
                for_zones: Some(vec![ForZone { name: "z".into() }]),
            }),
            hostname: name(),
            node_name: name(),
            target_ref: Some(ObjectReference {
                api_version: name(),
                field_path: name(),
                kind: name(),
                name: name(),
                namespace: name(),
                resource_version: name(),
                uid: name(),
            }),
            zone: name(),
        }]),
        metadata: Default::default(),
        ports: Some(vec![EndpointPort {
            app_protocol: name(),
            name: name(),
            port: Some(443),
            protocol: name(),
        }]),
    };
    let Type::Object(fields) = from_example(&serde_json::to_value(&slice).unwrap()) else {
        unreachable!("an EndpointSlice is an object");
    };
    let mut fields = (*fields).clone();
    let meta = apps
        .definition("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        .expect("ObjectMeta has a CEL type");
    fields.insert("metadata".into(), meta);
    Type::Object(fields.into())
}

/// `request`: the API server declares it with a hand-written type (BuildRequestType in
/// k8s.io/apiserver/pkg/admission/plugin/cel/compile.go), field names unescaped.
pub fn request() -> Type {
    let object = |fields: &[(&str, Type)]| {
        Type::object(fields.iter().map(|(n, t)| ((*n).to_owned(), t.clone())))
    };
    let gvk = object(&[
        ("group", Type::String),
        ("version", Type::String),
        ("kind", Type::String),
    ]);
    let gvr = object(&[
        ("group", Type::String),
        ("version", Type::String),
        ("resource", Type::String),
    ]);
    let strings = Type::List(Box::new(Type::String));
    let user = object(&[
        ("username", Type::String),
        ("uid", Type::String),
        ("groups", strings.clone()),
        ("extra", Type::Map(Box::new(strings))),
    ]);
    object(&[
        ("kind", gvk.clone()),
        ("resource", gvr.clone()),
        ("subResource", Type::String),
        ("requestKind", gvk),
        ("requestResource", gvr),
        ("requestSubResource", Type::String),
        ("name", Type::String),
        ("namespace", Type::String),
        ("operation", Type::String),
        ("userInfo", user),
        ("dryRun", Type::Bool),
        ("options", Type::Dyn),
    ])
}

/// The admission policy kinds and where their CEL sits is read generically (every
/// `expression`, `messageExpression` and `valueExpression` under `spec`), so a new policy
/// kind needs only its name here.
pub const POLICY_KINDS: &[&str] = &["ValidatingAdmissionPolicy", "MutatingAdmissionPolicy"];
const EXPRESSION_KEYS: &[&str] = &["expression", "messageExpression", "valueExpression"];

/// Every CEL expression in `value`, with its path in the API server's notation
/// (`spec.validations[1].expression`).
pub fn expressions(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let here = format!("{path}.{key}");
                match item {
                    Value::String(text) if EXPRESSION_KEYS.contains(&key.as_str()) => {
                        out.push((here, text.clone()))
                    }
                    _ => expressions(item, &here, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                expressions(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The environment the API server's type checker gives a policy's expressions, without
/// `variables`: `object` and `oldObject` typed from the matched resource, `params` from the
/// paramKind (declared only with one), `request` as the API server declares it.
/// What every policy on StatefulSets declares; `namespaceObject` is left dyn.
pub fn statefulset_env(apps: &Document) -> Env {
    let mut env = Env::default();
    let object = statefulset(apps);
    env.variables.insert("object".into(), object.clone());
    env.variables.insert("oldObject".into(), object);
    env.variables.insert("request".into(), request());
    env.variables.insert("namespaceObject".into(), Type::Dyn);
    env
}

pub fn policy_env(policy: &Value, apps: &Document) -> Env {
    let spec = &policy["spec"];
    let rules = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap();
    for rule in rules {
        let wanted = |key: &str, value: &str| rule[key].as_array().unwrap() == &[value];
        assert!(
            wanted("apiGroups", "apps")
                && wanted("apiVersions", "v1")
                && wanted("resources", "statefulsets"),
            "no schema here for the resources of {rule}"
        );
    }
    let mut env = statefulset_env(apps);
    let param_kind = &spec["paramKind"];
    if !param_kind.is_null() {
        assert_eq!(
            (&param_kind["apiVersion"], &param_kind["kind"]),
            (
                &Value::from("discovery.k8s.io/v1"),
                &Value::from("EndpointSlice")
            ),
            "no schema here for paramKind {param_kind}"
        );
        env.variables.insert("params".into(), endpoint_slice(apps));
    }
    env
}

/// The type checker's findings on one policy document, each as `<name> <fieldRef>: <problem>`.
/// Variables are checked in order, each seeing those before it, as the API server declares
/// them; the others see all of them.
pub fn check_policy(policy: &Value, apps: &Document) -> (usize, Vec<String>) {
    let name = policy["metadata"]["name"].as_str().unwrap_or("?");
    let mut env = policy_env(policy, apps);
    let mut declared: Vec<(String, Type)> = Vec::new();
    let mut found = Vec::new();
    let mut checked = 0;
    let mut run = |field: &str, text: &str, env: &Env, found: &mut Vec<String>| {
        checked += 1;
        match check(text, env) {
            Ok((declared, problems)) => {
                found.extend(problems.iter().map(|p| format!("{name} {field}: {p}")));
                declared
            }
            Err(e) => panic!("{name} {field} does not parse: {e}\n{text}"),
        }
    };
    let variables = policy["spec"]["variables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, variable) in variables.iter().enumerate() {
        env.variables
            .insert("variables".into(), Type::object(declared.clone()));
        let text = variable["expression"].as_str().unwrap();
        let field = format!("spec.variables[{i}].expression");
        let result = run(&field, text, &env, &mut found);
        declared.push((variable["name"].as_str().unwrap().to_owned(), result));
    }
    env.variables
        .insert("variables".into(), Type::object(declared));
    let mut all = Vec::new();
    expressions(&policy["spec"], "spec", &mut all);
    for (field, text) in all {
        if !field.starts_with("spec.variables[") {
            run(&field, &text, &env, &mut found);
        }
    }
    (checked, found)
}
