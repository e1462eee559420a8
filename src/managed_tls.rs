//! Self-managed certificates (`--cert-secret`): the CA and the serving certificate live in a
//! Secret that stsguard itself creates and renews, so nothing generated is in the rendered chart
//! and rotation needs no one. Every replica reads the Secret on an interval and serves what it
//! holds (hot swap, no restart); only the leader writes it, each write conditional on the
//! resourceVersion it read (or a create, for the first), so two writers can never both win.
//! What to change and when is decided in `authority` from the certificates' dates alone.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client,
    api::{PostParams, entry::Entry},
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::{
    metrics::Metrics,
    tls::{CertResolver, TlsError, certified_key_from_pem},
};

pub mod authority;

pub use authority::{Material, Timing};

/// Where the certificates live and how they are made.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub secret: String,
    /// The DNS names of the webhook's Service, for the serving certificate.
    pub names: Vec<String>,
    pub timing: Timing,
    /// How often every replica reads the Secret.
    pub interval: Duration,
}

/// What replicas serve before they have read the Secret: a certificate that is not valid yet,
/// so `/readyz` says not ready (and why) and no API server is sent to this replica.
pub fn placeholder() -> Result<CertifiedKey, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["stsguard.invalid".to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        "stsguard: waiting for the self-managed certificate",
    );
    params.not_before = rcgen::date_time_ymd(9999, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let cert = params.self_signed(&key)?;
    certified_key_from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        "placeholder".as_ref(),
        "placeholder".as_ref(),
    )
}

/// Starts following (and, while leading, keeping) the Secret. The receiver carries the CA
/// bundle (PEM) once there is one, for the webhook configurations.
pub fn start(
    client: Client,
    settings: Settings,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
) -> watch::Receiver<Option<String>> {
    let (tell, bundle) = watch::channel(None);
    let api: Api<Secret> = Api::namespaced(client, &settings.namespace);
    tokio::spawn(follow(api, settings, resolver, metrics, leading, tell));
    bundle
}

async fn follow(
    api: Api<Secret>,
    settings: Settings,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    mut leading: watch::Receiver<bool>,
    tell: watch::Sender<Option<String>>,
) {
    let mut serving: Option<authority::Pair> = None;
    loop {
        let lead = *leading.borrow_and_update();
        match look(&api, &settings, lead).await {
            Ok(Some(material)) => {
                if serving.as_ref() != Some(&material.serving) {
                    match load(&material) {
                        Ok(key) => {
                            resolver.replace(key);
                            let v = material.serving.validity;
                            metrics.certificate_loaded(
                                v.not_before,
                                v.not_after,
                                serving.is_some(),
                            );
                            tracing::info!(
                                secret = %format!("{}/{}", settings.namespace, settings.secret),
                                not_after = %jiff::Timestamp::from_second(v.not_after).map_or_else(|_| v.not_after.to_string(), |t| t.to_string()),
                                "serving the self-managed certificate"
                            );
                            serving = Some(material.serving.clone());
                        }
                        Err(e) => {
                            metrics.certificate_reload_failed();
                            tracing::error!(error = %e, "the self-managed certificate does not load; keeping the one serving");
                        }
                    }
                }
                tell.send_if_modified(|current| {
                    let bundle = material.bundle();
                    let changed = current.as_deref() != Some(bundle.as_str());
                    *current = Some(bundle);
                    changed
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                secret = %format!("{}/{}", settings.namespace, settings.secret),
                error = %e,
                "cannot read or write the self-managed certificate; trying again"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.interval) => {}
            changed = leading.changed() => {
                if changed.is_err() {
                    // Leadership is fixed from now on; keep following.
                    tokio::time::sleep(settings.interval).await;
                }
            }
        }
    }
}

fn load(material: &Material) -> Result<CertifiedKey, TlsError> {
    certified_key_from_pem(
        material.serving.cert.as_bytes(),
        material.serving.key.as_bytes(),
        "tls.crt".as_ref(),
        "tls.key".as_ref(),
    )
}

/// Reads the Secret and, when leading, brings it up to date; the material to serve.
async fn look(
    api: &Api<Secret>,
    settings: &Settings,
    leading: bool,
) -> Result<Option<Material>, kube::Error> {
    let entry = api.entry(&settings.secret).await?;
    let current = match &entry {
        Entry::Occupied(o) => o.get().data.as_ref().and_then(Material::from_data),
        Entry::Vacant(_) => None,
    };
    if !leading {
        return Ok(current);
    }
    let now = jiff::Timestamp::now().as_second();
    let mut next = current.clone();
    let mut reasons = Vec::new();
    // Several steps may be due after a long pause; `authority` never lets one write both add a
    // CA and sign with it, or switch and drop the old one.
    for _ in 0..4 {
        match authority::next_step(next.as_ref(), &settings.names, now, settings.timing) {
            Ok(Some((material, why))) => {
                next = Some(material);
                reasons.push(why);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the self-managed certificate");
                return Ok(current);
            }
        }
    }
    let Some(material) = next.filter(|_| !reasons.is_empty()) else {
        return Ok(current);
    };
    let data = material.to_data();
    let written = match entry {
        Entry::Occupied(mut o) => {
            let secret = o.get_mut();
            secret.data = Some(data);
            secret.type_ = Some("kubernetes.io/tls".into());
            // A replace conditional on the resourceVersion read: a 409 means someone wrote in
            // between, and the next look starts from what they wrote.
            o.commit(&PostParams::default()).await
        }
        Entry::Vacant(v) => {
            v.insert(Secret {
                metadata: ObjectMeta {
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "stsguard".to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Secret::default()
            })
            .commit(&PostParams::default())
            .await
        }
    };
    match written {
        Ok(()) => {
            tracing::info!(
                secret = %format!("{}/{}", settings.namespace, settings.secret),
                changes = %reasons.join("; "),
                "self-managed certificate written"
            );
            Ok(Some(material))
        }
        Err(kube::api::entry::CommitError::Save(kube::Error::Api(e))) if e.code == 409 => {
            tracing::info!("the Secret changed while it was being written; reading it again");
            Ok(current)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the self-managed certificate");
            Ok(current)
        }
    }
}
