//! Facts by namespace and name, and (for StatefulSets) by the Service they name: the one index
//! behind the cluster caches and the in-memory facts of the unit tests.
//!
//! Names are looked up namespace first, so a namespace's name is stored once however many
//! objects it holds. A re-list (after `410 Gone`) marks what it lists; when it ends, what it did
//! not list is gone from the cluster and is removed, while answers keep coming from the index.

use std::{collections::HashMap, sync::Arc};

use super::facts::Names;

#[derive(Debug)]
struct Entry<F> {
    /// The list generation that last saw the object.
    seen: u32,
    facts: Arc<F>,
}

#[derive(Debug)]
struct Namespace<F> {
    objects: HashMap<Box<str>, Entry<F>>,
    /// Objects by the Service they name, in the order they came.
    naming: HashMap<Box<str>, Vec<Arc<F>>>,
}

impl<F> Default for Namespace<F> {
    fn default() -> Self {
        Namespace {
            objects: HashMap::new(),
            naming: HashMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Index<F> {
    namespaces: HashMap<Box<str>, Namespace<F>>,
    generation: u32,
    len: usize,
}

impl<F> Default for Index<F> {
    fn default() -> Self {
        Index {
            namespaces: HashMap::new(),
            generation: 0,
            len: 0,
        }
    }
}

impl<F: Names> Index<F> {
    /// Adds or replaces the object `name` in `namespace`.
    pub fn insert(&mut self, namespace: &str, name: &str, facts: F) {
        let generation = self.generation;
        let ns = match self.namespaces.get_mut(namespace) {
            Some(ns) => ns,
            None => self.namespaces.entry(namespace.into()).or_default(),
        };
        let facts = Arc::new(facts);
        if let Some(service) = facts.names_service() {
            match ns.naming.get_mut(service) {
                Some(list) => list.push(facts.clone()),
                None => {
                    ns.naming.insert(service.into(), vec![facts.clone()]);
                }
            }
        }
        let entry = Entry {
            seen: generation,
            facts,
        };
        let replaced = match ns.objects.get_mut(name) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => {
                ns.objects.insert(name.into(), entry);
                None
            }
        };
        match replaced {
            Some(old) => unname(ns, &old.facts),
            None => self.len += 1,
        }
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if let Some(old) = ns.objects.remove(name) {
            unname(ns, &old.facts);
            self.len -= 1;
        }
        if ns.objects.is_empty() {
            self.namespaces.remove(namespace);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<F>> {
        let entry = self.namespaces.get(namespace)?.objects.get(name)?;
        Some(entry.facts.clone())
    }

    /// The objects in `namespace` that name the Service `service`.
    pub fn naming(&self, namespace: &str, service: &str) -> Vec<Arc<F>> {
        self.namespaces
            .get(namespace)
            .and_then(|ns| ns.naming.get(service))
            .cloned()
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A complete list begins: objects it does not insert again are removed by
    /// [`Index::relist_done`].
    pub fn relist_started(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// The list has ended: removes every object it did not list.
    pub fn relist_done(&mut self) {
        let generation = self.generation;
        let mut removed = 0;
        self.namespaces.retain(|_, ns| {
            let mut gone = Vec::new();
            ns.objects.retain(|_, entry| {
                let keep = entry.seen == generation;
                if !keep {
                    gone.push(entry.facts.clone());
                }
                keep
            });
            removed += gone.len();
            for facts in &gone {
                unname(ns, facts);
            }
            !ns.objects.is_empty()
        });
        self.len -= removed;
    }
}

/// Takes `facts` out of the list of the Service it names.
fn unname<F: Names>(ns: &mut Namespace<F>, facts: &Arc<F>) {
    let Some(service) = facts.names_service() else {
        return;
    };
    if let Some(list) = ns.naming.get_mut(service) {
        list.retain(|f| !Arc::ptr_eq(f, facts));
        if list.is_empty() {
            ns.naming.remove(service);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::StatefulSetFacts;

    fn sts(name: &str, service: &str) -> StatefulSetFacts {
        StatefulSetFacts {
            name: name.into(),
            service_name: service.into(),
            ..Default::default()
        }
    }

    fn names(list: Vec<Arc<StatefulSetFacts>>) -> Vec<String> {
        list.iter().map(|f| f.name.to_string()).collect()
    }

    #[test]
    fn a_replaced_object_moves_to_the_service_it_now_names() {
        let mut index = Index::default();
        index.insert("a", "one", sts("one", "old"));
        index.insert("a", "two", sts("two", "old"));
        index.insert("a", "one", sts("one", "new"));
        assert_eq!(names(index.naming("a", "old")), ["two"]);
        assert_eq!(names(index.naming("a", "new")), ["one"]);
        assert!(index.naming("b", "new").is_empty());
        assert_eq!(index.len(), 2);
        index.remove("a", "two");
        assert!(index.naming("a", "old").is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_relist_removes_what_it_did_not_list_again() {
        let mut index = Index::default();
        index.insert("a", "kept", sts("kept", "web"));
        index.insert("a", "gone", sts("gone", "web"));
        index.insert("b", "gone", sts("gone", "db"));
        index.relist_started();
        index.insert("a", "kept", sts("kept", "web"));
        // Until the list ends, what it has not listed yet is still answered.
        assert!(index.get("b", "gone").is_some());
        index.relist_done();
        assert_eq!(names(index.naming("a", "web")), ["kept"]);
        assert!(index.get("a", "gone").is_none());
        assert!(index.get("b", "gone").is_none());
        assert!(index.naming("b", "db").is_empty());
        assert_eq!(index.len(), 1);
    }
}
