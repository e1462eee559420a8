//! Hostile requests against the real server over TLS, each with the answer it must get, and after
//! each of them proof that the server still answers a captured review correctly: malformed and
//! deeply nested JSON, huge values and wrong types in the fields the rules read, reviews that lie
//! about their kind, invalid UTF-8, duplicate keys, oversized bodies and headers, slow and silent
//! clients (HTTP/1.1 and HTTP/2), HTTP/2 frame floods, plaintext HTTP on the TLS port, and TLS
//! versions below 1.2. The JSON cases run over HTTP/1.1 and HTTP/2.

mod support;

use std::{
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Request, body::Frame};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use stsguard::{lookup::NoLookup, policy::Policy, server::Limits};
use support::{BOTH, Http, Reply, TestServer, client, fixture, patch_of, warnings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The captured review every check of "the server still works" sends: denied for
/// sts-service-name.
const NOSVC: &str = "validate-StatefulSet-CREATE-cap-nosvc-1";
const WEB: &str = "validate-StatefulSet-CREATE-cap-web-1";
const WEB_SERVICE: &str = "validate-Service-CREATE-cap-web-1";
const MUTATE_DB: &str = "mutate-StatefulSet-CREATE-cap-db-1";
const MUTATE_SERVICE: &str = "mutate-Service-CREATE-cap-web-1";

/// Longest any single hostile request may take to be answered (debug build, shared machine).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// What a malformed body is told (HTTP 400, text).
const NOT_A_REVIEW: &str = "request body is not an admission.k8s.io/v1 AdmissionReview: ";

fn review_value(file: &str) -> Value {
    serde_json::from_slice(&fixture(file)).unwrap()
}

fn uid_of(file: &str) -> String {
    review_value(file)["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A captured review with its `request` changed.
fn review_with(file: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = review_value(file);
    change(&mut review["request"]);
    serde_json::to_vec(&review).unwrap()
}

/// Sets the value at a JSON pointer, creating missing objects on the way.
fn set(root: &mut Value, pointer: &str, value: Value) {
    let mut at = root;
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().unwrap();
    for token in parents {
        at = match at {
            Value::Array(items) => &mut items[token.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap_or_else(|| panic!("{pointer}: not an object at {token}"))
                .entry(token.clone())
                .or_insert_with(|| json!({})),
        };
    }
    match at {
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        other => {
            other.as_object_mut().unwrap().insert(last.clone(), value);
        }
    }
}

/// Sends a hostile body on a fresh connection, then proves the server still answers a captured
/// review correctly.
async fn post(server: &TestServer, http: Http, path: &str, body: Vec<u8>) -> Reply {
    let reply = send(server, http, path, body).await;
    assert_still_serving(server, &format!("{http:?} {path} {}", reply.status)).await;
    reply
}

async fn send(server: &TestServer, http: Http, path: &str, body: Vec<u8>) -> Reply {
    let client = client(server, http);
    tokio::time::timeout(ANSWER_WITHIN, client.post(&server.url(path), body))
        .await
        .unwrap_or_else(|_| panic!("{http:?} {path}: no answer within {ANSWER_WITHIN:?}"))
}

/// Proves the server is up and right: a captured review, on fresh connections over HTTP/1.1 and
/// HTTP/2, gets exactly its known answer.
async fn assert_still_serving(server: &TestServer, after: &str) {
    for http in BOTH {
        let reply = send(server, http, "/validate", fixture(NOSVC)).await;
        assert_eq!(
            reply.status,
            200,
            "after {after} ({http:?}): {}",
            reply.text()
        );
        let review = reply.json();
        let response = &review["response"];
        assert_eq!(response["uid"], uid_of(NOSVC), "after {after}");
        assert_eq!(response["allowed"], false, "after {after}: {review}");
        assert_eq!(response["status"]["code"], 403, "after {after}: {review}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "stsguard denied StatefulSet \"nosvc\": 1 violation\n- sts-service-name at \
                 spec.serviceName: serviceName is missing"
            ),
            "after {after}: {message}"
        );
    }
}

/// Asserts an HTTP 400 whose one-line text says the body is not a review, and why.
fn assert_rejected(reply: &Reply, label: &str, says: &str) {
    assert_eq!(reply.status, 400, "{label}: {}", reply.text());
    let text = reply.text();
    assert!(text.contains(says), "{label}: {text:?} should say {says:?}");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1 && text.len() < 4096,
        "{label}: {text:?}"
    );
}

/// Asserts an HTTP 400 for a body that is not JSON or not shaped like a review.
fn assert_not_a_review(reply: &Reply, label: &str, says: &str) {
    assert_rejected(reply, label, says);
    assert!(
        reply.text().starts_with(NOT_A_REVIEW),
        "{label}: {}",
        reply.text()
    );
}

/// Asserts an AdmissionReview answer that refuses a review it cannot read: the request's uid,
/// allowed false, status code 400 and a message that starts with `prefix` and says `says`.
fn assert_invalid(reply: &Reply, label: &str, uid: &str, prefix: &str, says: &str) {
    assert_eq!(reply.status, 200, "{label}: {}", reply.text());
    let review = reply.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{label}");
    assert_eq!(review["kind"], "AdmissionReview", "{label}");
    let response = &review["response"];
    assert_eq!(response["uid"], uid, "{label}: {review}");
    assert_eq!(response["allowed"], false, "{label}: {review}");
    assert_eq!(response["status"]["code"], 400, "{label}: {review}");
    assert_eq!(
        response["status"]["reason"], "BadRequest",
        "{label}: {review}"
    );
    assert!(response.get("patch").is_none(), "{label}: {review}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(prefix) && message.contains(says),
        "{label}: {message:?} should start with {prefix:?} and say {says:?}"
    );
}

const READ_STS: &str = "cannot read the review as a apps/v1 StatefulSet: ";
const READ_SVC: &str = "cannot read the review as a v1 Service: ";

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() {
    let server = TestServer::start(Policy::builtin()).await;
    let good = fixture(WEB);
    let text = String::from_utf8(good.clone()).unwrap();
    let mut cases: Vec<(String, Vec<u8>, &str)> = vec![
        ("empty body".into(), vec![], "EOF while parsing a value"),
        (
            "whitespace".into(),
            b"  \n\t ".to_vec(),
            "EOF while parsing",
        ),
        ("null".into(), b"null".to_vec(), "invalid type: null"),
        (
            "a number".into(),
            b"42".to_vec(),
            "invalid type: integer `42`",
        ),
        (
            "a string".into(),
            b"\"review\"".to_vec(),
            "invalid type: string",
        ),
        (
            "an empty list".into(),
            b"[]".to_vec(),
            "expected struct Envelope",
        ),
        (
            "an empty object".into(),
            b"{}".to_vec(),
            "expected apiVersion \"admission.k8s.io/v1\" and kind \"AdmissionReview\", got \
             apiVersion \"\" and kind \"\"",
        ),
        (
            "a byte order mark".into(),
            [&b"\xef\xbb\xbf"[..], &good].concat(),
            "expected value at line 1 column 1",
        ),
        (
            "trailing garbage".into(),
            [&good[..], b"}"].concat(),
            "trailing characters",
        ),
        (
            "two reviews".into(),
            [&good[..], &good[..]].concat(),
            "trailing characters",
        ),
        (
            "a comment".into(),
            [b"// review\n", &good[..]].concat(),
            "expected value at line 1 column 1",
        ),
        (
            "a single-quoted string".into(),
            b"{'apiVersion': 'admission.k8s.io/v1'}".to_vec(),
            "key must be a string",
        ),
        (
            "NaN".into(),
            text.replacen("\"replicas\": 2", "\"replicas\": NaN", 1)
                .into_bytes(),
            "expected value",
        ),
        (
            "a raw control character in a string".into(),
            text.replacen("\"web\"", "\"w\u{1}b\"", 1).into_bytes(),
            "control character (\\u0000-\\u001F) found while parsing a string",
        ),
        (
            "a lone surrogate escape".into(),
            text.replacen("\"uid\": \"", "\"uid\": \"\\ud800\", \"was\": \"", 1)
                .into_bytes(),
            "unexpected end of hex escape",
        ),
    ];
    // Truncated anywhere: right after the opening brace, inside a key, inside a string value,
    // inside the object, before the last brace.
    let end = text.trim_end().len();
    for cut in [1, 5, 40, 60, end / 2, end - 1] {
        cases.push((
            format!("truncated at byte {cut}"),
            good[..cut].to_vec(),
            "EOF while parsing",
        ));
    }
    for http in BOTH {
        for (label, body, says) in &cases {
            for path in ["/validate", "/mutate"] {
                let reply = post(&server, http, path, body.clone()).await;
                let label = format!("{http:?} {path} {label}");
                if says.starts_with("expected apiVersion") {
                    assert_rejected(&reply, &label, says);
                } else {
                    assert_not_a_review(&reply, &label, says);
                }
            }
        }
    }
    assert_still_serving(&server, "malformed bodies").await;
    server.stop().await;
}

#[tokio::test]
async fn envelope_problems_get_400_naming_the_problem() {
    let server = TestServer::start(Policy::builtin()).await;
    let v1beta1 = {
        let mut review = review_value(WEB);
        review["apiVersion"] = json!("admission.k8s.io/v1beta1");
        serde_json::to_vec(&review).unwrap()
    };
    let wrong_kind = {
        let mut review = review_value(WEB);
        review["kind"] = json!("StatefulSet");
        serde_json::to_vec(&review).unwrap()
    };
    let no_request = {
        let mut review = review_value(WEB);
        review.as_object_mut().unwrap().remove("request");
        serde_json::to_vec(&review).unwrap()
    };
    let null_request = {
        let mut review = review_value(WEB);
        review["request"] = Value::Null;
        serde_json::to_vec(&review).unwrap()
    };
    let without = |field: &str| {
        review_with(WEB, |r| {
            r.as_object_mut().unwrap().remove(field);
        })
    };
    let with = |field: &str, value: Value| review_with(WEB, |r| r[field] = value);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "apiVersion admission.k8s.io/v1beta1",
            v1beta1,
            "expected apiVersion \"admission.k8s.io/v1\" and kind \"AdmissionReview\", got \
             apiVersion \"admission.k8s.io/v1beta1\" and kind \"AdmissionReview\"",
        ),
        (
            "kind StatefulSet",
            wrong_kind,
            "got apiVersion \"admission.k8s.io/v1\" and kind \"StatefulSet\"",
        ),
        (
            "no request",
            no_request,
            "the AdmissionReview has no `request`",
        ),
        (
            "request null",
            null_request,
            "the AdmissionReview has no `request`",
        ),
        (
            "no uid",
            without("uid"),
            "the AdmissionReview's request has no `uid`",
        ),
        (
            "uid null",
            with("uid", Value::Null),
            "the AdmissionReview's request has no `uid`",
        ),
        (
            "no kind",
            without("kind"),
            "the AdmissionReview's request has no `kind`",
        ),
        (
            "no operation",
            without("operation"),
            "the AdmissionReview's request has no `operation`",
        ),
        (
            "uid a number",
            with("uid", json!(42)),
            "invalid type: integer `42`, expected a string",
        ),
        (
            "uid an object",
            with("uid", json!({"uid": "x"})),
            "invalid type: map, expected a string",
        ),
        (
            "kind a string",
            with("kind", json!("StatefulSet")),
            "invalid type: string \"StatefulSet\"",
        ),
        (
            "operation unknown",
            with("operation", json!("PATCH")),
            "unknown variant `PATCH`",
        ),
        (
            "operation a list",
            with("operation", json!(["CREATE"])),
            "expected value",
        ),
        (
            "name a number",
            with("name", json!(7)),
            "invalid type: integer `7`, expected a string",
        ),
        (
            "namespace a list",
            with("namespace", json!(["cap"])),
            "invalid type: sequence, expected a string",
        ),
        (
            "dryRun a string",
            with("dryRun", json!("true")),
            "invalid type: string \"true\", expected a boolean",
        ),
        (
            "subResource a number",
            with("subResource", json!(1)),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "duplicate uid",
            String::from_utf8(fixture(WEB))
                .unwrap()
                .replacen("\"uid\":", "\"uid\": \"smuggled\", \"uid\":", 1)
                .into_bytes(),
            "duplicate field `uid`",
        ),
        (
            "duplicate request",
            String::from_utf8(fixture(WEB))
                .unwrap()
                .replacen("\"request\":", "\"request\": {}, \"request\":", 1)
                .into_bytes(),
            "duplicate field `request`",
        ),
    ];
    for http in BOTH {
        for (label, body, says) in &cases {
            for path in ["/validate", "/mutate"] {
                let reply = post(&server, http, path, body.clone()).await;
                assert_rejected(&reply, &format!("{http:?} {path} {label}"), says);
            }
        }
    }
    assert_still_serving(&server, "envelope problems").await;
    server.stop().await;
}

