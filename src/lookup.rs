//! Cross-object facts behind one trait: the governing Service of a StatefulSet and the
//! StatefulSets that name a Service.
//!
//! Rules never know where the facts come from: the webhook answers from its cluster caches, the
//! offline audit from the manifests it was given, unit tests from a small map.

use std::{borrow::Borrow, future::Future, pin::Pin, sync::Arc};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};

mod facts;
mod index;

pub use facts::{Labels, Names, PortFacts, ServiceFacts, StatefulSetFacts, is_headless};
pub use index::Index;

/// An answer from a [`Lookup`]: found, known to be absent, or not knowable here.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact<T> {
    Found(T),
    Absent,
    /// No cluster facts are available (no lookups configured, or the cache is not usable);
    /// rules that depend on them are skipped and the answer says so.
    Unknown,
}

/// Where cross-object facts come from: the compact facts the rules read of the other object
/// ([`ServiceFacts`], [`StatefulSetFacts`]), shared, not copied: sources hand out the `Arc`s
/// they hold.
pub trait Lookup: Send + Sync {
    /// The Service `name` in `namespace`.
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<ServiceFacts>>;
    /// The StatefulSets in `namespace` whose `spec.serviceName` is `service`.
    fn statefulsets_naming(
        &self,
        namespace: &str,
        service: &str,
    ) -> Fact<Vec<Arc<StatefulSetFacts>>>;
    /// Whether this lookup can answer for `namespace`; `false` means every answer there is
    /// `Unknown`.
    fn available(&self, _namespace: &str) -> bool {
        true
    }

    /// Confirms, with the source of truth, the fact a review needs before a verdict rests on it:
    /// a cache can lag behind a write made a moment ago, both ways (an object created a moment
    /// ago is missing, one deleted a moment ago is still there). Sources that cannot lag
    /// confirm nothing.
    fn confirm<'a>(&'a self, _namespace: &'a str, _need: Need<'a>) -> BoxFuture<'a, Confirmed> {
        Box::pin(std::future::ready(Confirmed::default()))
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The cross-object fact an object's review depends on, with the object under review, so that
/// a confirmation can tell whether the verdict could depend on a cache that lags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Need<'a> {
    /// A StatefulSet's review needs its governing Service `name`.
    Service {
        name: &'a str,
        statefulset: &'a StatefulSet,
    },
    /// A Service's review needs the StatefulSets that name it: `object` is the Service as
    /// written (none on DELETE), `old` as stored before (none on CREATE).
    Naming {
        name: &'a str,
        object: Option<&'a Service>,
        old: Option<&'a Service>,
    },
}

impl Need<'_> {
    /// The name of the Service the fact is about.
    pub fn name(&self) -> &str {
        match self {
            Need::Service { name, .. } | Need::Naming { name, .. } => name,
        }
    }
}

/// Facts confirmed live, which take precedence over the lookup's own answers.
#[derive(Clone, Debug, Default)]
pub struct Confirmed {
    pub service: Option<(Key, Fact<Arc<ServiceFacts>>)>,
    pub naming: Option<(Key, Fact<Vec<Arc<StatefulSetFacts>>>)>,
    /// A live read that failed, so that the cache's answer stands: for the caller to log with
    /// what it knows of the review.
    pub failed: Option<Unconfirmed>,
}

/// A live read that failed: of which `kind` (`services`, `statefulsets`), for which object, why.
#[derive(Clone, Debug)]
pub struct Unconfirmed {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub why: String,
}

/// A lookup with live confirmations laid over it.
pub struct WithConfirmed<'a> {
    pub base: &'a dyn Lookup,
    pub confirmed: Confirmed,
}

impl Lookup for WithConfirmed<'_> {
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<ServiceFacts>> {
        match &self.confirmed.service {
            Some(((ns, n), fact)) if ns == namespace && n == name => fact.clone(),
            _ => self.base.service(namespace, name),
        }
    }

    fn statefulsets_naming(
        &self,
        namespace: &str,
        service: &str,
    ) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        match &self.confirmed.naming {
            Some(((ns, s), fact)) if ns == namespace && s == service => fact.clone(),
            _ => self.base.statefulsets_naming(namespace, service),
        }
    }

    fn available(&self, namespace: &str) -> bool {
        self.base.available(namespace)
    }
}

