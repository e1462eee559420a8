//! The backstop's CEL type-checks as a real API server checks it. The `cel` crate evaluates
//! without declared types, so the equivalence test cannot see an expression that selects a
//! field the API server's type checker does not know; a 1.36 API server marked the deny
//! policy `undefined field 'requests'` (tests/fixtures/apiserver/README.md). Here every
//! expression of every generated admission policy is checked against the types the API server
//! builds from its own OpenAPI document.

use std::path::{Path, PathBuf};

use check::{Env, Problem, check};
use k8s_openapi::api::{
    core::v1::ObjectReference,
    discovery::v1::{
        Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForNode, ForZone,
    },
};
use schema::{Document, Type, from_example};
use serde_json::Value;
use stsguard::{backstop, policy::Policy};

#[path = "backstop_types/check.rs"]
mod check;
#[path = "backstop_types/schema.rs"]
mod schema;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

/// The apps/v1 document a v1.36.2 API server serves.
fn apps_v1() -> Document {
    Document::new(&read_json(
        "tests/fixtures/apiserver/openapi-v3-apps-v1-1.36.2.json",
    ))
}

fn statefulset(apps: &Document) -> Type {
    apps.resource("io.k8s.api.apps.v1.StatefulSet")
        .expect("a StatefulSet has a CEL type")
}

