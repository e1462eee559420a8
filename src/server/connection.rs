//! One webhook connection from accept to close: TLS, HTTP/1.1 or HTTP/2 as ALPN chose, its
//! deadlines, and how it ends.
//!
//! Every end is one the API server's client cannot mistake for a lost review. That client is
//! Go's net/http, over HTTP/1.1 only (k8s.io/apiserver `pkg/util/webhook/client.go` sets
//! `NextProtos = ["http/1.1"]`, issue 75791), and it retries a POST only when not one byte of
//! it was written on a reused connection (net/http `transport.go`, `shouldRetryRequest`:
//! `nothingWrittenError`; `errServerClosedIdle` "may be seen by a user if the server shuts down
//! an idle connection and sends its FIN in flight with already-written POST body bytes",
//! golang/go#19943), and never on a connection's first request (`!pc.isReused()`). So:
//! - HTTP/1.1 ends on an answer that says `Connection: close`: the client reads it before it
//!   writes again. An idle connection is closed by the server only when it must: past
//!   `--idle-timeout` (longer than the client's own 90s `IdleConnTimeout`, from client-go's
//!   `SetOldTransportDefaults`, so the client closes first), and at the end of the drain, when
//!   the endpoints no longer route here. A connection that has not had its first request yet is
//!   given it before it is closed at shutdown.
//! - HTTP/2 ends with GOAWAY: hyper sends one with the highest stream id and a PING, then the
//!   real last stream id, so a stream already on its way is answered and a later one refused;
//!   x/net/http2 retries a refused stream (`canRetryError`: `errClientConnGotGoAway`,
//!   `REFUSED_STREAM`).
//! - Once the protocol has said goodbye, the socket lingers: its write side is shut and what
//!   the client still sends is read and dropped until it closes, because closing a socket with
//!   unread data makes the kernel answer with a reset that can destroy the goodbye itself.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use http::{HeaderValue, header};
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Notify, watch},
};
use tokio_rustls::TlsAcceptor;

use super::Limits;

/// How long a socket may linger after its goodbye for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// What the listener tells its connections: the drain began (HTTP/1.1 answers say
/// `Connection: close` from now on), and it is over (close what is left, gracefully).
#[derive(Clone)]
pub(super) struct Phases {
    pub draining: watch::Receiver<bool>,
    pub closing: watch::Receiver<bool>,
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
    phases: Phases,
) {
    let Some((tcp, kept)) = keep_a_handle(tcp, peer) else {
        return;
    };
    let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if serve_connection(stream, router, &limits, phases, peer).await == Ended::Gracefully
        && let Some(kept) = kept
    {
        linger(kept).await;
    }
}

/// A second handle on the socket, so that it outlives hyper's: the socket is closed only when
/// both are dropped, which lets [`linger`] run after hyper is done with it. (None: the socket
/// could not be taken out of the runtime, which only a failing epoll does; it is dropped.)
fn keep_a_handle(
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, Option<std::net::TcpStream>)> {
    let std = tcp
        .into_std()
        .inspect_err(|e| tracing::debug!(%peer, error = %e, "cannot take over the socket"))
        .ok()?;
    let kept = std.try_clone().ok();
    let tcp = TcpStream::from_std(std)
        .inspect_err(|e| tracing::debug!(%peer, error = %e, "cannot hand back the socket"))
        .ok()?;
    Some((tcp, kept))
}

/// Shuts the write side (hyper has normally done so already, after TLS close_notify) and reads
/// until the client closes, for at most [`LINGER`].
async fn linger(kept: std::net::TcpStream) {
    let _ = kept.shutdown(std::net::Shutdown::Write);
    let Ok(mut tcp) = TcpStream::from_std(kept) else {
        return;
    };
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The protocol said goodbye (or the client left): the socket may linger.
    Gracefully,
    /// Dropped: a client too slow with its headers, or a goodbye that took longer than its
    /// grace.
    Cut,
}

/// Requests a connection has in flight, when it last had one, and how it is to end.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds since `epoch` when the last request ended.
    last_ended: AtomicU64,
    /// HTTP/1.1: milliseconds since `epoch` of the first byte of a request whose headers are
    /// not complete yet; `NONE` when there is none.
    reading_since: AtomicU64,
    /// HTTP/1.1: answer with `Connection: close`, which ends the connection after the answer.
    close_after: AtomicBool,
    /// A request began.
    started: Notify,
}

