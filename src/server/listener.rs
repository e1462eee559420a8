//! The listeners: TLS accept loop, one task per connection (HTTP/1.1 or HTTP/2, as ALPN chose)
//! with its deadlines, and graceful shutdown.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::{Limits, Readiness, Webhook, app, probe_app};

/// Both listeners, bound and ready to run.
pub struct Server {
    tls_listener: TcpListener,
    probe_listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    probes: Router,
    readiness: Readiness,
    limits: Limits,
}

impl Server {
    /// Binds both listeners. Certificates are loaded before this, so a bad file never gets as
    /// far as a bound port.
    pub async fn bind(
        addr: SocketAddr,
        probe_addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        webhook: Webhook,
        limits: Limits,
    ) -> io::Result<Server> {
        let Webhook {
            reviewer,
            readiness,
            metrics,
        } = webhook;
        let router = app(reviewer, metrics.clone(), &limits);
        let probes = probe_app(readiness.clone(), metrics);
        Server::with_routers(addr, probe_addr, tls, router, probes, readiness, limits).await
    }

    /// Binds the same listeners for other routes.
    pub async fn with_routers(
        addr: SocketAddr,
        probe_addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        probes: Router,
        readiness: Readiness,
        limits: Limits,
    ) -> io::Result<Server> {
        let tls_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let probe_listener = TcpListener::bind(probe_addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {probe_addr}: {e}")))?;
        Ok(Server {
            tls_listener,
            probe_listener,
            acceptor: TlsAcceptor::from(tls),
            router,
            probes,
            readiness,
            limits,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tls_listener.local_addr()
    }

    pub fn probe_addr(&self) -> io::Result<SocketAddr> {
        self.probe_listener.local_addr()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight reviews finish
    /// within the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let drain = self.limits.drain_delay;
        self.run_draining(async move {
            shutdown.await;
            drain
        })
        .await
    }

    /// [`Server::run`], with the drain delay chosen when the signal comes: `shutdown` completes
    /// with how long to keep answering before the listener closes.
    pub async fn run_draining(self, shutdown: impl Future<Output = Duration>) -> io::Result<()> {
        let Server {
            tls_listener,
            probe_listener,
            acceptor,
            router,
            probes,
            readiness,
            limits,
        } = self;

        // The probe listener outlives the webhook listener, so that /readyz can report
        // "not ready" while in-flight reviews drain.
        let (probe_stop, mut probe_stopped) = watch::channel(false);
        let probe_task = tokio::spawn(async move {
            let stop = async move {
                let _ = probe_stopped.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(probe_listener, probes)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "probe listener failed");
            }
        });

        // Connections watch this to begin a graceful close; the set lets shutdown wait for them.
        let (closing, _) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        readiness.set(true);
        tokio::pin!(shutdown);
        // After the shutdown signal: until then the pod is still in the Service's endpoints for
        // a moment, and the API server keeps calling it.
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = tls_listener.accept() => accepted,
                drain = &mut shutdown, if drain_until.is_none() => {
                    readiness.set(false);
                    if !drain.is_zero() {
                        tracing::info!(
                            delay = ?drain,
                            "draining: /readyz reports not ready; still answering until the endpoints drop this pod"
                        );
                    }
                    drain_until = Some(tokio::time::Instant::now() + drain);
                    continue;
                }
                () = sleep_until_or_forever(drain_until) => break,
            };
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Answers are small and written in a few pieces (TLS records, HTTP/2 frames): with
            // Nagle's algorithm on, the last piece can wait for the client's delayed ACK, some
            // 40 ms, on the API server's write path.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let router = router.clone();
            let closing = closing.subscribe();
            let limits = limits.clone();
            connections.spawn(async move {
                let stream =
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp))
                        .await
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
                serve_connection(stream, router, &limits, closing, peer).await;
            });
        }

        drop(tls_listener);
        readiness.set(false);
        tracing::info!(grace = ?limits.shutdown_grace, "shutting down: finishing in-flight reviews");
        closing.send_replace(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        tokio::select! {
            () = drained => tracing::info!("all connections closed"),
            () = tokio::time::sleep(limits.shutdown_grace) => {
                tracing::warn!("grace period over; closing the remaining connections");
                connections.abort_all();
            }
        }
        let _ = probe_stop.send(true);
        let _ = probe_task.await;
        Ok(())
    }
}

