//! `stsguard serve`'s part in the webhook's life beyond answering: self-managed certificates
//! (`--cert-secret`), registering its own webhook configurations (`--register-webhooks`) and
//! keeping the backstop applied from the policy in force (`--backstop`), all done by the leader
//! and followed by every replica.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use tokio::sync::watch;

use crate::{
    managed_tls::{self, Timing},
    metrics::Metrics,
    policy::PolicySlot,
    registration::{self, Bundle, Gate},
    server::Readiness,
    time,
    tls::{CertResolver, TlsError},
};

#[derive(Clone, Debug, Args)]
pub struct LifecycleArgs {
    /// Self-managed certificates: stsguard creates a CA and a serving certificate in this Secret
    /// (in the --leader-lease-namespace), renews both, and serves what it holds; replaces
    /// --tls-cert/--tls-key. Needs cluster access and --cert-dns-name.
    #[arg(long, env = "STSGUARD_CERT_SECRET", conflicts_with_all = ["tls_cert", "tls_key"], requires = "cert_dns_names")]
    pub cert_secret: Option<String>,
    /// DNS names of the self-managed serving certificate: the webhook Service's names
    /// (comma-separated or repeated).
    #[arg(
        long = "cert-dns-name",
        env = "STSGUARD_CERT_DNS_NAMES",
        value_delimiter = ','
    )]
    pub cert_dns_names: Vec<String>,
    /// Lifetime of a self-managed CA; the next one joins the bundle at two thirds of it.
    #[arg(long, env = "STSGUARD_CA_VALIDITY", default_value = "8760h", value_parser = time::parse_duration)]
    pub ca_validity: Duration,
    /// Lifetime of a self-managed serving certificate; it is renewed at two thirds of it.
    #[arg(long, env = "STSGUARD_CERT_VALIDITY", default_value = "2160h", value_parser = time::parse_duration)]
    pub cert_validity: Duration,
    /// How long a new CA is trusted before it signs, and an old one after it stopped: time for
    /// the webhook configurations and every replica to follow.
    #[arg(long, env = "STSGUARD_CA_ROLL_OVERLAP", default_value = "1h", value_parser = time::parse_duration)]
    pub ca_roll_overlap: Duration,
    /// Register the webhook configurations held in this ConfigMap (keys validating.yaml and
    /// mutating.yaml, in the --leader-lease-namespace) once this replica is ready and leads,
    /// with the caBundle filled in; keep them so.
    #[arg(long, env = "STSGUARD_REGISTER_WEBHOOKS")]
    pub register_webhooks: Option<String>,
    /// PEM file whose certificates become the caBundle of the registered configurations
    /// (e.g. cert-manager's ca.crt); without it and without --cert-secret the objects keep
    /// their own.
    #[arg(
        long,
        env = "STSGUARD_CA_BUNDLE_FILE",
        requires = "register_webhooks",
        conflicts_with = "cert_secret"
    )]
    pub ca_bundle_file: Option<PathBuf>,
    /// The ClusterRole that owns the registered configurations and the backstop (an
    /// ownerReference): when it is deleted they are garbage-collected, and while it is missing
    /// nothing is registered or applied.
    #[arg(long, env = "STSGUARD_WEBHOOK_OWNER_CLUSTER_ROLE")]
    pub webhook_owner_cluster_role: Option<String>,
    /// Keep the backstop applied from the policy in force: ValidatingAdmissionPolicies
    /// NAME-deny and NAME-warn and MutatingAdmissionPolicy NAME-mutate (where served), with
    /// their bindings, scoped by the ConfigMap NAME (key backstop.yaml, in the
    /// --leader-lease-namespace); without that ConfigMap they are removed.
    #[arg(long, env = "STSGUARD_BACKSTOP", value_name = "NAME")]
    pub backstop: Option<String>,
    /// The webhook's Service: registration waits until one of its endpoints is ready (the API
    /// server calls the webhook through it), not only this replica.
    #[arg(long, env = "STSGUARD_WEBHOOK_SERVICE", requires = "register_webhooks")]
    pub webhook_service: Option<String>,
    /// How often the leader checks the registered configurations and the backstop against
    /// their ConfigMaps and the policy.
    #[arg(long, env = "STSGUARD_REGISTRATION_RESYNC", default_value = "30s", value_parser = time::parse_duration)]
    pub registration_resync: Duration,
}