const NONE: u64 = u64::MAX;

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.last_ended.store(activity.now(), Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection's deadline came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Idle past its limit, or never used: closed gracefully.
    Idle,
    /// HTTP/1.1 headers begun and not finished in `--header-read-timeout`: cut.
    SlowHeaders,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_ended: AtomicU64::new(0),
            reading_since: AtomicU64::new(NONE),
            close_after: AtomicBool::new(false),
            started: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::SeqCst);
        self.reading_since.store(NONE, Ordering::SeqCst);
        self.started.notify_one();
        InFlight(self.clone())
    }

    /// Bytes arrived: with no request in flight, the start of the next one's headers.
    fn read_some(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let now = self.now();
            let _ =
                self.reading_since
                    .compare_exchange(NONE, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// When the connection should end if nothing happens before then, and why: `None` while a
    /// request is in flight. Headers get `--header-read-timeout` from their first byte
    /// (HTTP/1.1; an HTTP/2 client sends its first request with its preface, so there the
    /// limit runs from accept); an idle connection `--idle-timeout`.
    fn deadline(&self, limits: &Limits, http2: bool) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let reading = self.reading_since.load(Ordering::SeqCst);
        if reading != NONE {
            return Some((
                self.at(reading) + limits.header_read_timeout,
                Expiry::SlowHeaders,
            ));
        }
        if !self.served.load(Ordering::SeqCst) {
            let limit = if http2 {
                limits.header_read_timeout
            } else {
                limits.idle_timeout
            };
            return Some((self.epoch + limit, Expiry::Idle));
        }
        let ended = self.at(self.last_ended.load(Ordering::SeqCst));
        Some((ended + limits.idle_timeout, Expiry::Idle))
    }
}

/// The TLS stream of an HTTP/1.1 connection, telling its [`Activity`] when request bytes come.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one TLS connection with the protocol ALPN chose: hyper's HTTP/2 or HTTP/1.1 server
/// directly, rather than one that sniffs the first bytes (and reads every later byte through a
/// rewind buffer). A TLS client without ALPN speaks HTTP/1.1: HTTP/2 over TLS is only ever
/// negotiated by ALPN (RFC 9113, section 3.2).
async fn serve_connection(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    router: Router,
    limits: &Limits,
    phases: Phases,
    peer: SocketAddr,
) -> Ended {
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Activity::new();
    let service = TowerToHyperService::new(router);
    let counted = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let in_flight = activity.begin();
            let response = hyper::service::Service::call(&service, request);
            async move {
                let mut response = response.await?;
                // An HTTP/2 answer has no Connection header; its goodbye is GOAWAY.
                if !http2 && in_flight.0.close_after.load(Ordering::SeqCst) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    if http2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let conn = builder.serve_connection(TokioIo::new(stream), counted);
        watch_over(conn, &activity, http2, limits, phases, peer).await
    } else {
        // No hyper header read timeout: it also runs while a kept-alive connection waits for its
        // next request, and would close it under a client about to reuse it.
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, counted);
        watch_over(conn, &activity, http2, limits, phases, peer).await
    }
}

