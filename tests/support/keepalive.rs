//! Clients that keep connections alive the way the API server's webhook client does (Go's
//! net/http over HTTP/1.1, x/net/http2 over HTTP/2), sending reviews back to back, and a tally
//! of how each request ended: answered, never written (a refused connection, a connection the
//! server had visibly closed, a GOAWAY or REFUSED_STREAM: the API server retries or goes
//! elsewhere), or broken (written, then a reset, a broken pipe or EOF before the answer: with
//! `failurePolicy: Ignore` the object goes through unreviewed).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client_config;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A written request not answered within this is counted as broken (the API server's webhook
/// timeout is at most 30s; these tests' reviews take milliseconds).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How the requests of a run ended.
#[derive(Default)]
pub struct Tally {
    pub answered: AtomicU64,
    /// Requests never written: the connection was refused, or visibly closed before the write.
    pub not_written: AtomicU64,
    /// Streams the server did not process (GOAWAY above their id, or REFUSED_STREAM).
    pub refused_streams: AtomicU64,
    /// Connections opened: each close the server asked for shows as one more.
    pub connects: AtomicU64,
    /// Answers with `Connection: close`, and HTTP/2 connections that ended with a GOAWAY.
    pub asked_to_close: AtomicU64,
    /// Written requests that got no answer, with what happened.
    pub broken: Mutex<Vec<String>>,
}

impl Tally {
    fn broke(&self, what: String) {
        self.broken.lock().unwrap().push(what);
    }

    pub fn summary(&self) -> String {
        format!(
            "answered {}, not written {}, refused streams {}, connects {}, asked to close {}, broken {}",
            self.answered.load(Ordering::SeqCst),
            self.not_written.load(Ordering::SeqCst),
            self.refused_streams.load(Ordering::SeqCst),
            self.connects.load(Ordering::SeqCst),
            self.asked_to_close.load(Ordering::SeqCst),
            self.broken.lock().unwrap().len(),
        )
    }

    /// Panics with the broken requests, if any.
    pub fn assert_none_broken(&self, what: &str) {
        let summary = self.summary();
        let broken = self.broken.lock().unwrap();
        assert!(
            broken.is_empty(),
            "{what}: {} of the written requests got no answer ({}); first: {:?}",
            broken.len(),
            summary,
            &broken[..broken.len().min(5)]
        );
    }
}

/// What a client does between its requests: nothing (back to back), or pauses that home in on
/// the moment the server closes an idle connection, one `step` longer after each pause the
/// connection survived and one shorter after each it did not, so that the client's next
/// request and the server's close keep crossing (where a keep-alive race shows, if there is
/// one).
#[derive(Clone)]
pub struct Pace {
    /// The first pause.
    pub pause: Duration,
    pub step: Duration,
    /// As Go's `Transport.IdleConnTimeout` (HTTP/1.1): a connection idle this long is closed by
    /// the client before it would be reused; pauses grow no longer than this.
    pub client_idle: Option<Duration>,
}

impl Pace {
    pub const BACK_TO_BACK: Pace = Pace {
        pause: Duration::ZERO,
        step: Duration::ZERO,
        client_idle: None,
    };

    /// The next pause after one the connection survived (true) or not.
    fn next(&self, pause: Duration, survived: bool) -> Duration {
        if survived {
            (pause + self.step).min(self.client_idle.unwrap_or(Duration::MAX))
        } else {
            pause.saturating_sub(self.step)
        }
    }
}

async fn connect_tls(addr: SocketAddr, ca: &str, alpn: &[u8]) -> Option<Tls> {
    let mut config = client_config(ca);
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connected = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        // As the API server's dialer: TCP_NODELAY.
        tcp.set_nodelay(true).ok()?;
        connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .ok()
    };
    tokio::time::timeout(ANSWER_WITHIN, connected)
        .await
        .ok()
        .flatten()
}

