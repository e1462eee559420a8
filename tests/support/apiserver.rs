//! A fake Kubernetes API server, served over real HTTP from the test: the list/watch protocol
//! (JSON lists with resourceVersion, newline-delimited watch event streams resumed from a
//! resourceVersion, bookmarks, `410 Gone` once history is compacted), GET of single objects,
//! writes as the real server checks them (`writes`: create, replace with optimistic concurrency,
//! merge/JSON/strategic patches, server-side apply with field managers and conflicts, delete),
//! and the faults tests need (dropped watches, a stopped server, a cache that lags, and the
//! control plane's own in `faults`: a new resourceVersion epoch, hanging lists, stalled
//! watches, 429 with Retry-After). Watches end after their `timeoutSeconds`. It serves
//! the kinds stsguard reads or writes: Services, StatefulSets, Secrets, ConfigMaps, Leases,
//! webhook configurations and policy reports. The kube client under test is not mocked: it talks
//! to this server.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinSet,
};

#[path = "apiserver/faults.rs"]
mod faults;
#[path = "apiserver/ownership.rs"]
mod ownership;
#[path = "apiserver/reads.rs"]
mod reads;
#[path = "apiserver/reports.rs"]
mod reports;
#[path = "apiserver/resources.rs"]
mod resources;
#[path = "apiserver/writes.rs"]
mod writes;

pub use resources::Kind;
use resources::route;

use ownership::Owners;
#[allow(unused_imports)]
pub use reports::ReportWrite;

struct WatchStream {
    kind: Kind,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Set when the stream is dropped without a close: it is never ended, even at its timeout.
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    /// Objects by kind, namespace and name.
    objects: BTreeMap<(Kind, String, String), Value>,
    /// Watch events after `compacted`, oldest first: (resourceVersion, kind, namespace, event).
    history: Vec<(u64, Kind, String, Value)>,
    compacted: u64,
    watches: Vec<WatchStream>,
    requests: Vec<String>,
    /// The API server's DNS-1035 rule for Service names (RelaxedServiceNameValidation off).
    strict_service_names: bool,
    /// Field managers of each object written through the API (server-side apply).
    owners: BTreeMap<(Kind, String, String), Owners>,
    /// Objects created through the API so far (for their uids).
    created: u64,
    /// Installed CRD schemas that writes of their kind must pass (`reports`).
    schemas: BTreeMap<Kind, reports::Schema>,
    report_writes: Vec<ReportWrite>,
    /// Serve as an API server before 1.36: no MutatingAdmissionPolicy v1.
    before_1_36: bool,
    faults: faults::Faults,
}