#[tokio::test]
async fn deep_nesting_is_a_400_or_ignored_never_a_crash() {
    let server = TestServer::start(Policy::builtin()).await;
    const DEPTH: usize = 100_000;
    let open = "[".repeat(DEPTH);
    let balanced = format!("{open}{}", "]".repeat(DEPTH));
    let objects = format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH));
    let mut text_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "100,000 [ as the body",
            open.clone().into_bytes(),
            "invalid type: sequence, expected a string",
        ),
        (
            "100,000 { as the body",
            "{\"a\":".repeat(DEPTH).into_bytes(),
            "EOF while parsing",
        ),
    ];
    // Inside the envelope's own fields.
    text_cases.push((
        "100,000 [ as request.uid",
        replace_placeholder(
            &review_with(WEB, |r| r["uid"] = json!("PLACEHOLDER")),
            &balanced,
        ),
        "invalid type: sequence, expected a string",
    ));
    for http in BOTH {
        for (label, body, says) in &text_cases {
            let reply = post(&server, http, "/validate", body.clone()).await;
            assert_not_a_review(&reply, &format!("{http:?} {label}"), says);
        }
    }

    // Inside the object: where the typed object reads the value, the recursion limit makes it a
    // review the webhook cannot read (400 with the uid); where nothing reads it (an unknown
    // field, `managedFields`, the request's `options`), it is skipped without recursion and the
    // review is answered as if it were absent.
    let uid = uid_of(WEB);
    let inside = |pointer: &str, nested: &str| {
        let body = review_with(WEB, |r| set(r, pointer, json!("PLACEHOLDER")));
        replace_placeholder(&body, nested)
    };
    let read_cases = [(
        "spec.template.spec.containers",
        inside("/object/spec/template/spec/containers", &balanced),
        "invalid type: sequence, expected Container",
    )];
    for http in BOTH {
        for (label, body, says) in &read_cases {
            let reply = post(&server, http, "/validate", body.clone()).await;
            assert_invalid(&reply, &format!("{http:?} {label}"), &uid, READ_STS, says);
        }
        for (pointer, nested) in [
            ("/object/metadata/managedFields/0/fieldsV1", &balanced),
            ("/options", &objects),
            ("/object/spec/nested", &balanced),
            ("/object/metadata/nested", &objects),
            ("/nested", &balanced),
        ] {
            let reply = post(&server, http, "/validate", inside(pointer, nested)).await;
            assert_eq!(reply.status, 200, "{http:?} {pointer}: {}", reply.text());
            let review = reply.json();
            assert_eq!(review["response"]["uid"], uid.as_str(), "{pointer}");
            assert_eq!(review["response"]["allowed"], true, "{pointer}: {review}");
            assert!(warnings(&review).is_empty(), "{pointer}: {review}");
        }
    }
    assert_still_serving(&server, "deep nesting").await;
    server.stop().await;
}

