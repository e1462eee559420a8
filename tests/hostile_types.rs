//! Reviews whose objects cannot be read as what they claim to be, against the real server over
//! TLS: wrong JSON types in the fields the rules read, and reviews that lie about their object.
//! Each is answered invalid with the request's uid, and the server still answers a captured
//! review correctly afterwards.

mod support;

use serde_json::{Value, json};
use stsguard::policy::Policy;
use support::{
    BOTH, TestServer,
    hostile::{
        MUTATE_DB, MUTATE_SERVICE, READ_STS, READ_SVC, WEB, WEB_SERVICE, assert_invalid,
        assert_still_serving, post, review_value, review_with, set, uid_of,
    },
};

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
