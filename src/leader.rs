//! One leader among the replicas, for the work only one of them should do (writing reports,
//! renewing the shared certificate, registering the webhooks): leader election over a
//! `coordination.k8s.io/v1` Lease, by `kube-lease-manager`. Every replica serves admission
//! whether it leads or not; readiness never depends on leadership.
//!
//! A leader renews the lease `grace` before it expires; when it dies, another replica takes the
//! lease once it has expired (within the lease duration of the last renewal, plus up to a second
//! of jitter). A leader that stops cleanly releases the lease so the next one takes over at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// Which lease, and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique among the replicas: the pod name in a cluster.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

impl LeaseSettings {
    /// Renewal this long before expiry; also the clock skew between nodes that is tolerated.
    fn grace(&self) -> u64 {
        (self.duration.as_secs() / 3).max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("--leader-lease-duration must be at least 2s, not {0:?}")]
    TooShort(Duration),
    #[error("cannot take part in leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
}

/// This replica's part in the election: whether it leads now, and a way to follow changes.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Joins the election on `settings.name` in `settings.namespace` (the Lease is created when
    /// missing) and keeps taking part until `resign` or the end of the process. It does not wait
    /// for the API server: until it answers, this replica does not lead, and it keeps trying.
    pub fn join(client: Client, settings: &LeaseSettings) -> Result<Leadership, LeaderError> {
        if settings.duration < Duration::from_secs(2) {
            return Err(LeaderError::TooShort(settings.duration));
        }
        let (tell, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(take_part(client, settings.clone(), tell, stopped));
        Ok(Leadership {
            leading,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Leadership that never changes, for a replica with no cluster (it leads alone) or none.
    pub fn fixed(leading: bool) -> Leadership {
        let (tell, leading) = watch::channel(leading);
        // The receiver keeps its last value once the sender is gone.
        drop(tell);
        Leadership {
            leading,
            stop: None,
            task: None,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows leadership: true while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops taking part and releases the lease if this replica holds it, so another replica
    /// leads at once instead of after the lease expires.
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The election loop: set up the lease manager (retrying while the API server is away), then
/// pass its changes on until told to stop; dropping its channel makes it release the lease.
async fn take_part(
    client: Client,
    settings: LeaseSettings,
    tell: watch::Sender<bool>,
    stopped: oneshot::Receiver<()>,
) {
    let mut stopped = std::pin::pin!(stopped);
    let mut retry = Duration::from_secs(1);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration.as_secs())
            .with_grace(settings.grace())
            .with_field_manager(format!("stsguard-{}", settings.identity))
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(source) => {
                let error = LeaderError::Lease {
                    namespace: settings.namespace.clone(),
                    name: settings.name.clone(),
                    source,
                };
                tracing::warn!(error = %error, retry_in = ?retry, "not taking part in leader election yet");
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    };
    let (mut from_manager, manager_task) = manager.watch().await;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            changed = from_manager.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *from_manager.borrow_and_update();
                tracing::info!(identity = %settings.identity, leading = now, "leadership changed");
                tell.send_replace(now);
            }
        }
    }
    drop(from_manager);
    tell.send_replace(false);
    match manager_task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "leader election ended with an error"),
        Err(e) => tracing::warn!(error = %e, "leader election task failed"),
    }
}

/// This replica's identity in the election: the pod name (`POD_NAME` from the downward API,
/// else the host name, which is the pod name in a cluster), with the process id when neither
/// is set so that two processes on one machine never share it.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "stsguard".to_owned());
    format!("{host}-{}", std::process::id())
}