/// Replaces the JSON string "PLACEHOLDER" in a body with raw JSON text.
fn replace_placeholder(body: &[u8], raw: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap();
    assert_eq!(text.matches("\"PLACEHOLDER\"").count(), 1);
    text.replacen("\"PLACEHOLDER\"", raw, 1).into_bytes()
}

fn containers(n: usize, probe: bool, mount: bool) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let mut c = json!({"name": format!("c{i}"), "image": "x"});
                if probe {
                    c["readinessProbe"] = json!({"tcpSocket": {"port": 80}});
                }
                if mount {
                    c["volumeMounts"] = json!([{"name": format!("v{i}"), "mountPath": "/d"}]);
                }
                c
            })
            .collect(),
    )
}

#[tokio::test]
async fn huge_values_in_fields_the_rules_read_are_reviewed() {
    let server = TestServer::start(Policy::builtin()).await;
    const N: usize = 10_000;
    let two_mb = 2 * 1024 * 1024;

    for http in BOTH {
        // 10,000 containers with probes: nothing to say.
        let probed = review_with(WEB, |r| {
            r["object"]["spec"]["template"]["spec"]["containers"] = containers(N, true, false);
        });
        let review = post(&server, http, "/validate", probed.clone())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}");
        assert!(warnings(&review).is_empty(), "{http:?}");
        let review = post(&server, http, "/mutate", probed).await.json();
        assert_eq!(review["response"]["allowed"], true);
        assert!(patch_of(&review).is_none(), "{http:?}");

        // 10,000 containers without probes: one warning for the rule, naming where, within the
        // API server's warning budget (4,096 characters, each cut to 256 past it).
        let unprobed = review_with(WEB, |r| {
            r["object"]["spec"]["template"]["spec"]["containers"] = containers(N, false, false);
        });
        let review = post(&server, http, "/validate", unprobed).await.json();
        assert_eq!(review["response"]["allowed"], true);
        let found = warnings(&review);
        assert_eq!(found.len(), 1, "{http:?}: {found:?}");
        assert!(
            found[0].starts_with(
                "sts-readiness-probe spec.template.spec.containers[0].readinessProbe: \
                 container \"c0\" has no readinessProbe; also at \
                 spec.template.spec.containers[1].readinessProbe"
            ),
            "{}",
            found[0]
        );
        assert!(found[0].ends_with(" more"), "{}", found[0]);
        let all = support::all_warnings(&review);
        assert!(
            all.iter()
                .all(|w| w.chars().count() <= stsguard::review::MAX_WARNING_CHARS)
        );
        let total: usize = all.iter().map(|w| w.chars().count()).sum();
        assert!(total <= stsguard::review::WARNING_BUDGET, "{total}");

        // 10,000 containers that each mount a volume defined nowhere: 10,000 denials, and the
        // mutating webhook injects 10,000 templates.
        let mounting = review_with(WEB, |r| {
            r["object"]["spec"]["template"]["spec"]["containers"] = containers(N, true, true);
        });
        let review = post(&server, http, "/validate", mounting.clone())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["status"]["code"], 403);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("stsguard denied StatefulSet \"web\": 10000 violations\n"),
            "{}",
            &message[..200]
        );
        // The first 50 are spelled out, then how many more.
        assert_eq!(message.matches("\n- sts-volume-mounts at ").count(), 50);
        assert!(message.ends_with(&format!(
            "\n- … and {} more (stsguard audit lists them all)",
            N - 50
        )));
        let review = post(&server, http, "/mutate", mounting.clone())
            .await
            .json();
        let patch = patch_of(&review).expect("templates are injected");
        let mut object =
            serde_json::from_slice::<Value>(&mounting).unwrap()["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(
            object["spec"]["volumeClaimTemplates"]
                .as_array()
                .unwrap()
                .len(),
            N + 1
        );

        // 10,000 volumeClaimTemplates without access modes: 10,000 denials; the mutating
        // webhook fills each in.
        let incomplete = review_with(WEB, |r| {
            let templates: Vec<Value> = (0..N)
                .map(|i| {
                    json!({"metadata": {"name": format!("t{i}")},
                           "spec": {"resources": {"requests": {"storage": "1Gi"}}}})
                })
                .collect();
            r["object"]["spec"]["volumeClaimTemplates"] = Value::Array(templates);
        });
        let review = post(&server, http, "/validate", incomplete.clone())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], false);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        // The www mount of the fixture no longer has a template: one more violation.
        assert!(
            message.starts_with("stsguard denied StatefulSet \"web\": 10001 violations\n"),
            "{}",
            &message[..200]
        );
        let review = post(&server, http, "/mutate", incomplete).await.json();
        let ops = patch_of(&review).expect("templates are completed").0;
        assert_eq!(
            ops.iter()
                .filter(|op| op.path().to_string().ends_with("/spec/accessModes"))
                .count(),
            N
        );

        // 20,000 selector labels that the template carries: selected, allowed.
        let labels: serde_json::Map<String, Value> =
            (0..20_000).map(|i| (format!("l{i}"), json!("v"))).collect();
        let many_labels = review_with(WEB, |r| {
            r["object"]["spec"]["selector"]["matchLabels"] = Value::Object(labels.clone());
            r["object"]["spec"]["template"]["metadata"]["labels"] = Value::Object(labels.clone());
        });
        let review = post(&server, http, "/validate", many_labels).await.json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}");

        // A 2 MB serviceName: denied, named as invalid.
        let long_name = review_with(WEB, |r| {
            r["object"]["spec"]["serviceName"] = json!("a".repeat(two_mb));
        });
        let review = post(&server, http, "/validate", long_name).await.json();
        assert_eq!(review["response"]["allowed"], false);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("is not a valid Service name: it is longer than 63 characters"),
            "{}",
            &message[..200]
        );

        // A 2 MB exemption reason: the exemption holds, with its reason.
        let reason = "r".repeat(two_mb);
        let long_reason = review_with(NOSVC, |r| {
            set(
                r,
                "/object/metadata/annotations/stsguard.io~1exempt",
                json!("sts-service-name"),
            );
            set(
                r,
                "/object/metadata/annotations/stsguard.io~1exempt-reason",
                json!(reason),
            );
        });
        let review = post(&server, http, "/validate", long_reason).await.json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}");
        // The reason is shown clipped: an annotation must not make the answer huge.
        assert_eq!(
            warnings(&review),
            [format!(
                "exempted ({}…): sts-service-name spec.serviceName: serviceName is missing, \
                 so the pods get no stable network identity",
                "r".repeat(64)
            )]
        );

        // A 2 MB annotation the rules do not read: allowed as before.
        let padded = review_with(WEB, |r| {
            set(
                r,
                "/object/metadata/annotations/example.com~1padding",
                json!("p".repeat(two_mb)),
            );
        });
        let review = post(&server, http, "/validate", padded).await.json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}");
        assert!(warnings(&review).is_empty());
    }
    assert_still_serving(&server, "huge values").await;
    server.stop().await;
}

