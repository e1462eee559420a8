//! Changes as the watches deliver them, for work that follows the cluster without keeping
//! objects of its own (the in-cluster reports): each object a watch applies or deletes, after
//! the cache has it, and the end of each (re-)list.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::runtime::watcher::Event;

use crate::subject::Object;

/// One change seen by a watch.
#[derive(Clone, Debug)]
pub enum Change {
    /// Added or modified (also each object of a re-list).
    Applied(Object),
    Deleted(Object),
    /// A (re-)list finished: deletions during an outage may have gone unseen.
    Relisted,
}

/// Called on the watch's task for every change: it must not block.
pub type ChangeHook = Arc<dyn Fn(Change) + Send + Sync>;

/// Where the watches send changes, once someone asks for them.
pub(super) type Hooks = Arc<OnceLock<ChangeHook>>;

impl From<StatefulSet> for Object {
    fn from(sts: StatefulSet) -> Object {
        Object::StatefulSet(Arc::new(sts))
    }
}

impl From<Service> for Object {
    fn from(svc: Service) -> Object {
        Object::Service(Arc::new(svc))
    }
}

/// Passes a watch event on, when a hook is set.
pub(super) fn tell<K: Into<Object>>(hooks: &Hooks, event: Event<K>) {
    let Some(hook) = hooks.get() else { return };
    match event {
        Event::Apply(k) | Event::InitApply(k) => hook(Change::Applied(k.into())),
        Event::Delete(k) => hook(Change::Deleted(k.into())),
        Event::InitDone => hook(Change::Relisted),
        Event::Init => {}
    }
}
