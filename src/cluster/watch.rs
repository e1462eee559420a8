//! The watches: each lists and watches one kind (in all namespaces or in one) and keeps the
//! facts the rules read in an index. Objects are not kept: each is reduced to its facts as its
//! event arrives, so memory grows with the facts, not with what the API server sends.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::Service},
};
use kube::{Api, Client, Resource, ResourceExt, runtime::watcher};
use serde::de::DeserializeOwned;

use super::{
    Health,
    backoff::Backoff,
    changes::{self, Hooks},
    fault::{self, Fault},
};
use crate::lookup::{Index, Names, ServiceFacts, StatefulSetFacts};
use crate::subject::Object;

/// One index, shared by its watch (the writer) and the reviews (readers).
#[derive(Debug)]
pub(super) struct Shared<F>(Arc<RwLock<Index<F>>>);

impl<F> Clone for Shared<F> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<F> Default for Shared<F> {
    fn default() -> Self {
        Shared(Arc::default())
    }
}

impl<F> Shared<F> {
    /// A panic while the lock was held cannot leave the index half-changed in a way that
    /// matters more than stopping reviews would, so a poisoned lock is used as it is.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Index<F>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index<F>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The indexes of one kind: one for all namespaces, or one per watched namespace.
pub(super) struct Caches<F> {
    all: Option<Shared<F>>,
    by_namespace: BTreeMap<String, Shared<F>>,
}

impl<F> Caches<F> {
    pub(super) fn for_namespace(&self, namespace: &str) -> Option<&Shared<F>> {
        self.all
            .as_ref()
            .or_else(|| self.by_namespace.get(namespace))
    }
}

/// One Service watch event into the index. Every event of every Service watch passes here, with
/// the object whole as it arrived.
fn on_service_event(index: &Shared<ServiceFacts>, event: &watcher::Event<Service>) {
    apply(index, event, ServiceFacts::of);
}

/// One StatefulSet watch event into the index. Every event of every StatefulSet watch passes
/// here, with the object whole as it arrived.
fn on_statefulset_event(index: &Shared<StatefulSetFacts>, event: &watcher::Event<StatefulSet>) {
    apply(index, event, StatefulSetFacts::of);
}

/// Applies one event: a (re-)list marks what it lists and, when it ends, drops what it did not
/// list; answers keep coming from the index meanwhile.
fn apply<K: Resource, F: Names>(index: &Shared<F>, event: &watcher::Event<K>, facts: fn(&K) -> F) {
    match event {
        watcher::Event::Init => index.write().relist_started(),
        watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
            let facts = facts(obj);
            let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
            index.write().insert(namespace, &obj.name_any(), facts);
        }
        watcher::Event::Delete(obj) => {
            let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
            index.write().remove(namespace, &obj.name_any());
        }
        watcher::Event::InitDone => index.write().relist_done(),
    }
}

pub(super) fn services(
    client: &Client,
    namespaces: &[String],
    health: &Arc<Health>,
    changes: &Hooks,
) -> Caches<ServiceFacts> {
    let watches = Watches {
        client,
        health,
        changes,
    };
    watches.caches(namespaces, "services", on_service_event)
}

pub(super) fn statefulsets(
    client: &Client,
    namespaces: &[String],
    health: &Arc<Health>,
    changes: &Hooks,
) -> Caches<StatefulSetFacts> {
    let watches = Watches {
        client,
        health,
        changes,
    };
    watches.caches(namespaces, "statefulsets", on_statefulset_event)
}

/// What every watch of one cluster shares: the client, the health it reports to, and where
/// changes go once the index has them.
struct Watches<'a> {
    client: &'a Client,
    health: &'a Arc<Health>,
    changes: &'a Hooks,
}