/// An exemption annotation listing a million unknown ids must not turn into a million warnings:
/// the API server keeps only about 4 KiB of warnings, and a 2 MB annotation that makes the
/// webhook build and send a response many times its size is an amplification any user who may
/// create a StatefulSet can trigger.
#[tokio::test]
async fn a_2mb_exemption_list_does_not_amplify_the_answer() {
    let server = TestServer::start(Policy::builtin()).await;
    let repeated = "x,".repeat(1024 * 1024);
    let distinct: String = (0..250_000).map(|i| format!("x{i},")).collect();
    let mut amplified = Vec::new();
    for (ids, http) in [(&repeated, Http::One), (&distinct, Http::Two)] {
        let body = review_with(NOSVC, |r| {
            set(
                r,
                "/object/metadata/annotations/stsguard.io~1exempt",
                json!(ids),
            );
        });
        let request_bytes = body.len();
        let started = Instant::now();
        let reply = post(&server, http, "/validate", body.clone()).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{http:?}");
        let review = reply.json();
        assert_eq!(review["response"]["uid"], uid_of(NOSVC));
        // No id applies, so the serviceName denial stands...
        assert_eq!(review["response"]["allowed"], false, "{http:?}");
        assert_eq!(review["response"]["status"]["code"], 403);
        // ...and the answer says the ids are unknown without repeating itself a million times.
        let said = warnings(&review);
        assert!(
            said.iter().any(|w| w.contains("not a rule or mutator id")),
            "{http:?}: {:?}",
            said.first()
        );
        if reply.body.len() > request_bytes {
            amplified.push(format!(
                "{http:?}: a {request_bytes}-byte review got a {}-byte answer with {} warnings \
                 in {took:?}",
                reply.body.len(),
                said.len()
            ));
        }
    }
    assert_still_serving(&server, "a 2 MB exemption list").await;
    assert!(amplified.is_empty(), "{amplified:#?}");
    server.stop().await;
}

/// A JSON pointer under `request`, the wrongly typed value put there, and what the answer's
/// message must say.
type WrongType = (&'static str, Value, &'static str);