/// The server's state; it outlives restarts of the listener.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    /// Lists wait while this is false (to hold caches before their first sync).
    lists_open: watch::Sender<bool>,
    addr: SocketAddr,
    running: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = FakeApiServer {
            inner: Arc::default(),
            lists_open: watch::channel(true).0,
            addr,
            running: Arc::default(),
        };
        server.serve(listener);
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client configuration for this server.
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().unwrap())
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
                 users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\n\
                 current-context: fake\n",
                self.url()
            ),
        )
        .unwrap();
        path
    }

    fn serve(&self, listener: TcpListener) {
        let router = Router::new().fallback(handle).with_state(self.clone());
        let mut tasks = JoinSet::new();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // As the real API server (Go sets TCP_NODELAY): a response written in pieces
                // does not wait for the client's delayed ACK.
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                held.lock().unwrap().spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // Dropping the connection set aborts every connection: an outage, not a graceful stop.
        tasks.spawn(async move {
            std::future::pending::<()>().await;
            drop(connections);
        });
        *self.running.lock().unwrap() = Some(tasks);
    }

    /// Stops listening and cuts every connection, as an API server that goes away.
    pub fn stop(&self) {
        if let Some(mut tasks) = self.running.lock().unwrap().take() {
            tasks.abort_all();
        }
        let mut inner = self.inner.lock().unwrap();
        inner.watches.clear();
        inner.faults.forget_stalled();
    }

    /// Listens again on the same address, with the same objects.
    pub async fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// Holds (false) or releases (true) list requests.
    pub fn open_lists(&self, open: bool) {
        self.lists_open.send_replace(open);
    }

    /// Creates or replaces an object and tells the watches.
    pub fn apply(&self, object: Value) {
        self.record(object, false);
    }

    /// Service names as an API server without RelaxedServiceNameValidation takes them:
    /// DNS-1035 labels (a letter first). By default they are DNS-1123 labels (a digit may come
    /// first), as with the gate on.
    /// From now on, answer as an API server before Kubernetes 1.36: MutatingAdmissionPolicy v1 is
    /// neither in discovery nor served.
    pub fn before_1_36(&self) {
        self.inner.lock().unwrap().before_1_36 = true;
    }

    pub fn strict_service_names(&self) {
        self.inner.lock().unwrap().strict_service_names = true;
    }

    /// Whether the API server would accept `name` for a Service, and why not.
    pub fn service_name_error(&self, name: &str) -> Option<String> {
        let strict = self.inner.lock().unwrap().strict_service_names;
        let label = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        let first_ok = !strict || name.starts_with(|c: char| c.is_ascii_lowercase());
        (!label || !first_ok).then(|| {
            let rule = if strict {
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', \
                 start with an alphabetic character, and end with an alphanumeric character"
            } else {
                "a DNS-1123 label must consist of lower case alphanumeric characters or '-', and \
                 must start and end with an alphanumeric character"
            };
            format!(
                "Service \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": {rule}"
            )
        })
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(mut object) =
            inner
                .objects
                .remove(&(kind, namespace.to_owned(), name.to_owned()))
        {
            inner.revision += 1;
            let rv = inner.revision;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let event = json!({"type": "DELETED", "object": object});
            broadcast(&mut inner, rv, kind, namespace, event);
        }
    }

    /// Stores an object without telling the watches: a cache that lags behind a write.
    pub fn apply_unannounced(&self, object: Value) {
        self.record(object, true);
    }

    /// Deletes an object without telling the watches: a cache that still holds an object
    /// deleted a moment ago.
    pub fn delete_unannounced(&self, kind: Kind, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        let removed = inner
            .objects
            .remove(&(kind, namespace.to_owned(), name.to_owned()));
        assert!(
            removed.is_some(),
            "no {kind:?} {namespace}/{name} to delete"
        );
        inner.revision += 1;
    }

    /// How many LISTs (not watches) of `path` were served.
    pub fn lists_of(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.strip_prefix("GET ")
                    .and_then(|r| r.strip_prefix(path))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('?'))
                    && !r.contains("watch=")
            })
            .count()
    }

    fn record(&self, mut object: Value, silently: bool) {
        let kind = Kind::of(&object);
        if kind == Kind::Service {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(error) = self.service_name_error(name) {
                panic!("the API server refuses this Service: {error}");
            }
        }
        let namespace = if kind.namespaced() {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            object["metadata"]["namespace"] = json!(namespace);
            namespace
        } else {
            String::new()
        };
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let mut inner = self.inner.lock().unwrap();
        inner.revision += 1;
        let rv = inner.revision;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (kind, namespace.clone(), name);
        let event_type = if inner.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.objects.insert(key, object.clone());
        if !silently {
            let event = json!({"type": event_type, "object": object});
            broadcast(&mut inner, rv, kind, &namespace, event);
        }
    }

    /// Forgets the watch history, as etcd compaction does: a watch resumed from any earlier
    /// resourceVersion gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.revision += 1;
        inner.compacted = inner.revision;
        inner.history.clear();
    }

    /// Ends every watch stream (the client resumes from its last resourceVersion).
    pub fn drop_watches(&self) {
        self.inner.lock().unwrap().watches.clear();
    }

    /// The stored object, as a GET would return it.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind (all namespaces), in namespace and name order.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The requests served so far (`METHOD path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn broadcast(inner: &mut Inner, rv: u64, kind: Kind, namespace: &str, event: Value) {
    let line = Bytes::from(format!("{event}\n"));
    inner.history.push((rv, kind, namespace.to_owned(), event));
    inner.watches.retain(|w| {
        if w.kind != kind || w.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return true;
        }
        w.tx.send(line.clone()).is_ok()
    });
}

fn query(request: &Request, key: &str) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decoded(v))
    })
}

fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn handle(State(server): State<FakeApiServer>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    server
        .inner
        .lock()
        .unwrap()
        .requests
        .push(format!("{} {}", request.method(), request.uri()));
    reports::note(&server, &request);
    // As the real one: public, and exempt from API Priority and Fairness (the probes flow).
    if path == "/readyz" {
        return (StatusCode::OK, "ok").into_response();
    }
    if let Some(throttled) = server.throttled_answer() {
        return throttled;
    }
    let before_1_36 = server.inner.lock().unwrap().before_1_36;
    if let Some(group_version) = path.strip_prefix("/apis/")
        && let Some(document) = resources::discovery(group_version, before_1_36)
    {
        return reply(StatusCode::OK, &document);
    }
    let route = route(&path).filter(|(kind, _, _)| !(before_1_36 && kind.since_1_36()));
    let Some((kind, namespace, name)) = route else {
        return reply(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "no such path"),
        );
    };
    if request.method() != axum::http::Method::GET {
        return writes::write(&server, request, kind, namespace, name).await;
    }
    reads::read(&server, request, kind, namespace, name).await
}

fn reply(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
