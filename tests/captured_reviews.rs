//! Every AdmissionReview captured from a real kube-apiserver gets the answer the fixtures'
//! README table gives, from the real server over TLS, on HTTP/1.1 and HTTP/2.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::Value;
use stsguard::policy::Policy;
use support::{BOTH, TestServer, client, fixture, patch_of, warnings};

/// One row of tests/fixtures/admission/README.md.
struct Expect {
    file: &'static str,
    allowed: bool,
    /// Rule ids the deny message (when denied) or the warnings (when allowed) must name.
    names: &'static [&'static str],
    /// Whether the answer must carry no warnings at all.
    quiet: bool,
}

const EXPECTED: &[Expect] = &[
    Expect {
        file: "validate-StatefulSet-CREATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-StatefulSet-CREATE-cap-nosvc-1",
        allowed: false,
        names: &["sts-service-name"],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-CREATE-cap-emptysvc-1",
        allowed: false,
        names: &["sts-service-name"],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-CREATE-cap-nosvc-dry-dryrun-1",
        allowed: false,
        names: &["sts-service-name"],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-CREATE-cap-weak-1",
        allowed: true,
        names: &[
            "sts-readiness-probe",
            "sts-update-strategy",
            "sts-termination-grace",
            "sts-vct-volatile-labels",
        ],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-CREATE-cap-csi-node-1",
        allowed: true,
        names: &["sts-service-name", "sts-volume-claim-templates"],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-UPDATE-cap-nosvc-1",
        allowed: true,
        names: &["sts-service-name"],
        quiet: false,
    },
    Expect {
        file: "validate-StatefulSet-UPDATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-Scale-UPDATE-cap-web-scale-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-StatefulSet-UPDATE-cap-web-status-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-StatefulSet-DELETE-cap-emptysvc-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-Service-CREATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-Service-CREATE-cap-cache-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-Service-UPDATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "validate-Service-DELETE-cap-cache-1",
        allowed: true,
        // svc-delete-governing-service needs lookups: it says it was not checked.
        names: &[],
        quiet: false,
    },
    Expect {
        file: "mutate-StatefulSet-CREATE-cap-db-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "mutate-StatefulSet-CREATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "mutate-StatefulSet-UPDATE-cap-weak-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
    Expect {
        file: "mutate-Service-CREATE-cap-web-1",
        allowed: true,
        names: &[],
        quiet: true,
    },
];

fn endpoint_of(file: &str) -> &'static str {
    if file.starts_with("mutate-") {
        "/mutate?timeout=5s"
    } else {
        "/validate?timeout=5s"
    }
}

#[test]
fn every_captured_review_has_an_expectation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    files.sort();
    let mut expected: Vec<&str> = EXPECTED.iter().map(|e| e.file).collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[tokio::test]