#[tokio::test]
async fn wrong_types_in_fields_the_rules_read_are_answered_invalid_with_the_uid() {
    let server = TestServer::start(Policy::builtin()).await;
    // (review, pointer under request, value, what the message must say)
    let sts: &[WrongType] = &[
        (
            "/object/spec/serviceName",
            json!(42),
            "invalid type: integer `42`, expected a string",
        ),
        (
            "/object/spec/replicas",
            json!("three"),
            "invalid type: string \"three\", expected i32",
        ),
        (
            "/object/spec/replicas",
            json!(1.5),
            "invalid type: floating point `1.5`, expected i32",
        ),
        (
            "/object/spec/replicas",
            json!(4_294_967_296_u64),
            "invalid value: integer `4294967296`, expected i32",
        ),
        (
            "/object/spec/replicas",
            json!(true),
            "invalid type: boolean `true`, expected i32",
        ),
        (
            "/object/spec/template/spec/containers",
            json!({"name": "nginx"}),
            "invalid type: map, expected a sequence",
        ),
        (
            "/object/spec/template/spec/containers/0",
            json!("nginx"),
            "invalid type: string \"nginx\", expected Container",
        ),
        (
            "/object/spec/template/spec/containers/0/name",
            json!(["nginx"]),
            "invalid type: sequence, expected a string",
        ),
        (
            "/object/spec/template/spec/containers/0/readinessProbe",
            json!("yes"),
            "invalid type: string \"yes\", expected Probe",
        ),
        (
            "/object/spec/template/spec/containers/0/volumeMounts",
            json!("www"),
            "invalid type: string \"www\", expected a sequence",
        ),
        (
            "/object/spec/template/spec/containers/0/volumeMounts/0/name",
            json!({"name": "www"}),
            "invalid type: map, expected a string",
        ),
        (
            "/object/spec/template/spec/initContainers",
            json!(1),
            "invalid type: integer `1`, expected a sequence",
        ),
        (
            "/object/spec/template/spec/volumes",
            json!("data"),
            "invalid type: string \"data\", expected a sequence",
        ),
        (
            "/object/spec/template/spec/terminationGracePeriodSeconds",
            json!("30"),
            "invalid type: string \"30\", expected i64",
        ),
        (
            "/object/spec/template/spec/affinity",
            json!([]),
            "invalid type: sequence, expected Affinity",
        ),
        (
            "/object/spec/template/spec/topologySpreadConstraints",
            json!({}),
            "invalid type: map, expected a sequence",
        ),
        (
            "/object/spec/template/metadata/labels",
            json!(["app"]),
            "invalid type: sequence, expected a map",
        ),
        (
            "/object/spec/template/metadata/labels/app",
            json!(7),
            "invalid type: integer `7`, expected a string",
        ),
        (
            "/object/spec/selector",
            json!("app=web"),
            "invalid type: string \"app=web\", expected LabelSelector",
        ),
        (
            "/object/spec/selector/matchLabels",
            json!("app=web"),
            "invalid type: string \"app=web\", expected a map",
        ),
        (
            "/object/spec/selector/matchExpressions",
            json!({}),
            "invalid type: map, expected a sequence",
        ),
        (
            "/object/spec/volumeClaimTemplates",
            json!("www"),
            "invalid type: string \"www\", expected a sequence",
        ),
        (
            "/object/spec/volumeClaimTemplates/0/metadata/name",
            json!(1),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "/object/spec/volumeClaimTemplates/0/metadata/labels",
            json!(5),
            "invalid type: integer `5`, expected a map",
        ),
        (
            "/object/spec/volumeClaimTemplates/0/spec/accessModes",
            json!("ReadWriteOnce"),
            "invalid type: string \"ReadWriteOnce\", expected a sequence",
        ),
        (
            "/object/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            json!(["1Gi"]),
            "invalid type: sequence, expected Quantity",
        ),
        (
            "/object/spec/updateStrategy/type",
            json!(["RollingUpdate"]),
            "invalid type: sequence, expected a string",
        ),
        (
            "/object/spec/updateStrategy/rollingUpdate/partition",
            json!("0"),
            "invalid type: string \"0\", expected i32",
        ),
        (
            "/object/spec/podManagementPolicy",
            json!(false),
            "invalid type: boolean `false`, expected a string",
        ),
        (
            "/object/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
            json!({}),
            "invalid type: map, expected a string",
        ),
        (
            "/object/spec",
            json!("spec"),
            "invalid type: string \"spec\", expected StatefulSetSpec",
        ),
        (
            "/object/metadata",
            json!(1),
            "invalid type: integer `1`, expected ObjectMeta",
        ),
        (
            "/object/metadata/name",
            json!(5),
            "invalid type: integer `5`, expected a string",
        ),
        (
            "/object/metadata/namespace",
            json!(true),
            "invalid type: boolean `true`, expected a string",
        ),
        (
            "/object/metadata/annotations",
            json!([]),
            "invalid type: sequence, expected a map",
        ),
        (
            "/object/metadata/annotations/stsguard.io~1exempt",
            json!(1),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "/object/metadata/annotations/stsguard.io~1exempt-until",
            json!(20260101),
            "invalid type: integer `20260101`, expected a string",
        ),
        (
            "/object/apiVersion",
            json!("apps/v1beta1"),
            "invalid value: string \"apps/v1beta1\", expected apps/v1",
        ),
        (
            "/object/kind",
            json!("Deployment"),
            "invalid value: string \"Deployment\", expected StatefulSet",
        ),
        (
            "/object",
            json!("StatefulSet"),
            "invalid type: string \"StatefulSet\", expected StatefulSet",
        ),
        (
            "/object",
            json!([]),
            "invalid type: sequence, expected StatefulSet",
        ),
    ];
    let svc: &[WrongType] = &[
        (
            "/object/spec/clusterIP",
            json!(0),
            "invalid type: integer `0`, expected a string",
        ),
        (
            "/object/spec/type",
            json!(["ClusterIP"]),
            "invalid type: sequence, expected a string",
        ),
        (
            "/object/spec/selector",
            json!("app=web"),
            "invalid type: string \"app=web\", expected a map",
        ),
        (
            "/object/spec/selector/app",
            json!(1),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "/object/spec/publishNotReadyAddresses",
            json!("true"),
            "invalid type: string \"true\", expected a boolean",
        ),
        (
            "/object/spec/ports",
            json!({}),
            "invalid type: map, expected a sequence",
        ),
        (
            "/object/metadata/name",
            json!([]),
            "invalid type: sequence, expected a string",
        ),
        (
            "/object/metadata/annotations/stsguard.io~1exempt",
            json!(["*"]),
            "invalid type: sequence, expected a string",
        ),
    ];
    let reviews: [(&str, &str, &str, &[WrongType]); 5] = [
        (WEB, "/validate", READ_STS, sts),
        (MUTATE_DB, "/mutate", READ_STS, sts),
        (
            "validate-StatefulSet-UPDATE-cap-web-1",
            "/validate",
            READ_STS,
            sts,
        ),
        (WEB_SERVICE, "/validate", READ_SVC, svc),
        (MUTATE_SERVICE, "/mutate", READ_SVC, svc),
    ];
    for http in BOTH {
        for (file, path, prefix, cases) in reviews {
            let uid = uid_of(file);
            for (pointer, value, says) in cases {
                // mutate-…-db-1 has no volumeClaimTemplates to break.
                if file == MUTATE_DB && pointer.contains("volumeClaimTemplates/0") {
                    continue;
                }
                let body = review_with(file, |r| set(r, pointer, value.clone()));
                let reply = post(&server, http, path, body).await;
                let label = format!("{http:?} {file} {pointer} = {value}");
                assert_invalid(&reply, &label, &uid, prefix, says);
            }
        }
        // A broken oldObject makes the UPDATE unreadable too.
        let file = "validate-StatefulSet-UPDATE-cap-web-1";
        let body = review_with(file, |r| set(r, "/oldObject/spec/replicas", json!("x")));
        let reply = post(&server, http, "/validate", body).await;
        assert_invalid(
            &reply,
            "oldObject.spec.replicas",
            &uid_of(file),
            READ_STS,
            "invalid type: string \"x\", expected i32",
        );
    }
    assert_still_serving(&server, "wrong types").await;
    server.stop().await;
}

#[tokio::test]
async fn reviews_that_lie_about_their_object_are_answered_invalid_with_the_uid() {
    let server = TestServer::start(Policy::builtin()).await;
    let sts_object = review_value(WEB)["request"]["object"].clone();
    let svc_object = review_value(WEB_SERVICE)["request"]["object"].clone();
    let cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            WEB,
            "/validate",
            review_with(WEB, |r| r["object"] = Value::Null),
            "request.object is missing",
            "",
        ),
        (
            MUTATE_DB,
            "/mutate",
            review_with(MUTATE_DB, |r| r["object"] = Value::Null),
            "request.object is missing",
            "",
        ),
        (
            WEB,
            "/validate",
            review_with(WEB, |r| {
                r.as_object_mut().unwrap().remove("object");
            }),
            "request.object is missing",
            "",
        ),
        (
            WEB_SERVICE,
            "/validate",
            review_with(WEB_SERVICE, |r| r["object"] = Value::Null),
            "request.object is missing",
            "",
        ),
        (
            MUTATE_SERVICE,
            "/mutate",
            review_with(MUTATE_SERVICE, |r| r["object"] = Value::Null),
            "request.object is missing",
            "",
        ),
        (
            WEB_SERVICE,
            "/validate",
            review_with(WEB_SERVICE, |r| r["object"] = sts_object.clone()),
            READ_SVC,
            "invalid value: string \"StatefulSet\", expected Service",
        ),
        (
            MUTATE_SERVICE,
            "/mutate",
            review_with(MUTATE_SERVICE, |r| r["object"] = sts_object.clone()),
            READ_SVC,
            "invalid value: string \"StatefulSet\", expected Service",
        ),
        (
            WEB,
            "/validate",
            review_with(WEB, |r| r["object"] = svc_object.clone()),
            READ_STS,
            "invalid value: string \"Service\", expected StatefulSet",
        ),
        (
            MUTATE_DB,
            "/mutate",
            review_with(MUTATE_DB, |r| r["object"] = svc_object.clone()),
            READ_STS,
            "invalid value: string \"Service\", expected StatefulSet",
        ),
    ];
    for http in BOTH {
        for (file, path, body, prefix, says) in &cases {
            let reply = post(&server, http, path, body.clone()).await;
            let label = format!("{http:?} {file} {path} {prefix}{says}");
            assert_invalid(&reply, &label, &uid_of(file), prefix, says);
        }
    }
    // An empty object is read as a StatefulSet with nothing set (k8s-openapi does not insist on
    // apiVersion and kind), and judged as one.
    for http in BOTH {
        let body = review_with(WEB, |r| r["object"] = json!({}));
        let review = post(&server, http, "/validate", body).await.json();
        assert_eq!(review["response"]["uid"], uid_of(WEB));
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["status"]["code"], 403);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "stsguard denied StatefulSet \"<unnamed>\": 1 violation\n- sts-service-name"
            ),
            "{message}"
        );
    }
    assert_still_serving(&server, "lying reviews").await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_a_400_wherever_it_is_read() {
    let server = TestServer::start(Policy::builtin()).await;
    let with_bytes = |file: &str, pointer: &str, raw: &[u8]| {
        let body = review_with(file, |r| set(r, pointer, json!("PLACEHOLDER")));
        let text = std::str::from_utf8(&body).unwrap();
        let (before, after) = text.split_once("PLACEHOLDER").unwrap();
        [before.as_bytes(), raw, after.as_bytes()].concat()
    };
    let uid = uid_of(WEB);
    for http in BOTH {
        for raw in [&b"\xff"[..], b"\xc3\x28", b"\xed\xa0\x80", b"w\x80b"] {
            // In the envelope: not a review.
            let reply = post(&server, http, "/validate", with_bytes(WEB, "/uid", raw)).await;
            assert_not_a_review(&reply, "uid", "invalid unicode code point");
            // In a field the rules read: a review that cannot be read.
            for pointer in [
                "/object/spec/serviceName",
                "/object/metadata/annotations/stsguard.io~1exempt",
                "/object/spec/template/spec/containers/0/name",
            ] {
                let reply = post(&server, http, "/validate", with_bytes(WEB, pointer, raw)).await;
                let label = format!("{http:?} {pointer} {raw:?}");
                assert_invalid(&reply, &label, &uid, READ_STS, "invalid unicode code point");
            }
            // Outside any string: not JSON.
            let body = [
                &b"{\"apiVersion\": \"admission.k8s.io/v1\", "[..],
                raw,
                b"}",
            ]
            .concat();
            let reply = post(&server, http, "/validate", body).await;
            assert_not_a_review(
                &reply,
                "between tokens",
                "key must be a string at line 1 column 39",
            );
        }
    }
    assert_still_serving(&server, "invalid UTF-8").await;
    server.stop().await;
}

