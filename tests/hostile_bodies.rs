//! Hostile request bodies against the real server over TLS, on HTTP/1.1 and HTTP/2: malformed
//! JSON, envelope problems, deep nesting, invalid UTF-8 and duplicate keys, each with the answer
//! it must get, and after each of them proof that the server still answers a captured review
//! correctly.

mod support;

use serde_json::{Value, json};
use stsguard::policy::Policy;
use support::{
    BOTH, TestServer, fixture,
    hostile::{
        NOSVC, READ_STS, WEB, assert_invalid, assert_not_a_review, assert_rejected,
        assert_still_serving, post, review_value, review_with, set, uid_of,
    },
    warnings,
};

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
