//! Reads as the real API server answers them: GET of one object, LISTs paged with `limit` and
//! `continue` (held while a test keeps lists closed), field selectors limited to what the server
//! supports, and watches resumed from a resourceVersion with bookmarks and `410 Gone` after
//! compaction, ended after their `timeoutSeconds`.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{FakeApiServer, Kind, WatchStream, query, reply, status};

/// Answers a GET: one object, a list, or a watch.
pub(super) async fn read(
    server: &FakeApiServer,
    request: Request,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
) -> Response {
    if let Some(name) = name {
        let inner = server.inner.lock().unwrap();
        let key = (kind, namespace.clone().unwrap_or_default(), name.clone());
        return match inner.objects.get(&key) {
            Some(object) => reply(StatusCode::OK, object),
            None => reply(
                StatusCode::NOT_FOUND,
                &status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", kind.resource()),
                ),
            ),
        };
    }
    if query(&request, "watch").as_deref() == Some("true")
        || query(&request, "watch").as_deref() == Some("1")
    {
        let from: u64 = query(&request, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let bookmarks = query(&request, "allowWatchBookmarks").as_deref() == Some("true");
        let timeout = query(&request, "timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        return watch_stream(server, kind, namespace, from, bookmarks, timeout);
    }

    if let Some(field) = query(&request, "fieldSelector").and_then(|s| unsupported_field(&s)) {
        return reply(
            StatusCode::BAD_REQUEST,
            &status(
                400,
                "BadRequest",
                &format!("field label not supported: {field}"),
            ),
        );
    }
    server.list_faults().await;
    let mut open = server.lists_open.subscribe();
    let _ = open.wait_for(|open| *open).await;
    let inner = server.inner.lock().unwrap();
    // Pages as the real API server does: `limit` objects, then a `continue` token (here the
    // name of the next object, after its namespace) that the client sends back. Each page starts
    // where the last one ended, so a list of many pages costs what one list of everything does.
    let limit: usize = query(&request, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let start = query(&request, "continue")
        .and_then(|token| {
            let (ns, name) = token.split_once('/')?;
            Some((kind, ns.to_owned(), name.to_owned()))
        })
        .unwrap_or((kind, String::new(), String::new()));
    let mut matching = inner
        .objects
        .range(start..)
        .take_while(|((k, _, _), _)| *k == kind)
        .filter(|((_, ns, _), _)| namespace.as_ref().is_none_or(|n| n == ns));
    // Serialized in place, not cloned first: 100,000 objects are served in seconds.
    let mut items = String::from("[");
    let mut next = None;
    for (count, ((_, ns, name), object)) in matching.by_ref().enumerate() {
        if count == limit {
            next = Some(format!("{ns}/{name}"));
            break;
        }
        if count > 0 {
            items.push(',');
        }
        items.push_str(&object.to_string());
    }
    items.push(']');
    let mut metadata = json!({"resourceVersion": inner.revision.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    let body = format!(
        r#"{{"apiVersion":"{}","kind":"{}List","metadata":{metadata},"items":{items}}}"#,
        kind.api_version(),
        kind.name(),
    );
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// The field selectors the real API server supports for these kinds: only the generic
/// metadata fields (StatefulSets have no field selector on spec.serviceName, Services none on
/// their spec). Anything else is a 400, as there.
fn unsupported_field(selector: &str) -> Option<String> {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .map(|term| term.split(['=', '!']).next().unwrap_or_default().to_owned())
        .find(|field| !matches!(field.as_str(), "metadata.name" | "metadata.namespace"))
}

fn watch_stream(
    server: &FakeApiServer,
    kind: Kind,
    namespace: Option<String>,
    from: u64,
    bookmarks: bool,
    timeout: Option<Duration>,
) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let stalled = Arc::new(AtomicBool::new(false));
    let mut inner = server.inner.lock().unwrap();
    if from < inner.compacted {
        let gone = json!({"type": "ERROR", "object": status(410, "Expired",
            &format!("too old resource version: {from} ({})", inner.compacted))});
        let _ = tx.send(Bytes::from(format!("{gone}\n")));
        drop(tx);
    } else {
        for (rv, k, ns, event) in &inner.history {
            if *rv > from && *k == kind && namespace.as_ref().is_none_or(|n| n == ns) {
                let _ = tx.send(Bytes::from(format!("{event}\n")));
            }
        }
        if bookmarks {
            let bookmark = json!({"type": "BOOKMARK", "object": {
                "apiVersion": kind.api_version(), "kind": kind.name(),
                "metadata": {"resourceVersion": inner.revision.to_string()}}});
            let _ = tx.send(Bytes::from(format!("{bookmark}\n")));
        }
        inner.watches.push(WatchStream {
            kind,
            namespace,
            tx,
            stalled: stalled.clone(),
        });
    }
    // Ended after `timeoutSeconds`, as the real API server ends it (client-go and kube ask
    // for one, then resume from their last resourceVersion).
    let deadline = tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(3600));
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let stalled = stalled.clone();
        async move {
            tokio::select! {
                line = rx.recv() => line.map(|line| (Ok::<_, Infallible>(line), rx)),
                () = tokio::time::sleep_until(deadline) => {
                    if stalled.load(Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                    None
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}