#[tokio::test]
async fn duplicate_keys_are_refused_or_read_as_the_api_server_reads_them() {
    let server = TestServer::start(Policy::builtin()).await;
    let text = |file: &str| String::from_utf8(fixture(file)).unwrap();
    for http in BOTH {
        // Two objects in one request: the review cannot be read.
        let body = text(WEB).replacen("\"object\":", "\"object\": null, \"object\":", 1);
        let reply = post(&server, http, "/validate", body.into_bytes()).await;
        assert_invalid(
            &reply,
            "duplicate object",
            &uid_of(WEB),
            READ_STS,
            "duplicate field `object`",
        );

        // Inside the object the last value wins, as in the API server's own decoding
        // (encoding/json), so the webhook judges what the API server would store.
        let hide = text(NOSVC).replacen(
            "\"serviceName\": \"\"",
            "\"serviceName\": \"web\", \"serviceName\": \"\"",
            1,
        );
        assert_ne!(hide, text(NOSVC));
        let review = post(&server, http, "/validate", hide.into_bytes())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], false, "{http:?}: {review}");
        assert!(
            review["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("sts-service-name at spec.serviceName: serviceName is missing")
        );
        let fixed = text(NOSVC).replacen(
            "\"serviceName\": \"\"",
            "\"serviceName\": \"\", \"serviceName\": \"nosvc\"",
            1,
        );
        let review = post(&server, http, "/validate", fixed.into_bytes())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}: {review}");

        // Duplicate annotation keys: the last one is the exemption.
        let annotated = review_with(NOSVC, |r| {
            set(
                r,
                "/object/metadata/annotations/stsguard.io~1exempt",
                json!("PLACEHOLDER"),
            )
        });
        let annotated = String::from_utf8(annotated).unwrap().replacen(
            "\"PLACEHOLDER\"",
            "\"\", \"stsguard.io/exempt\": \"sts-service-name\"",
            1,
        );
        let review = post(&server, http, "/validate", annotated.into_bytes())
            .await
            .json();
        assert_eq!(review["response"]["allowed"], true, "{http:?}: {review}");
    }
    assert_still_serving(&server, "duplicate keys").await;
    server.stop().await;
}

/// A client whose request bodies are streams: no Content-Length (chunked on HTTP/1.1), or
/// trickled.
fn stream_client(
    server: &TestServer,
    http: Http,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, UnsyncBoxBody<Bytes, Infallible>> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(support::client_config(&server.ca_pem))
        .https_only();
    let connector = match http {
        Http::One => builder.enable_http1().build(),
        Http::Two => builder.enable_http2().build(),
    };
    let mut client = Client::builder(TokioExecutor::new());
    if http == Http::Two {
        client.http2_only(true);
    }
    client.build(connector)
}

async fn send_stream(
    server: &TestServer,
    http: Http,
    body: UnsyncBoxBody<Bytes, Infallible>,
) -> (u16, String) {
    let request = Request::post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response =
        tokio::time::timeout(ANSWER_WITHIN, stream_client(server, http).request(request))
            .await
            .expect("answered in time")
            .expect("a response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_still_serving(server, &format!("{http:?} streamed body, {status}")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_however_they_arrive() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    let says = "than the webhook's limit of 65536 bytes (--max-body-bytes";
    // The answer is a metav1.Status, which the API server shows, not an opaque 413.
    let is_status = |status: u16, text: &str| {
        let body: serde_json::Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("not a JSON Status ({e}): {text}"));
        status == 413
            && body["kind"] == "Status"
            && body["apiVersion"] == "v1"
            && body["status"] == "Failure"
            && body["code"] == 413
            && body["reason"] == "RequestEntityTooLarge"
            && body["message"].as_str().is_some_and(|m| m.contains(says))
    };
    for http in BOTH {
        // With a length: refused from the headers, the body read and thrown away.
        let reply = post(&server, http, "/validate", vec![b' '; 64 * 1024 + 1]).await;
        assert!(
            is_status(reply.status.as_u16(), &reply.text()),
            "{http:?}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("is 65537 bytes, larger"),
            "{}",
            reply.text()
        );
        // Exactly at the limit: read, and then it is just not a review.
        let reply = post(&server, http, "/validate", vec![b' '; 64 * 1024]).await;
        assert_eq!(reply.status, 400, "{http:?}");

        // Without a length (chunked on HTTP/1.1, plain DATA frames on HTTP/2): refused once the
        // limit is passed; the rest is read without being kept.
        let chunks =
            (0..1024).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b' '; 4096]))));
        let body = StreamBody::new(futures::stream::iter(chunks));
        let (status, text) = send_stream(&server, http, UnsyncBoxBody::new(body)).await;
        assert!(is_status(status, &text), "{http:?}: {status} {text}");
        assert!(text.contains("is 4194304 bytes, larger"), "{text}");
    }

    // A Content-Length far over the limit with no body sent: answered at once from the headers.
    let mut tls = support::raw_tls(&server).await;
    tls.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let response = read_until(&mut tls, b"RequestEntityTooLarge").await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains(says), "{response}");
    assert!(response.contains("is 1000000000000 bytes"), "{response}");
    drop(tls);

    // A Content-Length that does not fit in 64 bits.
    let mut tls = support::raw_tls(&server).await;
    tls.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\n\
          Content-Length: 99999999999999999999999\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    assert_still_serving(&server, "bodies over the limit").await;
    server.stop().await;
}

