//! Cross-object facts from manifests audited together, resolved by proximity.
//!
//! A directory of unrelated apps shares one namespace when its manifests name none, so two apps
//! can both define a Service `web`. Each object's facts come from the definition nearest to it
//! (the same file, then the same directory, then the first given), never from whichever was read
//! last, so that every file gets the verdict it gets when audited alone wherever it can.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use crate::{
    lookup::{Fact, Key, Lookup, ServiceFacts, StatefulSetFacts},
    manifest::Source,
    subject::{self, Object},
};

/// What the index keeps of one object: its namespace and name, and the compact facts the other
/// objects' checks read (the same facts the cluster caches keep), so that an audit holds no
/// parsed document for its whole run.
#[derive(Clone, Debug)]
pub struct Definition {
    namespace: String,
    name: String,
    facts: Facts,
}

#[derive(Clone, Debug)]
enum Facts {
    Service(Arc<ServiceFacts>),
    StatefulSet {
        /// The Service it names.
        naming: String,
        facts: Arc<StatefulSetFacts>,
    },
}

impl Definition {
    /// `object` as the index keeps it; without a namespace of its own it is in `namespace`.
    pub fn of(object: &Object, namespace: &str) -> Definition {
        let meta = object.subject().metadata();
        let facts = match object {
            Object::Service(svc) => Facts::Service(Arc::new(ServiceFacts::of(svc))),
            Object::StatefulSet(sts) => Facts::StatefulSet {
                naming: subject::governing_service(sts)
                    .unwrap_or_default()
                    .to_owned(),
                facts: Arc::new(StatefulSetFacts::of(sts)),
            },
        };
        Definition {
            namespace: subject::namespace(meta, namespace).to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            facts,
        }
    }
}

/// A definition's facts and where it was given.
#[derive(Clone, Debug)]
struct Placed<T> {
    source: Arc<Source>,
    /// Input order, to break ties between equally near definitions.
    order: usize,
    object: Arc<T>,
}

/// Every StatefulSet and Service of an audit, by namespace and name.
#[derive(Debug, Default)]
pub struct ManifestFacts {
    services: HashMap<Key, Vec<Placed<ServiceFacts>>>,
    /// StatefulSets by namespace and the Service they name.
    naming: HashMap<Key, Vec<Placed<StatefulSetFacts>>>,
    /// Every definition of a StatefulSet, by namespace and name, to report collisions.
    statefulsets: BTreeMap<Key, Vec<Arc<Source>>>,
}

/// How near a definition in `candidate` is to an object in `asking`: lower is nearer.
fn distance(asking: &str, candidate: &str) -> u8 {
    if asking == candidate {
        0
    } else if Path::new(asking).parent() == Path::new(candidate).parent() && asking != "-" {
        1
    } else {
        2
    }
}

/// The nearest definition; within the asking file the last one, as applying the file would
/// leave it, elsewhere the first given.
fn nearest<'a, T>(candidates: &'a [Placed<T>], asking: &str) -> Option<&'a Placed<T>> {
    candidates
        .iter()
        .min_by_key(|p| match distance(asking, &p.source.file) {
            0 => (0, usize::MAX - p.order),
            d => (d, p.order),
        })
}

impl ManifestFacts {
    /// Indexes `objects`, each with where it was given; objects that name no namespace are in
    /// `namespace`.
    pub fn new<'a, O: Borrow<Object>>(
        objects: impl IntoIterator<Item = (&'a Source, O)>,
        namespace: &str,
    ) -> Self {
        Self::of_definitions(
            objects
                .into_iter()
                .map(|(source, object)| (source, Definition::of(object.borrow(), namespace))),
        )
    }

    /// Indexes definitions, each with where it was given.
    pub fn of_definitions<'a, D: Borrow<Definition>>(
        definitions: impl IntoIterator<Item = (&'a Source, D)>,
    ) -> Self {
        let mut facts = ManifestFacts::default();
        for (order, (source, definition)) in definitions.into_iter().enumerate() {
            let definition: &Definition = definition.borrow();
            let source = Arc::new(source.clone());
            let (ns, name) = (definition.namespace.clone(), definition.name.clone());
            match &definition.facts {
                Facts::Service(service) => {
                    facts.services.entry((ns, name)).or_default().push(Placed {
                        source,
                        order,
                        object: service.clone(),
                    })
                }
                Facts::StatefulSet { naming, facts: sts } => {
                    facts
                        .statefulsets
                        .entry((ns.clone(), name))
                        .or_default()
                        .push(source.clone());
                    facts
                        .naming
                        .entry((ns, naming.clone()))
                        .or_default()
                        .push(Placed {
                            source,
                            order,
                            object: sts.clone(),
                        });
                }
            }
        }
        facts
    }

    /// The facts as an object in `file` sees them.
    pub fn near<'a>(&'a self, file: &'a str) -> Near<'a> {
        Near { facts: self, file }
    }

    /// One note for each definition of an object after its first, naming both, and saying
    /// which one the cross-object checks use.
    pub fn collisions(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        for (key, defined) in services {
            let sources: Vec<_> = defined.iter().map(|p| p.source.as_ref()).collect();
            pairs(&mut notes, "Service", key, &sources);
        }
        for (key, defined) in &self.statefulsets {
            let sources: Vec<_> = defined.iter().map(Arc::as_ref).collect();
            pairs(&mut notes, "StatefulSet", key, &sources);
        }
        notes
    }
}