async fn captured_reviews_get_the_documented_answers() {
    let server = TestServer::start(Policy::builtin()).await;
    for http in BOTH {
        let client = client(&server, http);
        for expect in EXPECTED {
            let body = fixture(expect.file);
            let reply = client
                .post(&server.url(endpoint_of(expect.file)), body.clone())
                .await;
            assert_eq!(reply.status, 200, "{}: {}", expect.file, reply.text());
            let version = match http {
                support::Http::One => hyper::Version::HTTP_11,
                support::Http::Two => hyper::Version::HTTP_2,
            };
            assert_eq!(reply.version, version);
            let review = reply.json();
            let request: Value = serde_json::from_slice(&body).unwrap();
            let response = &review["response"];
            let context = format!("{} over {http:?}: {review}", expect.file);

            assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{context}");
            assert_eq!(review["kind"], "AdmissionReview", "{context}");
            assert_eq!(response["uid"], request["request"]["uid"], "{context}");
            assert_eq!(response["allowed"], expect.allowed, "{context}");

            let warnings = warnings(&review);
            if expect.quiet {
                assert!(warnings.is_empty(), "{context}");
            }
            // Without cluster lookups, every evaluated StatefulSet or Service says which
            // cross-object rules it could not check, rather than passing silently.
            let evaluated = expect.file.starts_with("validate-")
                && (expect.file.contains("-CREATE-")
                    || expect.file.contains("-UPDATE-")
                    || expect.file.contains("Service-DELETE"))
                && !expect.file.contains("Scale")
                && !expect.file.contains("-status-");
            let skip_notes = support::all_warnings(&review)
                .iter()
                .filter(|w| w.starts_with(stsguard::review::SKIPPED_NOTE))
                .count();
            assert_eq!(skip_notes, usize::from(evaluated), "{context}");
            let named = if expect.allowed {
                warnings.join("\n")
            } else {
                assert_eq!(response["status"]["code"], 403, "{context}");
                response["status"]["message"].as_str().unwrap().to_owned()
            };
            for rule in expect.names {
                assert!(named.contains(rule), "{context}: {rule} not named");
            }
            if expect.file.starts_with("validate-") {
                assert!(response.get("patch").is_none(), "{context}");
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn exemption_and_grandfathering_are_explained() {
    let server = TestServer::start(Policy::builtin()).await;
    let client = client(&server, support::Http::One);

    let csi = client
        .post(
            &server.url("/validate"),
            fixture("validate-StatefulSet-CREATE-cap-csi-node-1"),
        )
        .await
        .json();
    let warnings = warnings(&csi);
    let exempted = warnings
        .iter()
        .find(|w| w.contains("sts-service-name"))
        .unwrap();
    assert!(
        exempted.contains("exempted (singleton controller, no peer discovery)"),
        "{exempted}"
    );

    let update = client
        .post(
            &server.url("/validate"),
            fixture("validate-StatefulSet-UPDATE-cap-nosvc-1"),
        )
        .await
        .json();
    let warnings = support::warnings(&update);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("already present before this update: sts-service-name")),
        "{warnings:?}"
    );

    let denied = client
        .post(
            &server.url("/validate"),
            fixture("validate-StatefulSet-CREATE-cap-nosvc-1"),
        )
        .await
        .json();
    let message = denied["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.serviceName") && message.contains("Fix:"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn mutation_injects_missing_templates_once() {
    let server = TestServer::start(Policy::builtin()).await;
    for http in BOTH {
        let client = client(&server, http);
        let body = fixture("mutate-StatefulSet-CREATE-cap-db-1");
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        let review = client
            .post(&server.url("/mutate?timeout=5s"), body)
            .await
            .json();
        assert_eq!(review["response"]["allowed"], true);
        let patch = patch_of(&review).expect("db needs templates");

        let object = &mut request["request"]["object"];
        json_patch::patch(object, &patch).unwrap();
        let patched: StatefulSet = serde_json::from_value(object.clone()).unwrap();
        let templates = patched
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap();
        let names: Vec<_> = templates
            .iter()
            .map(|t| t.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["data", "wal"]);
        for template in templates {
            let spec = template.spec.as_ref().unwrap();
            assert_eq!(spec.access_modes.as_deref().unwrap(), ["ReadWriteOnce"]);
            assert_eq!(
                spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
                "1Gi"
            );
        }
        assert_eq!(
            patched.metadata.annotations.as_ref().unwrap()["stsguard.io/mutated"],
            "sts-inject-volume-claim-templates"
        );

        // The API server may reinvoke the webhook on its own output: nothing more to do.
        let again = client
            .post(
                &server.url("/mutate"),
                serde_json::to_vec(&request).unwrap(),
            )
            .await
            .json();
        assert!(patch_of(&again).is_none(), "{again}");

        // And the validating webhook admits the mutated object without a template warning.
        let validated = client
            .post(
                &server.url("/validate"),
                serde_json::to_vec(&request).unwrap(),
            )
            .await
            .json();
        assert_eq!(validated["response"]["allowed"], true);
        assert!(
            !support::warnings(&validated)
                .iter()
                .any(|w| w.contains("volume")),
            "{validated}"
        );
    }
    server.stop().await;
}