/// Reads until `needle` has arrived (or the connection ends, or 10 seconds pass).
async fn read_until<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, needle: &[u8]) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Limits that make slow-client tests fast.
fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// What the server sent, and when it closed the connection (None: still open).
type Trickled = (Vec<u8>, Option<Duration>);

/// Sends `bytes` one a second until the server closes the connection or `give_up` passes;
/// returns what the server sent and when it closed (None: still open at `give_up`).
async fn trickle<S>(stream: S, prefix: &[u8], bytes: &[u8], give_up: Duration) -> Trickled
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let (mut read, mut write) = tokio::io::split(stream);
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return (received, started.elapsed()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    write.write_all(prefix).await.unwrap();
    let writer = {
        let bytes = bytes.to_vec();
        tokio::spawn(async move {
            for byte in bytes {
                if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Keep the write half (and so the connection) open.
            std::future::pending::<()>().await;
        })
    };
    let outcome = tokio::time::timeout(give_up, reader).await;
    writer.abort();
    match outcome {
        Ok(joined) => {
            let (received, at) = joined.unwrap();
            (received, Some(at))
        }
        Err(_) => (Vec::new(), None),
    }
}

/// Asserts that the server closes every connection within 5 seconds (its header read timeout is
/// 1s), listing those it left open; and that none of them got anything but nothing or a 408.
fn assert_all_closed(outcomes: Vec<(&str, Trickled)>) {
    let mut open = Vec::new();
    for (what, (received, closed)) in outcomes {
        let received = String::from_utf8_lossy(&received);
        assert!(
            !received.contains("HTTP/1.1") || received.starts_with("HTTP/1.1 408"),
            "{what}: {received}"
        );
        if closed.is_none_or(|at| at >= Duration::from_secs(5)) {
            open.push(format!(
                "{what}: closed after {closed:?} (None: open after 8s)"
            ));
        }
    }
    assert!(
        open.is_empty(),
        "connections outlive the 1s header read timeout: {open:?}"
    );
}

const GIVE_UP: Duration = Duration::from_secs(8);

#[tokio::test]
async fn slowloris_http1_headers_and_handshakes_are_cut_off() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    // One byte a second: these headers would take over a minute to arrive.
    let headers = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}";
    // The start of a ClientHello, one byte a second.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    // A keep-alive connection left idle after a complete request and its answer.
    let mut kept = support::raw_tls(&server).await;
    let body = fixture(NOSVC);
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    kept.write_all(&[head.as_bytes(), &body].concat())
        .await
        .unwrap();
    let answer = read_until(&mut kept, b"sts-service-name").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (headers, handshake, idle) = tokio::join!(
        trickle(support::raw_tls(&server).await, b"", headers, GIVE_UP),
        trickle(tcp, b"", &hello, GIVE_UP),
        trickle(kept, b"", b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("trickling HTTP/1.1 headers", headers),
        ("trickling a ClientHello", handshake),
        ("idle after a request", idle),
    ]);
    assert_still_serving(&server, "HTTP/1.1 slowloris").await;
    server.stop().await;
}

/// A client that completes the TLS handshake and then sends nothing (or a single byte, which
/// could still start either `POST` or the HTTP/2 preface) holds a connection and a task; the
/// header read timeout must close it as it closes a silent HTTP/1.1 keep-alive connection.
#[tokio::test]
async fn connections_silent_after_the_handshake_are_closed() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    let (silent, one_byte, silent_h2) = tokio::join!(
        trickle(support::raw_tls(&server).await, b"", b"", GIVE_UP),
        trickle(support::raw_tls(&server).await, b"P", b"", GIVE_UP),
        trickle(raw_h2(&server).await, b"", b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("silent after the handshake", silent),
        ("one byte after the handshake", one_byte),
        ("silent after an h2 handshake", silent_h2),
    ]);
    assert_still_serving(&server, "silent connections").await;
    server.stop().await;
}

/// A TLS stream that negotiated HTTP/2 by ALPN, for frames a normal client would not send.
async fn raw_h2(server: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = support::client_config(&server.ca_pem);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// An HPACK literal header field without indexing, no Huffman coding.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    fn int(n: usize, out: &mut Vec<u8>) {
        if n < 127 {
            out.push(n as u8);
            return;
        }
        out.push(127);
        let mut rest = n - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    let mut out = vec![0x00];
    int(name.len(), &mut out);
    out.extend_from_slice(name.as_bytes());
    int(value.len(), &mut out);
    out.extend_from_slice(value.as_bytes());
    out
}

/// The header block of `POST /validate`.
fn h2_request_block() -> Vec<u8> {
    [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/validate"),
    ]
    .iter()
    .flat_map(|(name, value)| hpack_literal(name, value))
    .collect()
}

/// A complete HEADERS frame on stream 1 (END_HEADERS, not END_STREAM) for `POST /validate`.
fn h2_headers() -> Vec<u8> {
    h2_frame(HEADERS, END_HEADERS, 1, &h2_request_block())
}