impl LifecycleArgs {
    /// Whether any of this needs the cluster.
    pub fn needs_cluster(&self) -> bool {
        self.cert_secret.is_some() || self.register_webhooks.is_some() || self.backstop.is_some()
    }

    fn timing(&self) -> Result<Timing, String> {
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let timing = Timing {
            ca_validity: seconds(self.ca_validity),
            cert_validity: seconds(self.cert_validity),
            overlap: seconds(self.ca_roll_overlap),
        };
        timing.check().map(|()| timing)
    }

    /// The certificate to start with when certificates are self-managed: one that is not
    /// valid yet, until the Secret is read. Checks the lifetimes first.
    pub fn placeholder(&self) -> Result<Option<rustls::sign::CertifiedKey>, TlsError> {
        if self.cert_secret.is_none() {
            return Ok(None);
        }
        self.timing().map_err(TlsError::Date)?;
        managed_tls::placeholder().map(Some)
    }
}

/// What `serve` hands over once it knows its cluster and leadership.
pub struct Context {
    pub client: kube::Client,
    pub namespace: String,
    pub leading: watch::Receiver<bool>,
    pub resolver: Arc<CertResolver>,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    /// The policy in force, which the backstop follows.
    pub policy: Arc<PolicySlot>,
}

/// Running lifecycle work; `stop` ends registration (at SIGTERM: a terminating replica must not
/// register again what an uninstall just removed).
pub struct Lifecycle {
    stopping: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// Starts what the arguments ask for.
pub fn start(args: &LifecycleArgs, cx: Context) -> Lifecycle {
    let (stopping, stopped) = watch::channel(false);
    let bundle = args.cert_secret.as_ref().map(|secret| {
        let settings = managed_tls::Settings {
            namespace: cx.namespace.clone(),
            secret: secret.clone(),
            names: args.cert_dns_names.clone(),
            // Checked by `placeholder` before the server was bound.
            timing: args.timing().unwrap_or(Timing {
                ca_validity: 0,
                cert_validity: 0,
                overlap: 0,
            }),
            interval: Duration::from_secs(10)
                .min(args.ca_roll_overlap / 4)
                .max(Duration::from_millis(250)),
        };
        managed_tls::start(
            cx.client.clone(),
            settings,
            cx.resolver.clone(),
            cx.metrics.clone(),
            cx.leading.clone(),
        )
    });
    if let Some(configmap) = &args.register_webhooks {
        let settings = registration::Settings {
            namespace: cx.namespace.clone(),
            configmap: configmap.clone(),
            owner: args.webhook_owner_cluster_role.clone(),
            service: args.webhook_service.clone(),
            resync: args.registration_resync,
        };
        let source = match (bundle, &args.ca_bundle_file) {
            (Some(rx), _) => Bundle::Managed(rx),
            (None, Some(path)) => Bundle::File(path.clone()),
            (None, None) => Bundle::Given,
        };
        let readiness = cx.readiness.clone();
        let gate = Gate {
            leading: cx.leading.clone(),
            ready: Arc::new(move || readiness.get()),
            stopping: stopped.clone(),
        };
        registration::start(cx.client.clone(), settings, source, gate, cx.policy.clone());
    }
    if let Some(name) = &args.backstop {
        let settings = registration::backstop::Settings {
            name: name.clone(),
            namespace: cx.namespace.clone(),
            owner: args.webhook_owner_cluster_role.clone(),
            resync: args.registration_resync,
        };
        registration::backstop::start(cx.client, settings, cx.policy, cx.leading, stopped);
    }
    Lifecycle { stopping }
}
