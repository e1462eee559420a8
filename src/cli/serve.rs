//! `stsguard serve`: start-up checks, then the webhook until SIGTERM or SIGINT.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Args;

use super::{
    ModeArg, RuleArg, load_policy,
    serve_lifecycle::{self, LifecycleArgs},
    with_overrides,
};
use crate::{
    cluster::{self, Cluster, ClusterError},
    leader::{self, LeaderError, Leadership, LeaseSettings},
    lookup::{Lookup, NoLookup},
    metrics::Metrics,
    policy::{Lookups, Policy, PolicyError, PolicySlot},
    policy_reload::{Load, PolicyWatcher},
    reports::{ReportArgs, Reporter},
    review::Reviewer,
    server::{Limits, Readiness, Server, Signal, Webhook, shutdown_signal},
    time,
    tls::{self, CertResolver, CertWatcher, TlsError, Watched},
};

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "STSGUARD_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "STSGUARD_PROBE_ADDR", default_value = "0.0.0.0:8080")]
    pub probe_addr: SocketAddr,
    /// Serving certificate (PEM). Without --tls-cert and --tls-key a development CA and
    /// certificate are created in --dev-cert-dir.
    #[arg(long, env = "STSGUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "STSGUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where development certificates are kept (ca.crt, tls.crt, tls.key).
    #[arg(long, env = "STSGUARD_DEV_CERT_DIR", default_value = "certs/dev")]
    pub dev_cert_dir: PathBuf,
    /// Policy file; the built-in policy (policies/default.yaml) when not given.
    #[arg(long, env = "STSGUARD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Overrides the policy's mode.
    #[arg(long, env = "STSGUARD_MODE", value_enum)]
    pub mode: Option<ModeArg>,
    /// Overrides a rule's action, e.g. `--rule sts-pod-anti-affinity=warn`, or one case of it,
    /// e.g. `--rule sts-volume-claim-templates.missing=deny` (repeatable).
    #[arg(long = "rule", value_name = "ID[.CASE]=ACTION")]
    pub rules: Vec<RuleArg>,
    /// Kubeconfig for cluster lookups; without it, KUBECONFIG or in-cluster configuration
    /// (never an unnamed ~/.kube/config), and no lookups when there is none.
    #[arg(long, env = "STSGUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only these namespaces (comma-separated or repeated); all namespaces when not given.
    #[arg(long, env = "STSGUARD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Run without cluster lookups (as policy `lookups: off` does); cross-object rules are skipped.
    #[arg(long, env = "STSGUARD_NO_CLUSTER")]
    pub no_cluster: bool,
    /// Deadline of the live API call that confirms an object the cache says is missing.
    #[arg(long, env = "STSGUARD_LOOKUP_TIMEOUT", default_value = "1s", value_parser = time::parse_duration)]
    pub lookup_timeout: Duration,
    /// Accept only clients presenting a certificate signed by this CA (PEM): the API server,
    /// configured through its admission configuration.
    #[arg(long, env = "STSGUARD_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Reload --policy when the file changes; a bad file is rejected and the old policy kept.
    #[arg(long, env = "STSGUARD_WATCH_POLICY", requires = "policy")]
    pub watch_policy: bool,
    /// How often --watch-policy reads the policy file.
    #[arg(long, env = "STSGUARD_POLICY_RELOAD_INTERVAL", default_value = "5s", value_parser = time::parse_duration)]
    pub policy_reload_interval: Duration,
    /// How often the certificate files are checked for rotation (e.g. 10s).
    #[arg(long, env = "STSGUARD_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = time::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Largest accepted request body, in bytes (default: two objects of the API server's default
    /// request body limit, 3 MiB, plus 1 MiB: an UPDATE review carries object and oldObject).
    #[arg(long, env = "STSGUARD_MAX_BODY_BYTES", default_value_t = crate::server::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Time allowed to read a request and answer it (e.g. 10s).
    #[arg(long, env = "STSGUARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = time::parse_duration)]
    pub request_timeout: Duration,
    /// Time allowed for the TLS handshake and for request headers to arrive (from their first
    /// byte).
    #[arg(long, env = "STSGUARD_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = time::parse_duration)]
    pub header_read_timeout: Duration,
    /// Close a connection idle this long (before its first request or between requests); keep
    /// it above the API server's 90s, so that the API server closes idle connections first.
    #[arg(long, env = "STSGUARD_IDLE_TIMEOUT", default_value = "2m", value_parser = time::parse_duration)]
    pub idle_timeout: Duration,
    /// Time in-flight reviews get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "STSGUARD_SHUTDOWN_GRACE", default_value = "20s", value_parser = time::parse_duration)]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep accepting and answering this long with /readyz at 503, while the pod
    /// leaves the Service's endpoints and the API server stops calling it; then stop accepting.
    #[arg(long, env = "STSGUARD_DRAIN_DELAY", default_value = "5s", value_parser = time::parse_duration)]
    pub drain_delay: Duration,
    /// Close a connection gracefully (HTTP/2 GOAWAY, HTTP/1 Connection: close) after this long,
    /// give or take a tenth, so load spreads over replicas (`0s`: never).
    #[arg(long, env = "STSGUARD_MAX_CONNECTION_AGE", default_value = "2m", value_parser = time::parse_duration)]
    pub max_connection_age: Duration,
    /// The Lease through which the replicas choose the one that writes (reports, the shared
    /// certificate, registration, the backstop); taken part in only when one of those duties is
    /// asked for.
    #[arg(long, env = "STSGUARD_LEADER_LEASE", default_value = "stsguard")]
    pub leader_lease: String,
    /// Namespace of --leader-lease (default: the pod's own namespace, or the kubeconfig's).
    #[arg(long, env = "STSGUARD_LEADER_LEASE_NAMESPACE")]
    pub leader_lease_namespace: Option<String>,
    /// How long the leader holds the lease without renewing it: a replica that dies is replaced
    /// this long after its last renewal at most (plus up to a second).
    #[arg(long, env = "STSGUARD_LEADER_LEASE_DURATION", default_value = "15s", value_parser = time::parse_duration)]
    pub leader_lease_duration: Duration,
    #[command(flatten)]
    pub reports: ReportArgs,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// A prepared server, and the cluster it may lead in.
