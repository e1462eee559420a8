//! Hostile objects in well-formed reviews, against the real server over TLS: huge values in the
//! fields the rules read, a 2 MB exemption list that must not amplify the answer, and
//! metacharacters in names that must come back as a patch that applies. After each, proof that
//! the server still answers a captured review correctly.

mod support;

use std::time::Instant;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use stsguard::policy::Policy;
use support::{
    BOTH, Http, TestServer,
    hostile::{MUTATE_DB, NOSVC, WEB, assert_still_serving, post, review_with, set, uid_of},
    patch_of, warnings,
};

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
