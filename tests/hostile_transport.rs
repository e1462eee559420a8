//! Hostile transport against the real server: bodies over the limit (413) however they arrive,
//! slowloris HTTP/1.1 headers and handshakes, connections silent after the handshake, oversized
//! HTTP/1.1 headers (431), slow bodies (408), plaintext HTTP on the TLS port, and TLS versions
//! below 1.2. After each, proof that the server still answers a captured review correctly.

mod support;

use std::{
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::{Request, body::Frame};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use stsguard::{lookup::NoLookup, policy::Policy, server::Limits};
use support::{
    BOTH, Http, TestServer,
    connections::{GIVE_UP, assert_all_closed, flood, raw_h2, read_until, short_limits, trickle},
    fixture,
    hostile::{ANSWER_WITHIN, NOSVC, assert_still_serving, post},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client whose request bodies are streams: no Content-Length (chunked on HTTP/1.1), or
/// trickled.
fn stream_client(
    server: &TestServer,
    http: Http,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, UnsyncBoxBody<Bytes, Infallible>> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(support::client_config(&server.ca_pem))
        .https_only();
    let connector = match http {
        Http::One => builder.enable_http1().build(),
        Http::Two => builder.enable_http2().build(),
    };
    let mut client = Client::builder(TokioExecutor::new());
    if http == Http::Two {
        client.http2_only(true);
    }
    client.build(connector)
}

async fn send_stream(
    server: &TestServer,
    http: Http,
    body: UnsyncBoxBody<Bytes, Infallible>,
) -> (u16, String) {
    let request = Request::post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response =
        tokio::time::timeout(ANSWER_WITHIN, stream_client(server, http).request(request))
            .await
            .expect("answered in time")
            .expect("a response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_still_serving(server, &format!("{http:?} streamed body, {status}")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_however_they_arrive() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    let says = "than the webhook's limit of 65536 bytes (--max-body-bytes";
    // The answer is a metav1.Status, which the API server shows, not an opaque 413.
    let is_status = |status: u16, text: &str| {
        let body: serde_json::Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("not a JSON Status ({e}): {text}"));
        status == 413
            && body["kind"] == "Status"
            && body["apiVersion"] == "v1"
            && body["status"] == "Failure"
            && body["code"] == 413
            && body["reason"] == "RequestEntityTooLarge"
            && body["message"].as_str().is_some_and(|m| m.contains(says))
    };
    for http in BOTH {
        // With a length: refused from the headers, the body read and thrown away.
        let reply = post(&server, http, "/validate", vec![b' '; 64 * 1024 + 1]).await;
        assert!(
            is_status(reply.status.as_u16(), &reply.text()),
            "{http:?}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains("is 65537 bytes, larger"),
            "{}",
            reply.text()
        );
        // Exactly at the limit: read, and then it is just not a review.
        let reply = post(&server, http, "/validate", vec![b' '; 64 * 1024]).await;
        assert_eq!(reply.status, 400, "{http:?}");

        // Without a length (chunked on HTTP/1.1, plain DATA frames on HTTP/2): refused once the
        // limit is passed; the rest is read without being kept.
        let chunks =
            (0..1024).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b' '; 4096]))));
        let body = StreamBody::new(futures::stream::iter(chunks));
        let (status, text) = send_stream(&server, http, UnsyncBoxBody::new(body)).await;
        assert!(is_status(status, &text), "{http:?}: {status} {text}");
        assert!(text.contains("is 4194304 bytes, larger"), "{text}");
    }

    // A Content-Length far over the limit with no body sent: answered at once from the headers.
    let mut tls = support::raw_tls(&server).await;
    tls.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let response = read_until(&mut tls, b"RequestEntityTooLarge").await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains(says), "{response}");
    assert!(response.contains("is 1000000000000 bytes"), "{response}");
    drop(tls);

    // A Content-Length that does not fit in 64 bits.
    let mut tls = support::raw_tls(&server).await;
    tls.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\n\
          Content-Length: 99999999999999999999999\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    assert_still_serving(&server, "bodies over the limit").await;
    server.stop().await;
}

#[tokio::test]
async fn slowloris_http1_headers_and_handshakes_are_cut_off() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    // One byte a second: these headers would take over a minute to arrive.
    let headers = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}";
    // The start of a ClientHello, one byte a second.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    // A keep-alive connection left idle after a complete request and its answer.
    let mut kept = support::raw_tls(&server).await;
    let body = fixture(NOSVC);
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    kept.write_all(&[head.as_bytes(), &body].concat())
        .await
        .unwrap();
    let answer = read_until(&mut kept, b"sts-service-name").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (headers, handshake, idle) = tokio::join!(
        trickle(support::raw_tls(&server).await, b"", headers, GIVE_UP),
        trickle(tcp, b"", &hello, GIVE_UP),
        trickle(kept, b"", b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("trickling HTTP/1.1 headers", headers),
        ("trickling a ClientHello", handshake),
        ("idle after a request", idle),
    ]);
    assert_still_serving(&server, "HTTP/1.1 slowloris").await;
    server.stop().await;
}

