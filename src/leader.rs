//! One leader among the replicas, for the work only one of them should do (writing reports,
//! renewing the shared certificate, registering the webhooks): leader election over a
//! `coordination.k8s.io/v1` Lease, by `kube-lease-manager`. Every replica serves admission
//! whether it leads or not; readiness never depends on leadership.
//!
//! A leader renews the lease `grace` before it expires; when it dies, another replica takes the
//! lease once it has expired (within the lease duration of the last renewal, plus up to a second
//! of jitter). A leader that stops cleanly releases the lease so the next one takes over at once.
//! A leader that loses the API server stops leading half the grace before its lease runs out
//! (counted from its last successful write to the Lease), so two replicas never lead at once, and
//! joins again when the API server answers: it leads on if the lease is still its own, else
//! follows.

use std::{sync::Arc, time::Duration};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::cluster::{Backoff, Health, Outage, REQUEST_DEADLINE};

/// Which lease, and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Unique among the replicas: the pod name in a cluster.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// The cluster's health: when this replica last wrote the Lease, and where the lease's
    /// outages are reported. Without it, leadership is what the lease manager says.
    pub health: Option<Arc<Health>>,
}

impl LeaseSettings {
    /// Renewal this long before expiry; also the clock skew between nodes that is tolerated.
    fn grace(&self) -> u64 {
        (self.duration.as_secs() / 3).max(1)
    }

    /// How long after its last successful write of the Lease this replica counts itself the
    /// holder: half the grace before expiry. The renewal is due at `grace` before expiry, so a
    /// healthy one lands well within this; one that fails or hangs ends leading half the grace
    /// before another replica may take the lease.
    fn holds_for(&self) -> Duration {
        self.duration
            .saturating_sub(Duration::from_secs(self.grace()) / 2)
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

/// The election loop: join (set up the lease manager, retrying while the API server is away),
/// then follow the manager until told to stop, or until the API server is lost: then stop
/// leading and join again once it answers.
async fn take_part(
    client: Client,
    settings: LeaseSettings,
    tell: watch::Sender<bool>,
    stopped: oneshot::Receiver<()>,
) {
    let outage = match &settings.health {
        Some(health) => health.outage("lease"),
        None => Outage::new("lease", String::new()),
    };
    let mut stopped = std::pin::pin!(stopped);
    let mut backoff = Backoff::default();
    loop {
        let built = tokio::select! {
            _ = &mut stopped => return,
            built = build(&client, &settings) => built,
        };
        let manager = match built {
            Ok(manager) => manager,
            Err(error) => {
                outage.failed(&error, "not leading; trying again");
                tokio::select! {
                    _ = &mut stopped => return,
                    () = back_off(&settings, backoff.next_wait()) => {}
                }
                continue;
            }
        };
        outage.answered();
        backoff.reset();
        let failed = follow(&manager, &settings, &tell, stopped.as_mut()).await;
        set(&tell, &settings, false, "left the election");
        let Some(error) = failed else {
            // Told to stop: let the next replica lead at once, if the API server lets us.
            let released = tokio::time::timeout(REQUEST_DEADLINE, manager.release()).await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::info!(component = "lease", identity = %settings.identity,
                    "could not release the lease; another replica leads once it expires");
            }
            return;
        };
        outage.failed(
            &error,
            "leader duties stopped; joining again once it answers",
        );
        tokio::select! {
            _ = &mut stopped => return,
            () = back_off(&settings, backoff.next_wait()) => {}
        }
    }
}

/// Waits `wait`, or until the watches see the API server answer again.
async fn back_off(settings: &LeaseSettings, wait: Duration) {
    match &settings.health {
        Some(health) => health.back_off(wait).await,
        None => tokio::time::sleep(wait).await,
    }
}

async fn build(client: &Client, settings: &LeaseSettings) -> Result<LeaseManager, LeaderError> {
    LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration.as_secs())
        .with_grace(settings.grace())
        .with_field_manager(format!("stsguard-{}", settings.identity))
        .build()
        .await
        .map_err(|source| LeaderError::Lease {
            namespace: settings.namespace.clone(),
            name: settings.name.clone(),
            source,
        })
}

/// Follows `manager` until `stopped` (`None`) or until it fails to reach the API server (the
/// error). This replica leads while the manager says it holds the lease *and* its last write to
/// the Lease is recent enough ([`LeaseSettings::holds_for`]): a renewal that fails, or hangs,
/// ends the leader's duties before the lease expires, when another replica may take it, rather
/// than whenever the manager gives up.
async fn follow(
    manager: &LeaseManager,
    settings: &LeaseSettings,
    tell: &watch::Sender<bool>,
    mut stopped: std::pin::Pin<&mut oneshot::Receiver<()>>,
) -> Option<LeaderError> {
    let mut holds = false;
    let mut changed = Box::pin(manager.changed());
    let written = || settings.health.as_ref().map(|h| h.lease_written_at());
    loop {
        // Awake when the last write stops counting (to stop leading then, not up to a tick
        // later), else once a second (to start once a write is seen).
        let wake = match written() {
            Some(Some(at)) if holds => at + settings.holds_for(),
            _ => std::time::Instant::now() + Duration::from_secs(1),
        };
        tokio::select! {
            _ = &mut stopped => return None,
            result = &mut changed => {
                changed = Box::pin(manager.changed());
                match result {
                    Ok(now) => holds = now,
                    Err(source) => {
                        return Some(LeaderError::Lease {
                            namespace: settings.namespace.clone(),
                            name: settings.name.clone(),
                            source,
                        });
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        let fresh = match written() {
            None => true,
            Some(at) => at.is_some_and(|at| at.elapsed() < settings.holds_for()),
        };
        let reason = if holds && !fresh {
            "the lease was not renewed in time"
        } else {
            "lease changed"
        };
        set(tell, settings, holds && fresh, reason);
    }
}

/// Tells whether this replica leads, and logs it when that changes.
fn set(tell: &watch::Sender<bool>, settings: &LeaseSettings, leading: bool, reason: &str) {
    if tell.send_replace(leading) != leading {
        tracing::info!(component = "lease", identity = %settings.identity, leading, reason,
            "leadership changed");
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