pub struct Prepared {
    pub server: Server,
    /// The API client and this replica's lease, when there is a cluster.
    pub cluster: Option<(kube::Client, LeaseSettings)>,
    pub metrics: Arc<Metrics>,
    /// The in-cluster reports (`--reports`), to start with leadership.
    pub reports: Option<Reporter>,
    /// The serving certificate, and what `/readyz` says (for self-managed certificates and
    /// registration after ready).
    pub resolver: Arc<CertResolver>,
    pub readiness: Readiness,
    /// The policy in force (reloaded with --watch-policy).
    pub policy: Arc<PolicySlot>,
}

/// Why `stsguard serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("--max-body-bytes must be above 0")]
    ZeroBodyLimit,
    #[error(
        "--cert-secret, --register-webhooks and --backstop need cluster access (a kubeconfig or \
         in-cluster configuration, and not --no-cluster or policy lookups: off)"
    )]
    NeedsCluster,
}

/// Everything `serve` needs, checked, before any port is bound.
pub async fn prepare_serve(args: &ServeArgs) -> Result<Prepared, StartError> {
    if args.max_body_bytes == 0 {
        return Err(StartError::ZeroBodyLimit);
    }
    let policy = load_policy(args.policy.as_deref(), args.mode, &args.rules)?;
    tracing::info!(
        policy = %args.policy.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
        mode = %policy.mode,
        "policy loaded"
    );
    let metrics = Arc::new(Metrics::new());
    // Self-managed certificates start from a placeholder until the Secret is read; files are
    // loaded now and then followed.
    let (certified, files) = match args.lifecycle.placeholder()? {
        Some(placeholder) => (placeholder, None),
        None => {
            let (cert, key) = cert_files(args)?;
            (
                tls::load_certified_key(&cert, &key)?,
                Some(Watched { cert, key }),
            )
        }
    };
    let resolver = Arc::new(CertResolver::new(certified));
    let client_ca = args
        .client_ca
        .as_deref()
        .map(tls::load_client_ca)
        .transpose()?;
    let tls_config = tls::server_config(resolver.clone(), client_ca)?;
    if let Some(files) = files {
        let watcher = CertWatcher::new(files, resolver.clone(), metrics.clone());
        if !args.cert_reload_interval.is_zero() {
            tokio::spawn(watcher.run(args.cert_reload_interval));
        }
    }
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
        drain_delay: args.drain_delay,
        max_connection_age: args.max_connection_age,
    };
    let (lookup, readiness, cluster, reports) = lookups(args, policy.lookups, &metrics).await?;
    if cluster.is_none() && args.lifecycle.needs_cluster() {
        return Err(StartError::NeedsCluster);
    }
    let readiness = readiness.with_certificate(resolver.clone());
    let slot = Arc::new(PolicySlot::new(policy));
    if let (true, Some(path)) = (args.watch_policy, args.policy.clone()) {
        let (mode, rules, origin) = (args.mode, args.rules.clone(), path.display().to_string());
        let load: Load =
            Box::new(move |text| with_overrides(Policy::from_yaml(text, &origin)?, mode, &rules));
        let watcher = PolicyWatcher::new(path, load, slot.clone(), metrics.clone());
        tokio::spawn(watcher.run(args.policy_reload_interval));
    }
    let reports = reports.map(|r| r.with_policy(slot.clone()));
    let reviewer = Reviewer::with_slot(slot.clone(), lookup);
    let server = Server::bind(
        args.addr,
        args.probe_addr,
        Arc::new(tls_config),
        Webhook {
            reviewer,
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        },
        limits,
    )
    .await?;
    Ok(Prepared {
        server,
        cluster,
        metrics,
        reports,
        resolver,
        readiness,
        policy: slot,
    })
}