/// Drives `conn` to its end. The drain's start asks HTTP/1.1 connections for `Connection:
/// close` on their next answer; `--max-connection-age` asks that too, and HTTP/2 connections
/// for a GOAWAY once they have had their first request; the drain's end closes what is left
/// (an idle HTTP/1.1 connection at once, one not used yet after its first request); the idle
/// and header deadlines end the rest. A goodbye that does not finish within its grace is cut.
async fn watch_over<C>(
    conn: C,
    activity: &Arc<Activity>,
    http2: bool,
    limits: &Limits,
    mut phases: Phases,
    peer: SocketAddr,
) -> Ended
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut cut_at: Option<tokio::time::Instant> = None;
    let mut aged_at = (!limits.max_connection_age.is_zero())
        .then(|| tokio::time::Instant::now() + jittered(limits.max_connection_age, peer));
    // Whether the drain began and ended. Read before the first poll: a connection accepted
    // during the drain must not answer its first request without `Connection: close` (its task
    // may see the drain only after that answer).
    let (mut draining, mut closing) = (*phases.draining.borrow(), *phases.closing.borrow());
    if draining || closing {
        activity.close_after.store(true, Ordering::SeqCst);
    }
    // An HTTP/2 goodbye asked for before the drain's end (maximum age) and not said yet. The
    // drain's start asks none: GOAWAY is safe at any moment, so HTTP/2 connections serve on
    // until the drain's end rather than send their clients back through endpoints that may
    // still point here.
    let mut goodbye = false;
    loop {
        if cut_at.is_none() && (goodbye || closing) && ready_for_goodbye(activity, http2, closing) {
            conn.as_mut().graceful_shutdown();
            cut_at = Some(tokio::time::Instant::now() + limits.shutdown_grace);
        }
        let waiting = cut_at.is_none() && ((http2 && goodbye) || closing);
        // While a request is in flight there is no deadline; look again a little later.
        let idle_at = due(activity, limits, http2, closing).map_or_else(
            || tokio::time::Instant::now() + limits.header_read_timeout,
            |(at, _)| tokio::time::Instant::from_std(at),
        );
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return Ended::Gracefully;
            }
            _ = phases.draining.wait_for(|d| *d), if !draining => {
                draining = true;
                activity.close_after.store(true, Ordering::SeqCst);
            }
            _ = phases.closing.wait_for(|c| *c), if !closing => {
                closing = true;
                activity.close_after.store(true, Ordering::SeqCst);
            }
            () = sleep_until_or_forever(aged_at), if cut_at.is_none() => {
                tracing::debug!(%peer, "connection reached its maximum age; closing it gracefully");
                aged_at = None;
                goodbye = true;
                activity.close_after.store(true, Ordering::SeqCst);
            }
            () = activity.started.notified(), if waiting => {}
            () = tokio::time::sleep_until(idle_at), if cut_at.is_none() => {
                // Re-check: a request may have started while the timer ran.
                match due(activity, limits, http2, closing) {
                    Some((at, Expiry::SlowHeaders)) if at <= Instant::now() => {
                        tracing::debug!(%peer, "request headers too slow; dropping the connection");
                        return Ended::Cut;
                    }
                    Some((at, Expiry::Idle)) if at <= Instant::now() => {
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        cut_at = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                    }
                    _ => {}
                }
            }
            () = sleep_until_or_forever(cut_at) => {
                tracing::debug!(%peer, "connection did not close in time; dropping it");
                return Ended::Cut;
            }
        }
    }
}

/// The connection's deadline; at the drain's end, one not used yet gets only the header
/// deadline from accept.
fn due(
    activity: &Activity,
    limits: &Limits,
    http2: bool,
    closing: bool,
) -> Option<(Instant, Expiry)> {
    let (at, expiry) = activity.deadline(limits, http2)?;
    if closing && expiry == Expiry::Idle && !activity.served.load(Ordering::SeqCst) {
        return Some((at.min(activity.epoch + limits.header_read_timeout), expiry));
    }
    Some((at, expiry))
}

/// Whether a goodbye asked for can be said now. HTTP/1.1 says it on an answer
/// (`close_after`), so until the drain's end it needs no more; at the drain's end an idle
/// connection is closed, one with a request in flight finishes it first (hyper then answers
/// with `Connection: close`), and one whose next (or first) request is arriving waits for it:
/// hyper counts a connection whose request headers are not complete as idle, and would close
/// it under them. HTTP/2 says GOAWAY once the connection has had its first request: before
/// that hyper may still be in its handshake, where a graceful shutdown is a plain close.
fn ready_for_goodbye(activity: &Activity, http2: bool, closing: bool) -> bool {
    let served = activity.served.load(Ordering::SeqCst);
    if http2 {
        return served;
    }
    let in_flight = activity.in_flight.load(Ordering::SeqCst) > 0;
    let arriving = activity.reading_since.load(Ordering::SeqCst) != NONE;
    closing && (in_flight || (served && !arriving))
}

/// `age` give or take a tenth, different from one connection to the next (by its peer port and
/// the clock), so that connections opened together do not all close together.
fn jittered(age: Duration, peer: SocketAddr) -> Duration {
    let clock = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos(),
    );
    let spread = (u64::from(peer.port()).wrapping_mul(2_654_435_761) ^ clock) % 2001;
    // 0..=2000 thousandths of a tenth: from 0.9 to 1.1 times `age`.
    age.mul_f64(0.9 + spread as f64 / 10_000.0)
}

pub(super) async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
