//! Raw connections for the slow-client and HTTP/2 tests: reading until an answer arrives,
//! trickling bytes one a second, flooding as fast as the server reads, a TLS stream that
//! negotiated HTTP/2, and the short timeouts that make these tests fast.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use stsguard::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TestServer, client_config};

/// Reads until `needle` has arrived (or the connection ends, or 10 seconds pass).
pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, needle: &[u8]) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Limits that make slow-client tests fast.
pub fn short_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// What the server sent, and when it closed the connection (None: still open).
pub type Trickled = (Vec<u8>, Option<Duration>);

/// Sends `bytes` one a second until the server closes the connection or `give_up` passes;
/// returns what the server sent and when it closed (None: still open at `give_up`).
pub async fn trickle<S>(stream: S, prefix: &[u8], bytes: &[u8], give_up: Duration) -> Trickled
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let (mut read, mut write) = tokio::io::split(stream);
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return (received, started.elapsed()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    write.write_all(prefix).await.unwrap();
    let writer = {
        let bytes = bytes.to_vec();
        tokio::spawn(async move {
            for byte in bytes {
                if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Keep the write half (and so the connection) open.
            std::future::pending::<()>().await;
        })
    };
    let outcome = tokio::time::timeout(give_up, reader).await;
    writer.abort();
    match outcome {
        Ok(joined) => {
            let (received, at) = joined.unwrap();
            (received, Some(at))
        }
        Err(_) => (Vec::new(), None),
    }
}

/// Asserts that the server closes every connection within 5 seconds (its header read and idle
/// timeouts are 1s), listing those it left open; and that none of them got anything but nothing
/// or a 408.
pub fn assert_all_closed(outcomes: Vec<(&str, Trickled)>) {
    let mut open = Vec::new();
    for (what, (received, closed)) in outcomes {
        let received = String::from_utf8_lossy(&received);
        assert!(
            !received.contains("HTTP/1.1") || received.starts_with("HTTP/1.1 408"),
            "{what}: {received}"
        );
        if closed.is_none_or(|at| at >= Duration::from_secs(5)) {
            open.push(format!(
                "{what}: closed after {closed:?} (None: open after 8s)"
            ));
        }
    }
    assert!(
        open.is_empty(),
        "connections outlive the 1s header read and idle timeouts: {open:?}"
    );
}

pub const GIVE_UP: Duration = Duration::from_secs(8);

/// A TLS stream that negotiated HTTP/2 by ALPN, for frames a normal client would not send.
pub async fn raw_h2(server: &TestServer) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = client_config(&server.ca_pem);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// Writes `bytes` as fast as the server reads them (stopping when it stops) while reading what
/// it sends; returns what it sent and whether it closed the connection within 20 seconds.
pub async fn flood<S>(stream: S, bytes: Vec<u8>) -> (Vec<u8>, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        for chunk in bytes.chunks(16 * 1024) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = write.flush().await;
        std::future::pending::<()>().await;
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    (received, closed)
}
