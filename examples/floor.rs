//! The benchmarks' floor: stsguard's own listeners (same TLS configuration, same HTTP server,
//! same limits) answering every AdmissionReview "allowed" after parsing it with kube's types,
//! and nothing else. `bench/load.sh` reports stsguard's throughput as a ratio of this one's.
//!
//!     cargo run --release --example floor -- 127.0.0.1:9443 127.0.0.1:9080 CERT KEY

use std::{path::Path, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::Response,
    routing::post,
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};
use stsguard::{
    server::{Limits, Readiness, Server, shutdown_signal},
    tls::{self, CertResolver},
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
    let certified = tls::load_certified_key(Path::new(cert), Path::new(key)).expect("certificate");
    let config = tls::server_config(Arc::new(CertResolver::new(certified)), None).expect("tls");
    let limits = Limits::default();
    let router = Router::new()
        .route("/validate", post(allow))
        .route("/mutate", post(allow))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes));
    let readiness = Readiness::default();
    let probes = stsguard::server::probe_app(readiness.clone(), Arc::default());
    let server = Server::with_routers(
        addr.parse().expect("ADDR"),
        probe.parse().expect("PROBE_ADDR"),
        Arc::new(config),
        router,
        probes,
        readiness,
        limits,
    )
    .await
    .expect("bind");
    eprintln!("floor serving on {addr}");
    server
        .run(async {
            shutdown_signal().await;
        })
        .await
        .expect("serve");
}