/// A client that completes the TLS handshake and then sends nothing (or a single byte, which
/// could still start either `POST` or the HTTP/2 preface) holds a connection and a task: the
/// idle timeout closes a silent HTTP/1.1 connection (as it closes a kept-alive one), the header
/// read timeout one that began a request, and an HTTP/2 one that sends no request.
#[tokio::test]
async fn connections_silent_after_the_handshake_are_closed() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    let (silent, one_byte, silent_h2) = tokio::join!(
        trickle(support::raw_tls(&server).await, b"", b"", GIVE_UP),
        trickle(support::raw_tls(&server).await, b"P", b"", GIVE_UP),
        trickle(raw_h2(&server).await, b"", b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("silent after the handshake", silent),
        ("one byte after the handshake", one_byte),
        ("silent after an h2 handshake", silent_h2),
    ]);
    assert_still_serving(&server, "silent connections").await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_http1_headers_get_431() {
    let server = TestServer::start(Policy::builtin()).await;
    let big = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(1024 * 1024)
    );
    let many = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\n{}Content-Length: 2\r\n\r\n{{}}",
        (0..1_000)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (what, request) in [("a 1 MiB header", big), ("1,000 headers", many)] {
        let (received, closed) = flood(support::raw_tls(&server).await, request.into_bytes()).await;
        let received = String::from_utf8_lossy(&received);
        assert!(received.starts_with("HTTP/1.1 431"), "{what}: {received}");
        assert!(closed, "{what}");
        assert_still_serving(&server, what).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn slow_bodies_get_408_on_both_protocols() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;
    for http in BOTH {
        let started = Instant::now();
        // One byte a second, forever.
        let body = StreamBody::new(futures::stream::unfold(0u32, |n| async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b" "))),
                n + 1,
            ))
        }));
        let (status, _) = send_stream(&server, http, UnsyncBoxBody::new(body)).await;
        assert_eq!(status, 408, "{http:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{http:?}");
    }
    assert_still_serving(&server, "slow bodies").await;
    server.stop().await;
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_not_answered_as_http() {
    let server = TestServer::start(Policy::builtin()).await;
    for request in [
        &b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}"[..],
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
            .await
            .expect("the connection is closed, not left open");
        assert!(read.is_ok() || response.is_empty(), "{read:?}");
        assert!(
            !response.windows(5).any(|w| w == b"HTTP/"),
            "answered as HTTP: {}",
            String::from_utf8_lossy(&response)
        );
        // At most a TLS alert record: content type 21, TLS 1.x, a two-byte fatal alert.
        assert!(
            response.is_empty()
                || (response.len() == 7
                    && response[0] == 0x15
                    && response[1] == 0x03
                    && response[5] == 2),
            "{response:?}"
        );
        assert_still_serving(&server, "plaintext HTTP").await;
    }
    server.stop().await;
}

/// Runs `openssl s_client` against the server with one protocol version; returns whether the
/// handshake succeeded and what it printed.
async fn openssl_handshake(addr: SocketAddr, ca: PathBuf, version: &'static str) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-brief", "-connect"])
            .arg(addr.to_string())
            .args([
                "-servername",
                "localhost",
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&ca)
            .arg(version)
            // OpenSSL 3 does not even offer TLS 1.0/1.1 above security level 0.
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl is installed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("openssl s_client {version} hangs");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), printed)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tls_below_1_2_is_refused_by_the_server() {
    let server = TestServer::start(Policy::builtin()).await;
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    ca.write_all(server.ca_pem.as_bytes()).unwrap();
    let ca_path = ca.path().to_owned();
    for (version, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, printed) = openssl_handshake(server.addr, ca_path.clone(), version).await;
        assert!(ok, "{version} should be accepted: {printed}");
        assert!(
            printed.contains(&format!("Protocol version: {name}")),
            "{version}: {printed}"
        );
        assert!(printed.contains("Verification: OK"), "{version}: {printed}");
    }
    for version in ["-tls1_1", "-tls1"] {
        let (ok, printed) = openssl_handshake(server.addr, ca_path.clone(), version).await;
        assert!(!ok, "{version} should be refused: {printed}");
        // Refused by the server (OpenSSL received its alert), not by the local OpenSSL.
        assert!(
            printed.contains("SSL alert number 40") || printed.contains("SSL alert number 70"),
            "{version}: {printed}"
        );
        assert_still_serving(&server, version).await;
    }
    server.stop().await;
}