/// The serving certificate files: --tls-cert/--tls-key, or development ones.
fn cert_files(args: &ServeArgs) -> Result<(PathBuf, PathBuf), StartError> {
    Ok(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (files, fresh) = tls::ensure_dev_certs(&args.dev_cert_dir)?;
            tracing::info!(
                ca = %files.ca.display(),
                generated = fresh,
                "serving with a development certificate for localhost, 127.0.0.1 and ::1; \
                 trust the CA file to call the webhook (curl --cacert {})",
                files.ca.display()
            );
            (files.cert, files.key)
        }
    })
}

/// `stsguard serve`: exit code 0 after a clean shutdown, 1 when it cannot start.
pub(super) fn run(args: ServeArgs) -> ExitCode {
    let runtime = match super::runtime(true) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stsguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stsguard could not start");
            eprintln!("stsguard: {e}");
            ExitCode::FAILURE
        }
    }
}

type ClusterLookups = (
    Arc<dyn Lookup>,
    Readiness,
    Option<(kube::Client, LeaseSettings)>,
    Option<Reporter>,
);

/// The source of cluster facts, the readiness that waits for it, and the cluster's client.
async fn lookups(
    args: &ServeArgs,
    policy: Lookups,
    metrics: &Metrics,
) -> Result<ClusterLookups, StartError> {
    if args.no_cluster || policy == Lookups::Off {
        tracing::info!(
            "cluster lookups off (--no-cluster or policy lookups: off): cross-object rules are \
             skipped and answers say so"
        );
        if args.reports.enabled {
            tracing::warn!("--reports needs cluster lookups; no in-cluster reports");
        }
        return Ok((Arc::new(NoLookup), Readiness::default(), None, None));
    }
    match cluster::explicit_config(args.kubeconfig.as_deref()).await? {
        Ok(config) => {
            let mut lease = LeaseSettings {
                namespace: args
                    .leader_lease_namespace
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone()),
                name: args.leader_lease.clone(),
                identity: leader::default_identity(),
                duration: args.leader_lease_duration,
                health: None,
            };
            let cluster = Cluster::start(config, &args.namespaces, args.lookup_timeout)?
                .with_live_reads(metrics.live_reads());
            lease.health = Some(cluster.health());
            let readiness = Readiness::with_cluster(cluster.health());
            metrics.watch_cluster(cluster.health());
            tracing::info!(
                namespaces = %if args.namespaces.is_empty() { "all".to_owned() } else { args.namespaces.join(",") },
                "cluster lookups on: watching Services and StatefulSets; ready after the first sync"
            );
            let client = cluster.client();
            let cluster = Arc::new(cluster);
            let reports = Reporter::attach(&args.reports, &args.namespaces, &cluster, metrics);
            Ok((cluster, readiness, Some((client, lease)), reports))
        }
        Err(why) => {
            tracing::info!(
                reason = %why,
                "no cluster asked for: running without cluster lookups; cross-object rules are \
                 skipped and answers say so"
            );
            if args.reports.enabled {
                tracing::warn!("--reports needs a cluster; no in-cluster reports");
            }
            Ok((Arc::new(NoLookup), Readiness::default(), None, None))
        }
    }
}

