//! What the hostile-request tests share: the captured reviews they start from, JSON surgery on
//! them, sending a body and then proving that the server still answers a captured review
//! correctly, and the shapes of a refusal (an HTTP 400 text, or an AdmissionReview answer saying
//! the review cannot be read).

use std::time::Duration;

use serde_json::{Value, json};

use super::{BOTH, Http, Reply, TestServer, client, fixture};

/// The captured review every check of "the server still works" sends: denied for
/// sts-service-name.
pub const NOSVC: &str = "validate-StatefulSet-CREATE-cap-nosvc-1";
pub const WEB: &str = "validate-StatefulSet-CREATE-cap-web-1";
pub const WEB_SERVICE: &str = "validate-Service-CREATE-cap-web-1";
pub const MUTATE_DB: &str = "mutate-StatefulSet-CREATE-cap-db-1";
pub const MUTATE_SERVICE: &str = "mutate-Service-CREATE-cap-web-1";

/// Longest any single hostile request may take to be answered (debug build, shared machine).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// What a malformed body is told (HTTP 400, text).
pub const NOT_A_REVIEW: &str = "request body is not an admission.k8s.io/v1 AdmissionReview: ";

pub fn review_value(file: &str) -> Value {
    serde_json::from_slice(&fixture(file)).unwrap()
}

pub fn uid_of(file: &str) -> String {
    review_value(file)["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A captured review with its `request` changed.
pub fn review_with(file: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = review_value(file);
    change(&mut review["request"]);
    serde_json::to_vec(&review).unwrap()
}

/// Sets the value at a JSON pointer, creating missing objects on the way.
pub fn set(root: &mut Value, pointer: &str, value: Value) {
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
pub async fn post(server: &TestServer, http: Http, path: &str, body: Vec<u8>) -> Reply {
    let reply = send(server, http, path, body).await;
    assert_still_serving(server, &format!("{http:?} {path} {}", reply.status)).await;
    reply
}

pub async fn send(server: &TestServer, http: Http, path: &str, body: Vec<u8>) -> Reply {
    let client = client(server, http);
    tokio::time::timeout(ANSWER_WITHIN, client.post(&server.url(path), body))
        .await
        .unwrap_or_else(|_| panic!("{http:?} {path}: no answer within {ANSWER_WITHIN:?}"))
}

/// Proves the server is up and right: a captured review, on fresh connections over HTTP/1.1 and
/// HTTP/2, gets exactly its known answer.
pub async fn assert_still_serving(server: &TestServer, after: &str) {
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
pub fn assert_rejected(reply: &Reply, label: &str, says: &str) {
    assert_eq!(reply.status, 400, "{label}: {}", reply.text());
    let text = reply.text();
    assert!(text.contains(says), "{label}: {text:?} should say {says:?}");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1 && text.len() < 4096,
        "{label}: {text:?}"
    );
}

/// Asserts an HTTP 400 for a body that is not JSON or not shaped like a review.
pub fn assert_not_a_review(reply: &Reply, label: &str, says: &str) {
    assert_rejected(reply, label, says);
    assert!(
        reply.text().starts_with(NOT_A_REVIEW),
        "{label}: {}",
        reply.text()
    );
}

/// Asserts an AdmissionReview answer that refuses a review it cannot read: the request's uid,
/// allowed false, status code 400 and a message that starts with `prefix` and says `says`.
pub fn assert_invalid(reply: &Reply, label: &str, uid: &str, prefix: &str, says: &str) {
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

pub const READ_STS: &str = "cannot read the review as a apps/v1 StatefulSet: ";
pub const READ_SVC: &str = "cannot read the review as a v1 Service: ";