fn pairs(notes: &mut Vec<String>, kind: &str, key: &Key, sources: &[&Source]) {
    let Some((first, again)) = sources.split_first() else {
        return;
    };
    for second in again {
        notes.push(format!(
            "{kind} {}/{} is defined more than once ({first} and {second}); each object's \
             cross-object checks use the definition nearest to it (the last in its own file, \
             then one in its directory, then the first given)",
            key.0, key.1,
        ));
    }
}

/// [`ManifestFacts`] as seen from one file.
pub struct Near<'a> {
    facts: &'a ManifestFacts,
    file: &'a str,
}

impl Lookup for Near<'_> {
    fn service(&self, namespace: &str, name: &str) -> Fact<Arc<ServiceFacts>> {
        let key = (namespace.to_owned(), name.to_owned());
        match self
            .facts
            .services
            .get(&key)
            .and_then(|defined| nearest(defined, self.file))
        {
            Some(placed) => Fact::Found(placed.object.clone()),
            None => Fact::Absent,
        }
    }

    /// The StatefulSets naming the Service as this file defines it: those whose own nearest
    /// definition of that Service is the one in this file (or, when this file has none, the one
    /// nearest to it), so that an unrelated app's StatefulSet of the same name does not count.
    fn statefulsets_naming(
        &self,
        namespace: &str,
        service: &str,
    ) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        let key = (namespace.to_owned(), service.to_owned());
        let Some(candidates) = self.facts.naming.get(&key) else {
            return Fact::Found(vec![]);
        };
        let definitions = self.facts.services.get(&key).map(Vec::as_slice);
        let ours = definitions
            .and_then(|d| nearest(d, self.file))
            .map(|p| p.order);
        let naming = candidates
            .iter()
            .filter(|sts| {
                let theirs = definitions
                    .and_then(|d| nearest(d, &sts.source.file))
                    .map(|p| p.order);
                theirs.is_none() || theirs == ours
            })
            .map(|sts| sts.object.clone())
            .collect();
        Fact::Found(naming)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(name: &str, ip: &str) -> Object {
        Object::Service(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"clusterIP": ip}}))
                .unwrap(),
        ))
    }

    fn statefulset(name: &str, service: &str) -> Object {
        Object::StatefulSet(Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"serviceName": service}}),
            )
            .unwrap(),
        ))
    }

    fn index(objects: &[(&str, Object)]) -> ManifestFacts {
        let placed: Vec<(Source, &Object)> = objects
            .iter()
            .enumerate()
            .map(|(i, (file, o))| {
                let source = Source {
                    file: (*file).to_owned(),
                    line: i + 1,
                };
                (source, o)
            })
            .collect();
        ManifestFacts::new(placed.iter().map(|(s, o)| (s, *o)), "default")
    }

    fn ip(fact: Fact<Arc<ServiceFacts>>) -> String {
        match fact {
            Fact::Found(svc) => svc.cluster_ip.as_deref().unwrap().to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn the_nearest_definition_wins_whatever_the_order() {
        let objects = [
            ("apps/a/web.yaml", service("web", "None")),
            ("apps/b/web.yaml", service("web", "10.0.0.1")),
            ("apps/b/other.yaml", statefulset("x", "web")),
            ("elsewhere/z.yaml", statefulset("y", "web")),
        ];
        let facts = index(&objects);
        assert_eq!(
            ip(facts.near("apps/a/web.yaml").service("default", "web")),
            "None"
        );
        assert_eq!(
            ip(facts.near("apps/b/web.yaml").service("default", "web")),
            "10.0.0.1"
        );
        // Same directory beats input order.
        assert_eq!(
            ip(facts.near("apps/b/other.yaml").service("default", "web")),
            "10.0.0.1"
        );
        // Nothing near: the first given.
        assert_eq!(
            ip(facts.near("elsewhere/z.yaml").service("default", "web")),
            "None"
        );
        assert_eq!(
            ip(facts.near("apps/a/web.yaml").service("other", "web")),
            "Absent"
        );
    }

    #[test]
    fn a_service_is_governing_only_for_statefulsets_that_resolve_to_it() {
        let objects = [
            ("a/plain.yaml", service("db", "10.0.0.1")),
            ("b/db.yaml", statefulset("db", "db")),
            ("b/db.yaml", service("db", "None")),
        ];
        let facts = index(&objects);
        let names = |file| match facts.near(file).statefulsets_naming("default", "db") {
            Fact::Found(list) => list.len(),
            _ => usize::MAX,
        };
        assert_eq!(names("a/plain.yaml"), 0);
        assert_eq!(names("b/db.yaml"), 1);
    }

    #[test]
    fn collisions_are_noted_once_per_extra_definition() {
        let objects = [
            ("a.yaml", service("web", "None")),
            ("b.yaml", service("web", "None")),
            ("c.yaml", service("web", "None")),
            ("a.yaml", statefulset("web", "web")),
        ];
        let facts = index(&objects);
        let notes = facts.collisions();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "Service default/web is defined more than once (a.yaml:1 and b.yaml:2)"
            ),
            "{notes:?}"
        );
    }
}
