//! The listeners: the TLS accept loop, one task per connection (served in `connection`), and
//! shutdown: the drain (still accepting and answering, HTTP/1.1 answers saying `Connection:
//! close`), then the end of the listener and of what connections are left, each closed
//! gracefully, and after the grace period the end of the rest.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use super::connection::{self, Phases, sleep_until_or_forever};
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

        // Connections watch these: the drain asks each for a goodbye at its next chance, its end
        // closes what is left. The set lets shutdown wait for them.
        let (draining, _) = watch::channel(false);
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
                    draining.send_replace(true);
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
            let phases = Phases {
                draining: draining.subscribe(),
                closing: closing.subscribe(),
            };
            connections.spawn(connection::serve(
                tcp,
                peer,
                acceptor.clone(),
                router.clone(),
                limits.clone(),
                phases,
            ));
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
