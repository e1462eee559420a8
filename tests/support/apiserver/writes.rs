//! Writes, checked as the real API server checks them: the body's kind and names against the
//! URL, object names (DNS subdomains), `resourceVersion` preconditions (409 Conflict), existing
//! names on create (409 AlreadyExists), the request body limit (3 MiB) and etcd's object limit
//! (1.5 MiB), the patch types each kind accepts (no strategic merge for custom resources), and
//! server-side apply with field managers (`ownership`).

use axum::{
    body::to_bytes,
    extract::Request,
    http::{Method, StatusCode, header::CONTENT_TYPE},
    response::Response,
};
use serde_json::{Value, json};

use super::{FakeApiServer, Inner, Kind, broadcast, ownership::Owners, query, reply, status};

/// The API server's limit on a request body.
const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// etcd's default limit on one stored value.
const MAX_OBJECT_BYTES: usize = 1536 * 1024;

pub(super) async fn write(
    server: &FakeApiServer,
    request: Request,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
) -> Response {
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let manager = query(&request, "fieldManager");
    let force = query(&request, "force").as_deref() == Some("true");
    let Ok(body) = to_bytes(request.into_body(), MAX_REQUEST_BYTES).await else {
        return fail(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        );
    };
    let namespace = namespace.unwrap_or_default();
    let body: Value = if method == Method::DELETE && body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => return fail(400, "BadRequest", &format!("the body is not JSON: {e}")),
        }
    };
    let mut inner = server.inner.lock().unwrap();
    let result = match (&method, name) {
        (&Method::POST, None) => create(&mut inner, kind, &namespace, body, manager),
        (&Method::PUT, Some(name)) => replace(&mut inner, kind, &namespace, &name, body, manager),
        (&Method::PATCH, Some(name)) => {
            let patch = Patch {
                content_type: &content_type,
                body,
                manager,
                force,
            };
            patch_object(&mut inner, kind, &namespace, &name, patch)
        }
        (&Method::DELETE, Some(name)) => delete(&mut inner, kind, &namespace, &name),
        _ => Err(status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
        )),
    };
    match result {
        Ok((code, object)) => reply(StatusCode::from_u16(code).unwrap(), &object),
        Err(error) => reply(
            StatusCode::from_u16(error["code"].as_u64().unwrap_or(500) as u16).unwrap(),
            &error,
        ),
    }
}

type Written = Result<(u16, Value), Value>;

fn fail(code: u16, reason: &str, message: &str) -> Response {
    reply(
        StatusCode::from_u16(code).unwrap(),
        &status(code, reason, message),
    )
}

fn invalid(kind: Kind, name: &str, field: &str, detail: &str) -> Value {
    status(
        422,
        "Invalid",
        &format!(
            "{} \"{name}\" is invalid: {field}: {detail}",
            kind.kind_name()
        ),
    )
}

/// Body checks common to every write: kind, apiVersion, names against the URL.
fn check_body(
    kind: Kind,
    namespace: &str,
    url_name: Option<&str>,
    body: &Value,
) -> Result<String, Value> {
    if body["apiVersion"].as_str() != Some(kind.api_version())
        || body["kind"].as_str() != Some(kind.name())
    {
        return Err(status(
            400,
            "BadRequest",
            &format!(
                "the API version and kind in the data ({} {}) do not match the expected ({} {})",
                body["apiVersion"],
                body["kind"],
                kind.api_version(),
                kind.name()
            ),
        ));
    }
    let body_namespace = body["metadata"]["namespace"].as_str();
    if kind.namespaced() && body_namespace.is_some_and(|ns| ns != namespace) {
        return Err(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(url_name) = url_name
        && name != url_name
    {
        return Err(status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        ));
    }
    let subdomain = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !subdomain {
        return Err(invalid(
            kind,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower \
                 case alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character"
            ),
        ));
    }
    Ok(name.to_owned())
}

fn conflict(kind: Kind, name: &str) -> Value {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please \
             apply your changes to the latest version and try again",
            kind.resource()
        ),
    )
}

fn not_found(kind: Kind, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.resource()),
    )
}

/// Stores `object`, stamps what the server owns in `metadata`, and tells the watches.
fn commit(inner: &mut Inner, kind: Kind, namespace: &str, mut object: Value) -> Written {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = (kind, namespace.to_owned(), name.clone());
    let existing = inner.objects.get(&key).cloned();
    let now = jiff::Timestamp::now().to_string();
    let metadata = &mut object["metadata"];
    if kind.namespaced() {
        metadata["namespace"] = json!(namespace);
    } else if let Some(map) = metadata.as_object_mut() {
        map.remove("namespace");
    }
    match &existing {
        Some(old) => {
            for key in ["uid", "creationTimestamp"] {
                metadata[key] = old["metadata"][key].clone();
            }
        }
        None => {
            inner.created += 1;
            metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", inner.created));
            metadata["creationTimestamp"] = json!(now);
        }
    }
    super::reports::check(inner, kind, &object)?;
    let metadata = &mut object["metadata"];
    let owners = inner.owners.entry(key.clone()).or_default();
    metadata["managedFields"] = owners.managed_fields(kind.api_version(), &now);
    if object.to_string().len() > MAX_OBJECT_BYTES {
        return Err(status(
            413,
            "RequestEntityTooLarge",
            "etcdserver: request is too large",
        ));
    }
    inner.revision += 1;
    let rv = inner.revision;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    inner.objects.insert(key, object.clone());
    let event_type = if existing.is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    broadcast(
        inner,
        rv,
        kind,
        namespace,
        json!({"type": event_type, "object": object}),
    );
    Ok((if existing.is_some() { 200 } else { 201 }, object))
}