/// The webhook request as the API server writes it: headers and body in one write.
fn h1_request(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kube-apiserver-admission\r\n\
         Content-Length: {}\r\nAccept: application/json, */*\r\nContent-Type: application/json\r\n\
         Accept-Encoding: gzip\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Whether the server has closed (or written unasked to) an idle connection: Go's read loop
/// sees that before the connection is taken from the pool (`errServerClosedIdle`).
fn closed_by_server(tls: &mut Tls) -> bool {
    let mut byte = [0u8; 1];
    match tls.read(&mut byte).now_or_never() {
        None => false,
        Some(Ok(_) | Err(_)) => true,
    }
}

/// Reads one response; returns its status line, whether it says `Connection: close`, or why
/// it did not arrive whole.
pub async fn read_response(tls: &mut Tls) -> Result<(String, bool), String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tls.read(&mut buf).await {
            Ok(0) => return Err(format!("EOF after {} bytes of the answer", received.len())),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", received.len())),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no content-length: {head}"))?;
    while received.len() < head_end + length {
        match tls.read(&mut buf).await {
            Ok(0) => return Err("EOF in the answer's body".into()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read in the answer's body: {e}")),
        }
    }
    let close = head.lines().any(|l| l == "connection: close");
    Ok((head.lines().next().unwrap_or("").to_owned(), close))
}

/// An HTTP/1.1 client as the API server's: one connection, reused while the server keeps it;
/// a new one when the answer said `Connection: close`, when the server closed it while idle,
/// or when it idled past `pace.client_idle`.
pub async fn h1_client(
    addr: SocketAddr,
    ca: String,
    body: Bytes,
    pace: Pace,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let request = h1_request(&body);
    let mut pause = pace.pause;
    let mut conn: Option<(Tls, Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some((tls, idle_since)) = &mut conn {
            if pace.client_idle.is_some_and(|d| idle_since.elapsed() >= d) {
                conn = None;
            } else if closed_by_server(tls) {
                conn = None;
                pause = pace.next(pause, false);
            } else {
                pause = pace.next(pause, true);
            }
        }
        let mut tls = match conn.take() {
            Some((tls, _)) => tls,
            None => match connect_tls(addr, &ca, b"http/1.1").await {
                Some(tls) => {
                    tally.connects.fetch_add(1, Ordering::SeqCst);
                    tls
                }
                None => {
                    tally.not_written.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let written = async {
            tls.write_all(&request).await?;
            tls.flush().await
        };
        match tokio::time::timeout(ANSWER_WITHIN, written).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tally.broke(format!("HTTP/1.1 write: {e}"));
                continue;
            }
            Err(_) => {
                tally.broke("HTTP/1.1 write: timed out".into());
                continue;
            }
        }
        let answer = tokio::time::timeout(ANSWER_WITHIN, read_response(&mut tls))
            .await
            .unwrap_or_else(|_| Err("no answer in time".into()));
        match answer {
            Ok((status, close)) => {
                assert!(status.starts_with("http/1.1 200"), "{status}");
                tally.answered.fetch_add(1, Ordering::SeqCst);
                if close {
                    tally.asked_to_close.fetch_add(1, Ordering::SeqCst);
                } else {
                    conn = Some((tls, Instant::now()));
                }
            }
            Err(e) => tally.broke(format!("HTTP/1.1 {e}")),
        }
        tokio::time::sleep(pause).await;
    }
}

/// An HTTP/2 client as x/net/http2's: one connection with `streams` requests in flight at a
/// time, a new connection once the server sent GOAWAY; a stream the server did not process
/// (GOAWAY below its id, REFUSED_STREAM) is retried on the new one, as `canRetryError` does.
pub async fn h2_client(
    addr: SocketAddr,
    ca: String,
    body: Bytes,
    pace: Pace,
    streams: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    // Each stream's pace carries over to the next connection.
    let mut pauses = vec![pace.pause; streams];
    while !stop.load(Ordering::SeqCst) {
        let Some(tls) = connect_tls(addr, &ca, b"h2").await else {
            tally.not_written.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let Ok(Ok((send, connection))) =
            tokio::time::timeout(ANSWER_WITHIN, h2::client::handshake(tls)).await
        else {
            tally.not_written.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        tally.connects.fetch_add(1, Ordering::SeqCst);
        let driver = tokio::spawn(connection);
        let mut senders = tokio::task::JoinSet::new();
        for pause in pauses.drain(..) {
            let (send, body, pace, stop, tally) = (
                send.clone(),
                body.clone(),
                pace.clone(),
                stop.clone(),
                tally.clone(),
            );
            senders.spawn(async move { h2_streams(send, body, &pace, pause, &stop, &tally).await });
        }
        drop(send);
        let mut went_away = false;
        while let Some(ended) = senders.join_next().await {
            let (gone, pause) = ended.unwrap();
            went_away |= gone;
            pauses.push(pause);
        }
        if went_away {
            tally.asked_to_close.fetch_add(1, Ordering::SeqCst);
        }
        driver.abort();
    }
}

/// Sends requests on one HTTP/2 connection until it stops taking them (true: the server sent
/// GOAWAY) or the run stops (false); returns that and the pause it came to.
async fn h2_streams(
    mut send: h2::client::SendRequest<Bytes>,
    body: Bytes,
    pace: &Pace,
    mut pause: Duration,
    stop: &AtomicBool,
    tally: &Tally,
) -> (bool, Duration) {
    let mut paused = false;
    while !stop.load(Ordering::SeqCst) {
        // Not yet written: a connection that will take no more streams is left for a new one.
        send = match send.ready().await {
            Ok(send) => send,
            Err(_) if paused => return (true, pace.next(pause, false)),
            Err(_) => return (true, pause),
        };
        if paused {
            pause = pace.next(pause, true);
        }
        let request = http::Request::post("https://localhost/validate?timeout=10s")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = send.send_request(request, false) else {
            return (true, pause);
        };
        // Data not taken is reported through the response, as Go's client does.
        let _ = stream.send_data(body.clone(), true);
        let Ok(response) = tokio::time::timeout(ANSWER_WITHIN, response).await else {
            tally.broke("HTTP/2 stream: no answer in time".into());
            return (true, pause);
        };
        match response {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let read = async {
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    Ok::<_, h2::Error>(())
                };
                match tokio::time::timeout(ANSWER_WITHIN, read).await {
                    Ok(Ok(())) => tally.answered.fetch_add(1, Ordering::SeqCst),
                    Ok(Err(e)) => {
                        tally.broke(format!("HTTP/2 answer's body: {e}"));
                        return (true, pause);
                    }
                    Err(_) => {
                        tally.broke("HTTP/2 answer's body: not in time".into());
                        return (true, pause);
                    }
                };
            }
            Err(e) if not_processed(&e) => {
                tally.refused_streams.fetch_add(1, Ordering::SeqCst);
                return (true, pause);
            }
            Err(e) => {
                tally.broke(format!("HTTP/2 stream: {e}"));
                return (true, pause);
            }
        }
        tokio::time::sleep(pause).await;
        paused = !pause.is_zero();
    }
    (false, pause)
}

/// A stream the server says it did not process: a graceful GOAWAY whose last stream id is
/// below it, or REFUSED_STREAM (x/net/http2's `canRetryError`).
fn not_processed(e: &h2::Error) -> bool {
    (e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR))
        || e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Runs `h1` HTTP/1.1 and `h2` HTTP/2 clients (two streams each) until `stop` is set.
pub fn spawn_clients(
    addr: SocketAddr,
    ca: &str,
    body: &Bytes,
    (h1, h2): (usize, usize),
    pace: &Pace,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> tokio::task::JoinSet<()> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..h1 {
        clients.spawn(h1_client(
            addr,
            ca.to_owned(),
            body.clone(),
            pace.clone(),
            stop.clone(),
            tally.clone(),
        ));
    }
    for _ in 0..h2 {
        clients.spawn(h2_client(
            addr,
            ca.to_owned(),
            body.clone(),
            pace.clone(),
            2,
            stop.clone(),
            tally.clone(),
        ));
    }
    clients
}
