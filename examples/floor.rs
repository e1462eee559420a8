//! The benchmarks' floor: the least a webhook in Rust can do. axum-server over rustls (the same
//! `ring` provider as stsguard), answering every AdmissionReview "allowed" after parsing it with
//! kube's `AdmissionReview<DynamicObject>`, and nothing else: no limits beyond axum's default,
//! no timeouts, no logging, no metrics. It shares no code with stsguard, so that
//! `bench/load.py` compares stsguard's whole stack (its transport included) against it.
//!
//!     cargo run --release --example floor -- 127.0.0.1:9443 127.0.0.1:9080 CERT KEY
//!
//! PROBE_ADDR answers `GET /readyz` in plain HTTP, so that the benchmark can tell when it is up.

use axum::{
    Router,
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::Response,
    routing::{get, post},
};
use axum_server::{
    accept::NoDelayAcceptor,
    tls_rustls::{RustlsAcceptor, RustlsConfig},
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};

async fn allow(body: Bytes) -> Response {
    let parsed: Option<AdmissionRequest<DynamicObject>> =
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
            .ok()
            .and_then(|review| review.try_into().ok());
    let Some(request) = parsed else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::from("not an AdmissionReview\n"))
            .unwrap_or_default();
    };
    let review = AdmissionResponse::from(&request).into_review();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&review).unwrap_or_default()))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, probe, cert, key] = args.as_slice() else {
        eprintln!("usage: floor ADDR PROBE_ADDR CERT KEY");
        std::process::exit(2);
    };
    let addr: std::net::SocketAddr = addr.parse().expect("ADDR");
    let tls = RustlsConfig::from_pem_file(cert, key)
        .await
        .expect("certificate");
    let app = Router::new()
        .route("/validate", post(allow))
        .route("/mutate", post(allow));
    let probes = Router::new().route("/readyz", get(|| async { "ok\n" }));
    let probe_listener = tokio::net::TcpListener::bind(probe).await.expect("bind");
    tokio::spawn(async move { axum::serve(probe_listener, probes).await });
    eprintln!("floor serving on {addr}");
    // TCP_NODELAY, as stsguard sets it: without it a response that leaves in more than one
    // segment waits for the client's delayed ACK, and the floor's tail at a fixed rate was its
    // own doing rather than the machine's.
    let acceptor = RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
    axum_server::bind(addr)
        .acceptor(acceptor)
        .serve(app.into_make_service())
        .await
        .expect("serve");
}
