//! A real stsguard server on ephemeral ports with a generated certificate, and a real HTTPS
//! client (hyper + rustls) that speaks HTTP/1.1 or HTTP/2 to it. The submodules hold what several
//! test files share: a fake API server and webhooks that follow it, hostile reviews and raw
//! connections, `stsguard serve` as a child process, and the property tests' runner and
//! generators.
#![allow(dead_code)]

pub mod apiserver;
pub mod cluster;
pub mod connections;
pub mod hostile;
pub mod json_mutations;
pub mod keepalive;
pub mod process;
pub mod properties;
pub mod text_mutations;
pub mod timeline;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject};
use serde_json::Value;
use stsguard::{
    lookup::{Lookup, NoLookup},
    metrics::Metrics,
    policy::Policy,
    review::Reviewer,
    server::{Limits, Readiness, Server, Webhook},
    tls::{self, CertResolver},
};
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestServer {
    pub addr: SocketAddr,
    pub probe_addr: SocketAddr,
    pub ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(policy: Policy) -> TestServer {
        Self::start_with(policy, Arc::new(NoLookup), Limits::default()).await
    }

    pub async fn start_with(policy: Policy, lookup: Arc<dyn Lookup>, limits: Limits) -> TestServer {
        Self::start_full(policy, lookup, limits, Readiness::default()).await
    }

    pub async fn start_full(
        policy: Policy,
        lookup: Arc<dyn Lookup>,
        limits: Limits,
        readiness: Readiness,
    ) -> TestServer {
        Self::start_measured(policy, lookup, limits, readiness, Arc::new(Metrics::new())).await
    }

    /// As `start_full`, recording into `metrics` (which the lookup may share).
    pub async fn start_measured(
        policy: Policy,
        lookup: Arc<dyn Lookup>,
        limits: Limits,
        readiness: Readiness,
        metrics: Arc<Metrics>,
    ) -> TestServer {
        let generated = tls::generate(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            30,
        )
        .unwrap();
        let certified = tls::certified_key_from_pem(
            generated.cert.as_bytes(),
            generated.key.as_bytes(),
            Path::new("tls.crt"),
            Path::new("tls.key"),
        )
        .unwrap();
        let config = tls::server_config(Arc::new(CertResolver::new(certified)), None).unwrap();
        let reviewer = Reviewer::new(Arc::new(policy), lookup);
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(config),
            Webhook {
                reviewer,
                metrics: {
                    if let Some(health) = readiness.cluster() {
                        metrics.watch_cluster(health);
                    }
                    metrics
                },
                readiness,
            },
            limits,
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let probe_addr = server.probe_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            probe_addr,
            ca_pem: generated.ca_cert,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Signals shutdown without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within its grace period")
                .unwrap()
                .unwrap();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    One,
    Two,
}

pub const BOTH: [Http; 2] = [Http::One, Http::Two];

/// A client that trusts only the test server's CA and resolves localhost to it.
#[derive(Clone)]
pub struct TestClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub http: Http,
}

pub fn client(server: &TestServer, http: Http) -> TestClient {
    client_trusting(&server.ca_pem, http)
}

/// A client that trusts only the CA in `ca_pem`.
pub fn client_trusting(ca_pem: &str, http: Http) -> TestClient {
    let config = client_config(ca_pem);
    // As the API server's Go client: TCP_NODELAY, so that a request written in pieces does not
    // wait for a delayed ACK.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = match http {
        Http::One => builder.enable_http1().wrap_connector(tcp),
        Http::Two => builder.enable_http2().wrap_connector(tcp),
    };
    let mut client = Client::builder(TokioExecutor::new());
    if http == Http::Two {
        client.http2_only(true);
    }
    TestClient {
        client: client.build(connector),
        http,
    }
}

/// A plain-HTTP GET to the probe listener; returns the status code and body.
pub async fn probe(server: &TestServer, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.probe_addr)
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// A TLS client configuration that trusts only the CA in `ca_pem`.
pub fn client_config(ca_pem: &str) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A TLS stream to the test server, for requests a normal client would not send.
pub async fn raw_tls(
    server: &TestServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&server.ca_pem)));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub version: hyper::Version,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestClient {
    pub async fn post(&self, url: &str, body: impl Into<Bytes>) -> Reply {
        self.send(Method::POST, url, body.into()).await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, Bytes::new()).await
    }

    /// Like `post`, but a transport error (a refused or closed connection) is returned.
    pub async fn try_post(&self, url: &str, body: impl Into<Bytes>) -> Result<Reply, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let version = response.version();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            version,
            body,
        })
    }

    async fn send(&self, method: Method, url: &str, body: Bytes) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .expect("request succeeds");
        let status = response.status();
        let version = response.version();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            version,
            body,
        }
    }
}

/// A captured AdmissionReview from tests/fixtures/admission.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JSON Patch in a review response, decoded from base64.
pub fn patch_of(review: &Value) -> Option<json_patch::Patch> {
    let encoded = review["response"]["patch"].as_str()?;
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let bytes = BASE64.decode(encoded).expect("patch is base64");
    Some(serde_json::from_slice(&bytes).expect("patch is a JSON Patch"))
}

/// The warnings of a review response, without the note that cluster lookups were unavailable.
pub fn warnings(review: &Value) -> Vec<String> {
    all_warnings(review)
        .into_iter()
        .filter(|w| !w.starts_with(stsguard::review::SKIPPED_NOTE))
        .collect()
}

/// Every warning of a review response.
pub fn all_warnings(review: &Value) -> Vec<String> {
    review["response"]["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}