fn create(
    inner: &mut Inner,
    kind: Kind,
    namespace: &str,
    mut body: Value,
    manager: Option<String>,
) -> Written {
    if body["metadata"]["name"].is_null()
        && let Some(prefix) = body["metadata"]["generateName"].as_str()
    {
        body["metadata"]["name"] = json!(format!("{prefix}{:05x}", inner.revision + 1));
    }
    let name = check_body(kind, namespace, None, &body)?;
    let key = (kind, namespace.to_owned(), name.clone());
    if inner.objects.contains_key(&key) {
        return Err(status(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", kind.resource()),
        ));
    }
    let mut owners = Owners::default();
    owners.update(
        &manager.unwrap_or_else(|| "unknown".into()),
        &Value::Null,
        &body,
    );
    inner.owners.insert(key, owners);
    commit(inner, kind, namespace, body)
}

fn replace(
    inner: &mut Inner,
    kind: Kind,
    namespace: &str,
    name: &str,
    body: Value,
    manager: Option<String>,
) -> Written {
    check_body(kind, namespace, Some(name), &body)?;
    let key = (kind, namespace.to_owned(), name.to_owned());
    let Some(current) = inner.objects.get(&key).cloned() else {
        return Err(not_found(kind, name));
    };
    let precondition = body["metadata"]["resourceVersion"].as_str();
    if precondition.is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str()) {
        return Err(conflict(kind, name));
    }
    let manager = manager.unwrap_or_else(|| "unknown".into());
    inner
        .owners
        .entry(key)
        .or_default()
        .update(&manager, &current, &body);
    commit(inner, kind, namespace, body)
}

struct Patch<'a> {
    content_type: &'a str,
    body: Value,
    manager: Option<String>,
    force: bool,
}

fn patch_object(
    inner: &mut Inner,
    kind: Kind,
    namespace: &str,
    name: &str,
    patch: Patch,
) -> Written {
    let key = (kind, namespace.to_owned(), name.to_owned());
    let current = inner.objects.get(&key).cloned();
    let media = patch
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media == "application/apply-patch+yaml" {
        let Some(manager) = patch.manager else {
            return Err(invalid(
                kind,
                name,
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        };
        // An apply patch may leave the name (and namespace) to the URL, as the real server allows.
        let mut config = patch.body;
        if config["metadata"]["name"].is_null() {
            config["metadata"]["name"] = json!(name);
        }
        check_body(kind, namespace, Some(name), &config)?;
        let current = current.unwrap_or(Value::Null);
        let owners = inner.owners.entry(key).or_default();
        let object = owners
            .apply(&manager, &current, &config, patch.force)
            .map_err(|message| status(409, "Conflict", &message))?;
        return commit(inner, kind, namespace, object);
    }
    let Some(current) = current else {
        return Err(not_found(kind, name));
    };
    let mut object = current.clone();
    match media {
        "application/merge-patch+json" => json_patch::merge(&mut object, &patch.body),
        // Strategic merge differs from a merge patch only for lists with merge keys, which no
        // caller of this fake patches.
        "application/strategic-merge-patch+json" if !kind.custom() => {
            json_patch::merge(&mut object, &patch.body)
        }
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(patch.body)
                .map_err(|e| status(400, "BadRequest", &format!("not a JSON patch: {e}")))?;
            json_patch::patch(&mut object, &operations)
                .map_err(|e| invalid(kind, name, "patch", &e.to_string()))?;
        }
        other => {
            return Err(status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (not {other:?})"
                ),
            ));
        }
    }
    if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return Err(conflict(kind, name));
    }
    check_body(kind, namespace, Some(name), &object)?;
    let manager = patch.manager.unwrap_or_else(|| "unknown".into());
    inner
        .owners
        .entry(key)
        .or_default()
        .update(&manager, &current, &object);
    commit(inner, kind, namespace, object)
}

fn delete(inner: &mut Inner, kind: Kind, namespace: &str, name: &str) -> Written {
    let key = (kind, namespace.to_owned(), name.to_owned());
    let Some(mut object) = inner.objects.remove(&key) else {
        return Err(not_found(kind, name));
    };
    inner.owners.remove(&key);
    inner.revision += 1;
    let rv = inner.revision;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    broadcast(
        inner,
        rv,
        kind,
        namespace,
        json!({"type": "DELETED", "object": object.clone()}),
    );
    Ok((200, object))
}