/// The frames a server sent, as (type, flags, stream, payload).
fn h2_frames(mut received: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while received.len() >= 9 {
        let len = usize::from(received[0]) << 16
            | usize::from(received[1]) << 8
            | usize::from(received[2]);
        let stream = u32::from_be_bytes(received[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let end = (9 + len).min(received.len());
        frames.push((received[3], received[4], stream, received[9..end].to_vec()));
        received = &received[end..];
    }
    frames
}

/// The error code of the server's GOAWAY, if it sent one.
fn goaway_code(received: &[u8]) -> Option<u32> {
    h2_frames(received)
        .into_iter()
        .find(|(kind, ..)| *kind == GOAWAY)
        .map(|(.., payload)| u32::from_be_bytes(payload[4..8].try_into().unwrap()))
}

/// Writes `bytes` as fast as the server reads them (stopping when it stops) while reading what
/// it sends; returns what it sent and whether it closed the connection within 20 seconds.
async fn flood<S>(stream: S, bytes: Vec<u8>) -> (Vec<u8>, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(16 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = write.flush().await;
        std::future::pending::<()>().await;
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    (received, closed)
}

/// GOAWAY's ENHANCE_YOUR_CALM: the peer is flooding.
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn http2_frame_floods_are_cut_off() {
    let server = TestServer::start(Policy::builtin()).await;
    let prefix = [H2_PREFACE, H2_SETTINGS].concat();
    let block = h2_request_block();

    // Control: the hand-made frames are a request the server answers (400: the body is empty).
    let mut control = raw_h2(&server).await;
    let mut request = prefix.clone();
    request.extend(h2_frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    control.write_all(&request).await.unwrap();
    let answer = read_until(&mut control, b"EOF while parsing a value").await;
    assert!(answer.contains(NOT_A_REVIEW), "{answer}");
    drop(control);

    // CONTINUATION flood: one header block that never ends, 16 KB at a time, up to 8 MB.
    let mut continuation = prefix.clone();
    continuation.extend(h2_frame(HEADERS, 0, 1, &block));
    let filler = hpack_literal("x-flood", &"a".repeat(16_000));
    for _ in 0..512 {
        continuation.extend(h2_frame(CONTINUATION, 0, 1, &filler));
    }
    // Rapid reset: 20,000 requests, each cancelled as soon as it is sent.
    let mut reset = prefix.clone();
    for i in 0..20_000u32 {
        let stream = 2 * i + 1;
        reset.extend(h2_frame(HEADERS, END_HEADERS, stream, &block));
        reset.extend(h2_frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    // 5,000 requests that never end, far past the 200 concurrent streams allowed.
    let mut open = prefix;
    for i in 0..5_000u32 {
        open.extend(h2_frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    for (what, bytes) in [
        ("a CONTINUATION flood", continuation),
        ("a rapid-reset flood", reset),
        ("5,000 unfinished streams", open),
    ] {
        let (received, closed) = flood(raw_h2(&server).await, bytes).await;
        assert!(closed, "{what} keeps the connection open");
        assert_eq!(goaway_code(&received), Some(ENHANCE_YOUR_CALM), "{what}");
        assert_still_serving(&server, what).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_http1_headers_get_431() {
    let server = TestServer::start(Policy::builtin()).await;
    let big = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(1024 * 1024)
    );
    let many = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\n{}Content-Length: 2\r\n\r\n{{}}",
        (0..1_000)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (what, request) in [("a 1 MiB header", big), ("1,000 headers", many)] {
        let (received, closed) = flood(support::raw_tls(&server).await, request.into_bytes()).await;
        let received = String::from_utf8_lossy(&received);
        assert!(received.starts_with("HTTP/1.1 431"), "{what}: {received}");
        assert!(closed, "{what}");
        assert_still_serving(&server, what).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn slowloris_http2_headers_are_cut_off_by_the_header_read_timeout() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;

    // A HEADERS frame one byte a second after a proper preface; and only the preface, then
    // nothing: a connection that never sends a request. (hyper's header_read_timeout covers
    // HTTP/1.1 only.)
    let prefix = [H2_PREFACE, H2_SETTINGS].concat();
    let headers = h2_headers();
    let (trickled, idle) = tokio::join!(
        trickle(raw_h2(&server).await, &prefix, &headers, GIVE_UP),
        trickle(raw_h2(&server).await, &prefix, b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("trickling an HTTP/2 HEADERS frame", trickled),
        ("sending no request after the HTTP/2 preface", idle),
    ]);
    assert_still_serving(&server, "HTTP/2 slowloris").await;
    server.stop().await;
}

#[tokio::test]
async fn slow_bodies_get_408_on_both_protocols() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    for http in BOTH {
        let started = Instant::now();
        // One byte a second, forever.
        let body = StreamBody::new(futures::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b" "))),
                n + 1,
            ))
        }));
        let (status, _) = send_stream(&server, http, UnsyncBoxBody::new(body)).await;
        assert_eq!(status, 408, "{http:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{http:?}");
    }
    assert_still_serving(&server, "slow bodies").await;
    server.stop().await;
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_not_answered_as_http() {
    let server = TestServer::start(Policy::builtin()).await;
    for request in [
        &b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"[..],
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
            .await
            .expect("the connection is closed, not left open");
        assert!(read.is_ok() || response.is_empty(), "{read:?}");
        assert!(
            !response.windows(5).any(|w| w == b"HTTP/"),
            "answered as HTTP: {}",
            String::from_utf8_lossy(&response)
        );
        // At most a TLS alert record: content type 21, TLS 1.x, a two-byte fatal alert.
        assert!(
            response.is_empty()
                || (response.len() == 7
                    && response[0] == 0x15
                    && response[1] == 0x03
                    && response[5] == 2),
            "{response:?}"
        );
        assert_still_serving(&server, "plaintext HTTP").await;
    }
    server.stop().await;
}

/// Runs `openssl s_client` against the server with one protocol version; returns whether the
/// handshake succeeded and what it printed.
async fn openssl_handshake(addr: SocketAddr, ca: PathBuf, version: &'static str) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-brief", "-connect"])
            .arg(addr.to_string())
            .args([
                "-servername",
                "localhost",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&ca)
            .arg(version)
            // OpenSSL 3 does not even offer TLS 1.0/1.1 above security level 0.
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("openssl s_client {version} hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), printed)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tls_below_1_2_is_refused_by_the_server() {
    let server = TestServer::start(Policy::builtin()).await;
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(server.ca_pem.as_bytes()).unwrap();
    let ca_path = ca.path().to_owned();
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, printed) = openssl_handshake(server.addr, ca_path.clone(), version).await;
        assert!(ok, "{version} should be accepted: {printed}");
        assert!(
            printed.contains(&format!("Protocol version: {name}")),
            "{version}: {printed}"
        );
        assert!(printed.contains("Verification: OK"), "{version}: {printed}");
    }
    for version in ["-tls1_1", "-tls1"] {
        let (ok, printed) = openssl_handshake(server.addr, ca_path.clone(), version).await;
        assert!(!ok, "{version} should be refused: {printed}");
        // Refused by the server (OpenSSL received its alert), not by the local OpenSSL.
        assert!(
            printed.contains("SSL alert number 40") || printed.contains("SSL alert number 70"),
            "{version}: {printed}"
        );
        assert_still_serving(&server, version).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn metacharacters_in_hostile_names_come_back_as_a_patch_that_applies() {
    // The one place a hostile object reaches the response bytes verbatim is the JSON Patch of
    // the mutating webhook: a volumeMount name full of JSON and pointer metacharacters must come
    // back as a patch that decodes and applies to the object it was made for.
    let server = TestServer::start(Policy::builtin()).await;
    let name = "a/b~c\"d\\e\u{0}f\u{2028}g😀";
    let body = review_with(MUTATE_DB, |r| {
        set(
            r,
            "/object/spec/template/spec/containers/0/volumeMounts/0/name",
            json!(name),
        );
        set(
            r,
            "/object/metadata/annotations/stsguard.io~1mutated",
            json!("x\"y"),
        );
    });
    for http in BOTH {
        let review = post(&server, http, "/mutate", body.clone()).await.json();
        let encoded = review["response"]["patch"].as_str().unwrap();
        assert!(BASE64.decode(encoded).is_ok());
        let patch = patch_of(&review).unwrap();
        let mut object =
            serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        let names: Vec<&str> = object["spec"]["volumeClaimTemplates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&name), "{names:?}");
        assert_eq!(
            object["metadata"]["annotations"]["stsguard.io/mutated"],
            "x\"y,sts-inject-volume-claim-templates"
        );
    }
    assert_still_serving(&server, "metacharacters in a patch").await;
    server.stop().await;
}
