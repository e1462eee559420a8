//! The backstop's CEL type-checks as a real API server checks it. The `cel` crate evaluates
//! without declared types, so the equivalence test cannot see an expression that selects a
//! field the API server's type checker does not know; a 1.36 API server marked the deny
//! policy `undefined field 'requests'` (tests/fixtures/apiserver/README.md). Here every
//! expression of every generated admission policy is checked against the types the API server
//! builds from its own OpenAPI document.

use std::path::{Path, PathBuf};

use check::{Env, Problem, check};
use policy::{
    POLICY_KINDS, check_policy, endpoint_slice, expressions, statefulset, statefulset_env,
};
use schema::{Document, Type};
use serde_json::Value;
use stsguard::{backstop, policy::Policy};

#[path = "backstop_types/check.rs"]
mod check;
#[path = "backstop_types/policy.rs"]
mod policy;
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

/// The documents `backstop::yaml` prints for `policy`, validating and mutating, read back as
/// the API server gets them.
fn printed(policy: &Policy) -> Vec<Value> {
    let target = backstop::Target::excluding(
        backstop::DEFAULT_NAME,
        "stsguard/stsguard".parse().unwrap(),
        &["stsguard".to_owned()],
    );
    let generated = backstop::generate(policy, &target);
    [backstop::Kinds::Validating, backstop::Kinds::Mutating]
        .into_iter()
        .flat_map(|kinds| {
            let text = backstop::yaml(&generated, kinds, "test").unwrap();
            text.split("\n---\n")
                .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
                .map(|doc| serde_saphyr::from_str(doc).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn policies() -> Vec<(String, Policy)> {
    let mut out = vec![("built-in".to_owned(), Policy::builtin())];
    for entry in std::fs::read_dir(repo("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = format!("policies/{}", path.file_name().unwrap().to_string_lossy());
            out.push((name, Policy::load(&path).unwrap()));
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
    let documents: Vec<(String, Vec<Value>)> = all
        .iter()
        .map(|(origin, policy)| (origin.clone(), printed(policy)))
        .collect();
    for (origin, docs) in documents {
        for doc in docs {
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
    assert!(policies_checked >= 5, "{policies_checked} policies");
    assert!(
        expressions_checked >= 5 * 5,
        "{expressions_checked} expressions"
    );
}

/// The generator's way past the type checker, `dyn(x).field`, means what `x.field` means to
/// the `cel` crate too (the equivalence test relies on it), `has()` included.
#[test]
fn the_cel_crate_evaluates_dyn_as_the_identity() {
    let map = |key: &str, value: cel::Value| {
        cel::Value::from(std::collections::HashMap::from([(key.to_owned(), value)]))
    };
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("r", map("requests", map("storage", "1Gi".into())));
    for (expression, expected) in [
        ("has(dyn(r).requests)", true),
        ("has(dyn(r).limits)", false),
        ("'storage' in dyn(r).requests", true),
        ("string(dyn(r).requests['storage']) == '1Gi'", true),
        ("dyn(r) == r", true),
    ] {
        let program = cel::Program::compile(expression).unwrap();
        assert_eq!(
            program.execute(&ctx).unwrap(),
            cel::Value::Bool(expected),
            "{expression}"
        );
    }
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
    // The deny policy's environment then: its two variables, typed dyn here so that only the
    // selections on `object` and `oldObject` can be found.
    let mut env = statefulset_env(&apps_v1());
    env.variables.insert(
        "variables".into(),
        Type::object(["exempt", "exemptApplies"].map(|v| (v.to_owned(), Type::Dyn))),
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
    assert_eq!(
        problems(&env, "object.spec\n  .nope"),
        ["<input>:2:3: undefined field 'nope'"]
    );
    // Columns count characters, as cel-go's do.
    flags(
        "'ünïcödé' == object.spec.nope",
        ".nope",
        "undefined field 'nope'",
    );
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
    assert_eq!(
        problems(
            &env,
            "params.kind == 'EndpointSlice' && 'x' in params.metadata.labels"
        ),
        none
    );
    flags("params.metadata.kind", ".kind", "undefined field 'kind'");
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