impl Watches<'_> {
    fn caches<K, F>(
        &self,
        namespaces: &[String],
        kind: &'static str,
        on_event: fn(&Shared<F>, &watcher::Event<K>),
    ) -> Caches<F>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Into<Object>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
        F: Names + Send + Sync + 'static,
    {
        let (client, health) = (self.client, self.health);
        if namespaces.is_empty() {
            let slot = health.register(kind, None);
            let index = Shared::default();
            watch(
                Api::all(client.clone()),
                Reporting {
                    health: health.clone(),
                    slot,
                    changes: self.changes.clone(),
                },
                index.clone(),
                on_event,
            );
            return Caches {
                all: Some(index),
                by_namespace: BTreeMap::new(),
            };
        }
        let by_namespace = namespaces
            .iter()
            .map(|ns| {
                let slot = health.register(kind, Some(ns.clone()));
                let index = Shared::default();
                let api = Api::namespaced(client.clone(), ns);
                let reporting = Reporting {
                    health: health.clone(),
                    slot,
                    changes: self.changes.clone(),
                };
                watch(api, reporting, index.clone(), on_event);
                (ns.clone(), index)
            })
            .collect();
        Caches {
            all: None,
            by_namespace,
        }
    }
}

/// Where one watch reports: its slot in the health table, and the change hook.
struct Reporting {
    health: Arc<Health>,
    slot: usize,
    changes: Hooks,
}

/// Objects a page of a (re-)list, and of the in-cluster reports' full pass. A page is held whole
/// (its JSON, then its objects) while its objects are reduced, and the allocator keeps what the
/// largest pages took: at 500 (the client-go default), two pages of objects as API servers
/// return them (managedFields, the last-applied annotation) kept more resident than 10,000
/// Services' facts. A hundred costs one request per 100 objects, which the API server answers
/// from its watch cache.
pub(crate) const PAGE: u32 = 100;

/// How long a watch asks the API server to keep it open (`timeoutSeconds`). It ends it then and
/// the watch resumes from its last resourceVersion (kept current by bookmarks, so no list);
/// the watcher also gives up on a watch silent for this long plus 5 s, which is what notices a
/// connection that a network fault dropped without closing it.
pub(crate) const WATCH_TIMEOUT_SECS: u32 = 30;

/// Spawns the watch of `api` filling `index`, reporting to `health` at `slot`. Lists are paged
/// ([`PAGE`]), so at most a page of whole objects is held at a time. After a failure it goes on
/// as [`fault`] says: at once after a `410 Gone`, after the API server's Retry-After on a 429,
/// else after a back-off that grows until a list succeeds.
fn watch<K, F>(
    api: Api<K>,
    reporting: Reporting,
    index: Shared<F>,
    on_event: fn(&Shared<F>, &watcher::Event<K>),
) where
    K: Resource<DynamicType = ()>
        + Into<Object>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    F: Names + Send + Sync + 'static,
{
    let config = watcher::Config::default()
        .page_size(PAGE)
        .timeout(WATCH_TIMEOUT_SECS);
    let Reporting {
        health,
        slot,
        changes,
    } = reporting;
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        // A 410 since the last list that succeeded: a second one backs off, so that an API
        // server that answers nothing but 410 is not asked in a tight loop.
        let mut expired = false;
        loop {
            // A new watcher starts with a list. Needed after a 410 in any form: kube's watcher
            // lists again after a 410 event, but retries a 410 answer to its watch request
            // (the version it resumes from is gone) as it is, forever.
            let mut stream = std::pin::pin!(watcher(api.clone(), config.clone()));
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => match fault::classify(&e) {
                        Fault::Expired => {
                            health.expired(slot);
                            if std::mem::replace(&mut expired, true) {
                                tokio::time::sleep(backoff.next_wait()).await;
                            }
                            break;
                        }
                        Fault::Throttled(wait) => {
                            health.lost(slot, fault::describe(&e), false);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        Fault::Unreachable => {
                            health.lost(slot, fault::describe(&e), true);
                            health.back_off(backoff.next_wait()).await;
                            continue;
                        }
                        Fault::Failing => {
                            health.lost(slot, fault::describe(&e), false);
                            tokio::time::sleep(backoff.next_wait()).await;
                            continue;
                        }
                    },
                };
                on_event(&index, &event);
                let objects = index.read().len();
                let (listed, watched) = match event {
                    watcher::Event::InitDone => (true, false),
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) => (false, true),
                    watcher::Event::Init | watcher::Event::InitApply(_) => (false, false),
                };
                // Before the health says synced: what waits for the sync (the reports' first
                // full pass, which drops the changes queued until then) has the list's end
                // behind it, instead of getting it a moment later as a reason for a second pass.
                changes::tell(&changes, event);
                if listed {
                    expired = false;
                    backoff.reset();
                    health.listed(slot, objects);
                } else if watched {
                    health.watched(slot, objects);
                }
            }
        }
    });
}
