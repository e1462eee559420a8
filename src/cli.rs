//! The command line: `stsguard serve` and its start-up sequence.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    duration,
    lookup::NoLookup,
    policy::{Mode, Policy, PolicyError},
    review::Reviewer,
    server::{Limits, Server, shutdown_signal},
    telemetry::LogFormat,
    tls::{self, CertResolver, TlsError},
};

#[derive(Debug, Parser)]
#[command(
    name = "stsguard",
    version,
    about = "Kubernetes admission webhook for StatefulSet best practices"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "STSGUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the validating and mutating admission webhook over HTTPS.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "STSGUARD_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz and /readyz.
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
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "STSGUARD_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time allowed to read a request and answer it (e.g. 10s).
    #[arg(long, env = "STSGUARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub request_timeout: Duration,
    /// Time allowed for the TLS handshake and for request headers to arrive.
    #[arg(long, env = "STSGUARD_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub header_read_timeout: Duration,
    /// Time in-flight reviews get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "STSGUARD_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration::parse)]
    pub shutdown_grace: Duration,
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
    #[error("--max-body-bytes must be above 0")]
    ZeroBodyLimit,
}

/// Loads the policy named by `--policy` (or the built-in one) and applies `--mode`.
pub fn load_policy(
    path: Option<&std::path::Path>,
    mode: Option<ModeArg>,
) -> Result<Policy, PolicyError> {
    let policy = match path {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    Ok(match mode {
        Some(mode) => policy.with_mode(mode.into()),
        None => policy,
    })
}

/// Everything `serve` needs, checked, before any port is bound.
pub async fn prepare_serve(args: &ServeArgs) -> Result<Server, StartError> {
    if args.max_body_bytes == 0 {
        return Err(StartError::ZeroBodyLimit);
    }
    let policy = load_policy(args.policy.as_deref(), args.mode)?;
    tracing::info!(
        policy = %args.policy.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
        mode = %policy.mode,
        "policy loaded"
    );
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
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
    };
    let certified = tls::load_certified_key(&cert, &key)?;
    let tls_config = tls::server_config(Arc::new(CertResolver::new(certified)))?;
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        header_read_timeout: args.header_read_timeout,
        shutdown_grace: args.shutdown_grace,
    };
    // Cluster lookups arrive with the cluster-aware checks; until then rules that need them
    // are skipped.
    let reviewer = Reviewer::new(Arc::new(policy), Arc::new(NoLookup));
    let server = Server::bind(
        args.addr,
        args.probe_addr,
        Arc::new(tls_config),
        reviewer,
        limits,
    )
    .await?;
    Ok(server)
}

/// `stsguard serve`: runs until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), StartError> {
    let server = prepare_serve(&args).await?;
    tracing::info!(
        addr = %server.local_addr()?,
        probe_addr = %server.probe_addr()?,
        "stsguard is serving /validate and /mutate"
    );
    server.run(shutdown_signal()).await?;
    Ok(())
}
