//! The latency benchmark's client: sends one captured review at a fixed rate over keep-alive
//! HTTPS/1.1 connections and prints the latency percentiles as one JSON line.
//!
//!     cargo run --release --example latency -- URL BODY CA RATE SECONDS [CONNECTIONS]
//!
//! bench/load.py uses it for the fixed-rate runs instead of oha, which spends about three times
//! the server's CPU per request on the same two cores (`perf sched` while it ran 2,000/s: 2.7 s
//! of CPU in 5 s, most of it oha's), so that its own scheduling delays were most of the tail it
//! measured. This client runs on one thread. Each connection has its own schedule, RATE /
//! CONNECTIONS requests a second, evenly offset from the others; a latency is measured from the
//! moment a request is sent to the moment its whole response has arrived. The first request of
//! each connection (its TLS handshake) is not counted.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::{MissedTickBehavior, interval_at};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, body, ca, rate, seconds, rest @ ..] = args.as_slice() else {
        return Err("usage: latency URL BODY CA RATE SECONDS [CONNECTIONS]".into());
    };
    let connections: u32 = rest.first().map_or(Ok(16), |c| c.parse())?;
    let rate: f64 = rate.parse()?;
    let duration = Duration::from_secs_f64(seconds.parse()?);
    let body = Bytes::from(std::fs::read(body)?);
    let client = client(ca)?;
    let url: hyper::Uri = url.parse()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let latencies = runtime.block_on(async move {
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let period = Duration::from_secs_f64(f64::from(connections) / rate);
        let start = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            let latencies = latencies.clone();
            let offset = period.mul_f64(f64::from(connection) / f64::from(connections));
            tasks.push(tokio::spawn(async move {
                // Opens this connection (the TLS handshake) before the timed part.
                send(&client, &url, &body).await?;
                let mut ticks = interval_at(start + offset, period);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                let mut own = Vec::new();
                while ticks.tick().await.duration_since(start) < duration {
                    own.push(send(&client, &url, &body).await?);
                }
                latencies.lock().unwrap().extend(own);
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
        latencies.sort_unstable();
        Ok::<_, String>(latencies)
    })?;
    if latencies.is_empty() {
        return Err("no request was sent".into());
    }
    let at = |q: f64| {
        let i = ((latencies.len() as f64) * q) as usize;
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "{{\"requests\":{},\"rps\":{:.1},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p99.9\":{:.3},\"max\":{:.3}}}",
        latencies.len(),
        latencies.len() as f64 / duration.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
    );
    Ok(())
}

fn client(ca: &str) -> Result<Client<Https, Full<Bytes>>, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in certificates(&pem)? {
        roots.add(cert)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

fn certificates(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem).collect()
}

/// Sends the review once; the time until its whole response has arrived.
async fn send(
    client: &Client<Https, Full<Bytes>>,
    url: &hyper::Uri,
    body: &Bytes,
) -> Result<Duration, String> {
    let request = hyper::Request::post(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    Ok(sent.elapsed())
}