/// How long a connection may sit between requests before it is closed. The API server reuses
/// idle connections, and reconnects when one is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests an HTTP/2 connection has in flight and when it last had one, for its watchdog.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request ended.
    last_ended: AtomicU64,
    served: AtomicBool,
    epoch: Instant,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ended.store(now, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection should be closed if nothing happens before then: `None` while a
    /// request is in flight. Before its first request a connection gets `header_read_timeout`
    /// from accept (a client that connects and sends nothing, or trickles its first request,
    /// is cut off); after that, `IDLE_TIMEOUT` from the end of its last request.
    fn deadline(&self, header_read_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        if !self.served.load(Ordering::SeqCst) {
            return Some(self.epoch + header_read_timeout);
        }
        let ended = Duration::from_millis(self.last_ended.load(Ordering::SeqCst));
        Some(self.epoch + ended + IDLE_TIMEOUT)
    }
}

/// Serves one TLS connection until the client closes it, it idles past its deadline, or
/// shutdown begins; a graceful close that does not finish in time is cut.
///
/// The protocol is the one ALPN chose, so the connection is handed straight to hyper's HTTP/2
/// or HTTP/1.1 server rather than to one that sniffs the first bytes (and reads every later
/// byte through a rewind buffer). A TLS client without ALPN speaks HTTP/1.1: HTTP/2 over TLS is
/// only ever negotiated by ALPN (RFC 9113, section 3.2).
async fn serve_connection(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    router: Router,
    limits: &Limits,
    closing: watch::Receiver<bool>,
    peer: SocketAddr,
) {
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let service = TowerToHyperService::new(router);
    if http2 {
        // hyper's HTTP/2 server has no timeout for a connection that sends no request (or
        // trickles one), so the watchdog keeps one from what it sees of the requests.
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_ended: AtomicU64::new(0),
            served: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let counted = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request| {
                let in_flight = activity.begin();
                let response = hyper::service::Service::call(&service, request);
                async move {
                    let response = response.await;
                    drop(in_flight);
                    response
                }
            })
        };
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let conn = builder.serve_connection(io, counted);
        watch_over(conn, Some(&activity), limits, closing, peer).await;
    } else {
        // hyper's header read timeout covers what the watchdog would: it runs from the moment
        // the connection waits for a request's headers, so a connection silent after the
        // handshake, one trickling its headers and one idle between requests are all closed.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let conn = builder.serve_connection(io, service);
        watch_over(conn, None, limits, closing, peer).await;
    }
}

/// Drives `conn` to its end: closes it gracefully when shutdown begins, when it reaches
/// `--max-connection-age`, or (with `activity`) when it idles past its deadline, and drops it
/// when a graceful close does not finish in time.
async fn watch_over<C>(
    conn: C,
    activity: Option<&Activity>,
    limits: &Limits,
    mut closing: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut cut_at: Option<tokio::time::Instant> = None;
    let mut aged_at = (!limits.max_connection_age.is_zero())
        .then(|| tokio::time::Instant::now() + jittered(limits.max_connection_age, peer));
    loop {
        // While a request is in flight there is no deadline; look again a little later.
        let idle_at = activity.map(|activity| {
            activity
                .deadline(limits.header_read_timeout)
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + limits.header_read_timeout)
        });
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|closing| *closing), if cut_at.is_none() => {
                conn.as_mut().graceful_shutdown();
                cut_at = Some(tokio::time::Instant::now() + limits.shutdown_grace);
            }
            () = sleep_until_or_forever(aged_at), if cut_at.is_none() => {
                tracing::debug!(%peer, "connection reached its maximum age; closing it gracefully");
                conn.as_mut().graceful_shutdown();
                aged_at = None;
                cut_at = Some(tokio::time::Instant::now() + limits.shutdown_grace);
            }
            () = sleep_until_or_forever(idle_at), if cut_at.is_none() => {
                // Re-check: a request may have started while the timer ran.
                let idle = activity.and_then(|a| a.deadline(limits.header_read_timeout));
                if idle.is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    cut_at = Some(tokio::time::Instant::now() + limits.header_read_timeout);
                }
            }
            () = sleep_until_or_forever(cut_at) => {
                tracing::debug!(%peer, "connection did not close in time; dropping it");
                return;
            }
        }
    }
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

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Which signal asked the server to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the kubelet (or an orchestrator) stopping the pod.
    Terminate,
    /// SIGINT: Ctrl-C at a terminal.
    Interrupt,
}

/// Completes on SIGTERM or SIGINT, saying which.
pub async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {
            tracing::info!("SIGINT received");
            Signal::Interrupt
        }
        () = term => {
            tracing::info!("SIGTERM received");
            Signal::Terminate
        }
    }
}
