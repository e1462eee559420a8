//! Changes as the watches deliver them, for work that follows the cluster without keeping
//! objects of its own (the in-cluster reports): each object a watch event applies or deletes,
//! after the cache has it, and the end of each (re-)list, which stands for the objects listed.

use std::sync::{Arc, OnceLock};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::runtime::watcher::Event;

use crate::subject::Object;

/// One change seen by a watch.
#[derive(Clone, Debug)]
pub enum Change {
    /// Added or modified by a watch event.
    Applied(Object),
    Deleted(Object),
    /// A (re-)list finished: every object may have changed, or gone unseen, meanwhile.
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
        Event::Apply(k) => hook(Change::Applied(k.into())),
        Event::Delete(k) => hook(Change::Deleted(k.into())),
        // A list's objects are not passed one by one: its end is, and work that follows the
        // cluster reads everything again then. Passed one by one, they filled the reporter's
        // queue with 4,096 whole objects, which it then dropped (60 MB more at 12,000 objects).
        Event::InitDone => hook(Change::Relisted),
        Event::Init | Event::InitApply(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_lists_objects_are_not_passed_one_by_one_but_its_end_is() {
        let hooks: Hooks = Arc::new(OnceLock::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let hook: ChangeHook = Arc::new(move |change| {
            into.lock().unwrap().push(match change {
                Change::Applied(_) => "applied",
                Change::Deleted(_) => "deleted",
                Change::Relisted => "relisted",
            });
        });
        assert!(hooks.set(hook).is_ok());
        let svc = Service::default();

        tell(&hooks, Event::<Service>::Init);
        tell(&hooks, Event::InitApply(svc.clone()));
        tell(&hooks, Event::InitApply(svc.clone()));
        tell(&hooks, Event::<Service>::InitDone);
        tell(&hooks, Event::Apply(svc.clone()));
        tell(&hooks, Event::Delete(svc));

        assert_eq!(*seen.lock().unwrap(), ["relisted", "applied", "deleted"]);
    }
}