/// Runs the webhook until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), StartError> {
    let Prepared {
        server,
        cluster,
        metrics,
        reports,
        resolver,
        readiness,
        policy,
    } = prepare_serve(&args).await?;
    // Leadership is for the duties; a replica asked for none never takes a Lease, so a
    // process started by hand cannot lead an installation by accident.
    let duties = args.lifecycle.needs_cluster() || args.reports.enabled;
    if cluster.is_some() && !duties {
        tracing::info!(
            "no leader duty asked for (--reports, --cert-secret, --register-webhooks, \
             --backstop): not taking part in leader election"
        );
    }
    let (leadership, lifecycle) = match cluster.filter(|_| duties) {
        Some((client, lease)) => {
            let leadership = Leadership::join(client.clone(), &lease)?;
            let cx = serve_lifecycle::Context {
                client,
                namespace: lease.namespace,
                leading: leadership.subscribe(),
                resolver,
                readiness,
                metrics: metrics.clone(),
                policy,
            };
            (
                leadership,
                Some(serve_lifecycle::start(&args.lifecycle, cx)),
            )
        }
        None => (Leadership::fixed(false), None),
    };
    follow_leadership(&leadership, metrics);
    if let Some(reports) = reports {
        reports.start(leadership.subscribe());
    }
    tracing::info!(
        addr = %server.local_addr()?,
        probe_addr = %server.probe_addr()?,
        "stsguard is serving /validate and /mutate"
    );
    // The drain is for the endpoints to drop the pod; Ctrl-C at a terminal stops at once.
    let drain = args.drain_delay;
    server
        .run_draining(async move {
            let signal = shutdown_signal().await;
            if let Some(lifecycle) = &lifecycle {
                lifecycle.stop();
            }
            match signal {
                Signal::Terminate => drain,
                Signal::Interrupt => Duration::ZERO,
            }
        })
        .await?;
    leadership.resign().await;
    Ok(())
}

/// Keeps `stsguard_leader` current.
fn follow_leadership(leadership: &Leadership, metrics: Arc<Metrics>) {
    let mut leading = leadership.subscribe();
    tokio::spawn(async move {
        loop {
            metrics.leading(*leading.borrow_and_update());
            if leading.changed().await.is_err() {
                break;
            }
        }
    });
}