/// The lookup used when there are no cluster facts: everything is unknown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLookup;

impl Lookup for NoLookup {
    fn service(&self, _: &str, _: &str) -> Fact<Arc<ServiceFacts>> {
        Fact::Unknown
    }
    fn statefulsets_naming(&self, _: &str, _: &str) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        Fact::Unknown
    }
    fn available(&self, _: &str) -> bool {
        false
    }
}

/// A namespace and a name.
pub type Key = (String, String);

/// Facts held in memory, keyed by namespace and name. What it does not hold is absent.
#[derive(Debug, Default)]
pub struct InMemory {
    services: Index<ServiceFacts>,
    statefulsets: Index<StatefulSetFacts>,
}

impl InMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a Service (replacing one of the same name); `namespace` is used where the object
    /// names none.
    pub fn add_service(&mut self, namespace: &str, service: impl Borrow<Service>) {
        let service = service.borrow();
        let (ns, name) = key(&service.metadata, namespace);
        self.services.insert(&ns, &name, ServiceFacts::of(service));
    }

    /// Adds a StatefulSet (replacing one of the same name); `namespace` is used where the
    /// object names none.
    pub fn add_statefulset(&mut self, namespace: &str, sts: impl Borrow<StatefulSet>) {
        let sts = sts.borrow();
        let (ns, name) = key(&sts.metadata, namespace);
        self.statefulsets
            .insert(&ns, &name, StatefulSetFacts::of(sts));
    }

    pub fn with_service(mut self, namespace: &str, service: impl Borrow<Service>) -> Self {
        self.add_service(namespace, service);
        self
    }

    pub fn with_statefulset(mut self, namespace: &str, sts: impl Borrow<StatefulSet>) -> Self {
        self.add_statefulset(namespace, sts);
        self
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, namespace: &str) -> Key {
    let ns = crate::subject::namespace(meta, namespace).to_owned();
    (ns, meta.name.clone().unwrap_or_default())
}

impl Lookup for InMemory {
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<ServiceFacts>> {
        match self.services.get(namespace, name) {
            Some(svc) => Fact::Found(svc),
            None => Fact::Absent,
        }
    }

    fn statefulsets_naming(
        &self,
        namespace: &str,
        service: &str,
    ) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        Fact::Found(self.statefulsets.naming(namespace, service))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn sts(ns: Option<&str>, name: &str, service: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: ns.map(Into::into),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some(service.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn statefulsets_naming_stays_in_its_namespace() {
        let facts = InMemory::new()
            .with_statefulset("a", sts(None, "one", "svc"))
            .with_statefulset("a", sts(Some("b"), "two", "svc"))
            .with_statefulset("a", sts(Some("a"), "three", "other"));
        let Fact::Found(found) = facts.statefulsets_naming("a", "svc") else {
            panic!("in-memory facts are always known")
        };
        let names: Vec<_> = found.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["one"]);
    }

    #[test]
    fn a_replaced_statefulset_no_longer_names_its_old_service() {
        let mut facts = InMemory::new();
        facts.add_statefulset("a", sts(None, "one", "old"));
        facts.add_statefulset("a", sts(None, "one", "new"));
        assert_eq!(facts.statefulsets_naming("a", "old"), Fact::Found(vec![]));
        let Fact::Found(found) = facts.statefulsets_naming("a", "new") else {
            unreachable!()
        };
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn confirmed_facts_take_precedence() {
        let facts = InMemory::new();
        let svc = Arc::new(ServiceFacts::default());
        let overlay = WithConfirmed {
            base: &facts,
            confirmed: Confirmed {
                service: Some((("a".into(), "web".into()), Fact::Found(svc.clone()))),
                ..Confirmed::default()
            },
        };
        assert_eq!(overlay.service("a", "web"), Fact::Found(svc));
        assert_eq!(overlay.service("a", "other"), Fact::Absent);
    }

    #[test]
    fn missing_service_is_absent_and_no_lookup_is_unknown() {
        assert_eq!(InMemory::new().service("a", "svc"), Fact::Absent);
        assert_eq!(NoLookup.service("a", "svc"), Fact::Unknown);
        assert!(!NoLookup.available("a"));
    }
}