/// An EndpointSlice (discovery.k8s.io/v1), the type of `params` for a policy whose paramKind
/// names it. Its OpenAPI document is not among the fixtures, so the type is read from a fully
/// populated k8s-openapi value (every field present, maps left empty), and its metadata is
/// the ObjectMeta of the apps/v1 document. Every field it has is one the API server's type has
/// too (k8s-openapi is generated from the same schema), so nothing it accepts is undefined
/// there; the leaves are less exact (maps of dyn), which only makes it more lenient.
fn endpoint_slice(apps: &Document) -> Type {
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
        .resource("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        .expect("ObjectMeta has a CEL type");
    fields.insert("metadata".into(), meta);
    Type::Object(fields.into())
}

/// `request`: the API server declares it with a hand-written type (BuildRequestType in
/// k8s.io/apiserver/pkg/admission/plugin/cel/compile.go), field names unescaped.
fn request() -> Type {
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
const POLICY_KINDS: &[&str] = &["ValidatingAdmissionPolicy", "MutatingAdmissionPolicy"];
const EXPRESSION_KEYS: &[&str] = &["expression", "messageExpression", "valueExpression"];

/// Every CEL expression in `value`, with its path in the API server's notation
/// (`spec.validations[1].expression`).
fn expressions(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
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
fn policy_env(policy: &Value, apps: &Document) -> Env {
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
    let mut env = Env::default();
    let object = statefulset(apps);
    env.variables.insert("object".into(), object.clone());
    env.variables.insert("oldObject".into(), object);
    env.variables.insert("request".into(), request());
    env.variables.insert("namespaceObject".into(), Type::Dyn);
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
fn check_policy(policy: &Value, apps: &Document) -> (usize, Vec<String>) {
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

/// The documents `backstop::yaml` prints for `policy`, read back as the API server gets them.
fn printed(policy: &Policy) -> Vec<Value> {
    let generated = backstop::generate(policy, backstop::DEFAULT_NAME);
    let text = backstop::yaml(&generated, "test").unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect()
}

fn policies() -> Vec<(String, Policy)> {
    let mut out = vec![("built-in".to_owned(), Policy::builtin())];
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            out.push((path.display().to_string(), Policy::load(&path).unwrap()));
        }
    }
    out
}

#[test]
fn every_generated_expression_type_checks() {
    let apps = apps_v1();
    let mut found = Vec::new();
    let (mut policies_checked, mut expressions_checked) = (0, 0);
    let all = policies();
    assert!(all.len() >= 4, "{} policies", all.len());
    for (origin, policy) in all {
        for doc in printed(&policy) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if POLICY_KINDS.contains(&kind.as_str()) {
                let (checked, problems) = check_policy(&doc, &apps);
                policies_checked += 1;
                expressions_checked += checked;
                found.extend(problems.into_iter().map(|p| format!("{origin}: {p}")));
            } else {
                // A kind with CEL in it must be listed above, or its CEL goes unchecked.
                let mut cel = Vec::new();
                expressions(&doc, &kind, &mut cel);
                assert!(cel.is_empty(), "{origin}: unchecked CEL in {kind}: {cel:?}");
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert!(policies_checked >= 4, "{policies_checked} policies");
    assert!(
        expressions_checked >= 4 * 5,
        "{expressions_checked} expressions"
    );
}

/// The warning a v1.36.2 API server wrote on the deny policy of the built-in policy, as
/// `(expression, [(line, column, message)])`.
fn api_server_warning() -> (String, Vec<(usize, usize, String)>) {
    let status =
        read_json("tests/fixtures/apiserver/vap-stsguard-backstop-deny-status-1.36.2.json");
    let warnings = status["status"]["typeChecking"]["expressionWarnings"]
        .as_array()
        .unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["fieldRef"], "spec.validations[1].expression");
    let text = warnings[0]["warning"].as_str().unwrap();
    // Each error: "ERROR: <input>:L:C: message", the expression after " | ", a caret line.
    let lines: Vec<&str> = text.lines().collect();
    let mut expression = None;
    let mut errors = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((_, error)) = line.split_once("ERROR: <input>:") else {
            continue;
        };
        let mut parts = error.splitn(3, ':');
        let line_no = parts.next().unwrap().parse().unwrap();
        let column = parts.next().unwrap().parse().unwrap();
        errors.push((line_no, column, parts.next().unwrap().trim().to_owned()));
        let shown = lines[i + 1].strip_prefix(" | ").unwrap();
        assert!(expression.is_none_or(|e: &str| e == shown));
        expression = Some(shown);
    }
    (expression.unwrap().to_owned(), errors)
}

#[test]
fn the_checker_finds_what_the_api_server_found() {
    let (expression, expected) = api_server_warning();
    let columns: Vec<usize> = expected.iter().map(|(_, c, _)| *c).collect();
    assert_eq!(columns, [539, 601, 638, 1043, 1105, 1142]);
    // The deny policy's environment, from what the built-in policy prints today.
    let apps = apps_v1();
    let deny = printed(&Policy::builtin())
        .into_iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let mut env = policy_env(&deny, &apps);
    let variables = deny["spec"]["variables"].as_array().unwrap();
    env.variables.insert(
        "variables".into(),
        Type::object(
            variables
                .iter()
                .map(|v| (v["name"].as_str().unwrap().to_owned(), Type::Dyn)),
        ),
    );
    let (_, problems) = check(&expression, &env).unwrap();
    let got: Vec<(usize, usize, String)> = problems
        .into_iter()
        .map(
            |Problem {
                 line,
                 column,
                 message,
             }| (line, column, message),
        )
        .collect();
    assert_eq!(got, expected);
    assert!(
        got.iter()
            .all(|(_, _, m)| m == "undefined field 'requests'")
    );
}

fn object_env() -> Env {
    let apps = apps_v1();
    let mut env = Env::default();
    env.variables.insert("object".into(), statefulset(&apps));
    env.variables.insert("params".into(), endpoint_slice(&apps));
    env
}

/// The messages the checker gives `expression` in an environment with `object` and `params`.
fn problems(env: &Env, expression: &str) -> Vec<String> {
    let (_, problems) = check(expression, env).unwrap();
    problems.into_iter().map(|p| p.to_string()).collect()
}

/// The message expected for the one place in `expression` where `at` (which starts with the
/// character cel-go points at: a selection's `.`, a `has(`'s parenthesis) occurs.
fn at(expression: &str, at: &str, message: &str) -> Vec<String> {
    let found: Vec<_> = expression.match_indices(at).collect();
    assert_eq!(found.len(), 1, "{at} in {expression}");
    let column = expression[..found[0].0].chars().count() + 1;
    vec![format!("<input>:1:{column}: {message}")]
}

#[test]
fn the_resolver_types_a_statefulset_as_the_api_server_does() {
    let env = object_env();
    let none: Vec<String> = Vec::new();
    let flags = |expression: &str, place: &str, message: &str| {
        assert_eq!(problems(&env, expression), at(expression, place, message));
    };
    assert_eq!(problems(&env, "object.spec.replicas > 1"), none);
    flags("object.spec.nope", ".nope", "undefined field 'nope'");
    // Quantity (oneOf string, number; no type) has no CEL type: maps of it are dropped.
    flags(
        "object.spec.volumeClaimTemplates.exists(t, has(t.spec.resources.requests))",
        "(t.spec",
        "undefined field 'requests'",
    );
    flags(
        "object.spec.volumeClaimTemplates.exists(t, 'storage' in t.spec.resources.requests)",
        ".requests",
        "undefined field 'requests'",
    );
    flags(
        "object.spec.template.spec.containers[0].resources.limits",
        ".limits",
        "undefined field 'limits'",
    );
    // Through dyn(): what the generator writes.
    assert_eq!(
        problems(
            &env,
            "object.spec.volumeClaimTemplates.exists(t, has(dyn(t.spec.resources).requests) \
             && 'storage' in dyn(t.spec.resources).requests)"
        ),
        none
    );
    // IntOrString is dyn: anything may be selected on it.
    assert_eq!(
        problems(
            &env,
            "object.spec.updateStrategy.rollingUpdate.maxUnavailable.anything"
        ),
        none
    );
    flags(
        "object.spec.replicas.value",
        ".value",
        "type 'int' does not support field selection",
    );
    // Maps: `m.key` is a key lookup.
    assert_eq!(problems(&env, "object.metadata.labels.app == 'x'"), none);
    // The resource root always has these, and `namespace` is escaped like every reserved word.
    assert_eq!(
        problems(
            &env,
            "object.kind + object.apiVersion + object.metadata.generateName"
        ),
        none
    );
    flags(
        "object.metadata.namespace",
        ".namespace",
        "undefined field 'namespace'",
    );
    assert_eq!(problems(&env, "object.metadata.__namespace__"), none);
}

#[test]
fn the_checker_follows_comprehensions_conditionals_and_literals() {
    let env = object_env();
    let none: Vec<String> = Vec::new();
    let flags = |expression: &str, place: &str, message: &str| {
        assert_eq!(problems(&env, expression), at(expression, place, message));
    };
    // The element type of a list, through a conditional with an empty literal.
    flags(
        "(has(object.spec.template.spec.initContainers) ? \
         object.spec.template.spec.initContainers : []).exists(c, c.nope)",
        ".nope",
        "undefined field 'nope'",
    );
    // A map's keys are strings.
    flags(
        "object.metadata.labels.all(k, k.size > 0)",
        ".size",
        "type 'string' does not support field selection",
    );
    // Inner variables shadow outer ones and end with their comprehension.
    assert_eq!(
        problems(
            &env,
            "object.spec.volumeClaimTemplates.all(t, [1].all(t, true) && has(t.metadata))"
        ),
        none
    );
    flags(
        "[1].all(t, true) && t.x",
        "t.x",
        "undeclared reference to 't'",
    );
    // Struct literals (MutatingAdmissionPolicy's JSONPatch) are dyn; their values are checked.
    flags(
        "[JSONPatch{op: 'add', path: '/spec/x', value: object.spec.nope}]",
        ".nope",
        "undefined field 'nope'",
    );
    assert_eq!(problems(&env, "[JSONPatch{op: 'add'}][0].anything"), none);
    // params: an EndpointSlice.
    assert_eq!(
        problems(
            &env,
            "params.endpoints.exists(e, has(e.conditions.ready) && e.conditions.ready \
             && e.targetRef.name == 'x')"
        ),
        none
    );
    flags(
        "params.endpoints.exists(e, e.ready)",
        ".ready",
        "undefined field 'ready'",
    );
}

#[test]
fn variables_are_typed_from_earlier_variables_only() {
    let apps = apps_v1();
    let policy: Value = serde_json::json!({
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["statefulsets"]
            }]},
            "variables": [
                {"name": "spec", "expression": "variables.late"},
                {"name": "late", "expression": "object.spec"},
            ],
            "validations": [
                {"expression": "variables.late.nope", "messageExpression": "params.x"},
                {"expression": "variables.spec.x && request.operation == 'CREATE'"},
            ],
        }
    });
    let (checked, found) = check_policy(&policy, &apps);
    assert_eq!(checked, 5);
    assert_eq!(
        found,
        [
            "p spec.variables[0].expression: <input>:1:10: undefined field 'late'",
            "p spec.validations[0].expression: <input>:1:15: undefined field 'nope'",
            "p spec.validations[0].messageExpression: <input>:1:1: undeclared reference to 'params'",
        ]
    );
}
