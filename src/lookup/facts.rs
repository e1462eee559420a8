//! The facts the cross-object rules read about a looked-up object, and nothing else.
//!
//! A cluster holds tens of thousands of Services and StatefulSets; a k8s-openapi object, even
//! stripped of managedFields and status, is hundreds of bytes of struct and kilobytes of heap.
//! The rules read a handful of fields of the other object (its clusterIP and selector, or its
//! name, pod labels, selector and ports), so the caches, the offline audit and the unit tests
//! all keep these compact facts, built by the one function per kind below.

use std::collections::BTreeMap;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};

/// Labels or a selector: pairs sorted by key (as a `BTreeMap` iterates), in one allocation.
/// Empty and absent are the same to every rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    pub fn of(map: Option<&BTreeMap<String, String>>) -> Labels {
        Labels(
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// What the rules read of a Service that a StatefulSet names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// To tell whether a live read agrees with the cache.
    pub resource_version: Option<Box<str>>,
    /// `spec.clusterIP` as written: `None` (the string) when headless.
    pub cluster_ip: Option<Box<str>>,
    /// `spec.selector`.
    pub selector: Labels,
}

impl ServiceFacts {
    pub fn of(svc: &Service) -> ServiceFacts {
        let spec = svc.spec.as_ref();
        ServiceFacts {
            resource_version: svc.metadata.resource_version.as_deref().map(Into::into),
            cluster_ip: spec.and_then(|s| s.cluster_ip.as_deref()).map(Into::into),
            selector: Labels::of(spec.and_then(|s| s.selector.as_ref())),
        }
    }

    pub fn is_headless(&self) -> bool {
        is_headless(self.cluster_ip.as_deref())
    }
}

/// Whether a Service with `spec.clusterIP` set to `cluster_ip` is headless.
pub fn is_headless(cluster_ip: Option<&str>) -> bool {
    cluster_ip == Some("None")
}

/// A port of one of the pod template's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortFacts {
    pub name: Option<Box<str>>,
    pub container_port: i32,
    pub protocol: Option<Box<str>>,
}

/// What the rules read of a StatefulSet that names a Service: what they say about it, and what
/// they need to print the headless Service it wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatefulSetFacts {
    pub name: Box<str>,
    pub resource_version: Option<Box<str>>,
    /// `spec.serviceName`, empty when unset.
    pub service_name: Box<str>,
    /// `spec.template.metadata.labels`.
    pub pod_labels: Labels,
    /// `spec.selector.matchLabels`.
    pub match_labels: Labels,
    /// The ports of the pod template's containers, in order.
    pub ports: Box<[PortFacts]>,
}

impl StatefulSetFacts {
    pub fn of(sts: &StatefulSet) -> StatefulSetFacts {
        let spec = sts.spec.as_ref();
        let containers = spec
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.as_slice())
            .unwrap_or_default();
        let ports = containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| PortFacts {
                name: p.name.as_deref().map(Into::into),
                container_port: p.container_port,
                protocol: p.protocol.as_deref().map(Into::into),
            })
            .collect();
        StatefulSetFacts {
            name: sts.metadata.name.as_deref().unwrap_or_default().into(),
            resource_version: sts.metadata.resource_version.as_deref().map(Into::into),
            service_name: crate::subject::governing_service(sts)
                .unwrap_or_default()
                .into(),
            pod_labels: Labels::of(
                spec.and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            ),
            match_labels: Labels::of(spec.and_then(|s| s.selector.match_labels.as_ref())),
            ports,
        }
    }
}

/// Facts that can be grouped by the Service they name (StatefulSets), or not (Services).
pub trait Names {
    fn names_service(&self) -> Option<&str>;
}

impl Names for ServiceFacts {
    fn names_service(&self) -> Option<&str> {
        None
    }
}

impl Names for StatefulSetFacts {
    fn names_service(&self) -> Option<&str> {
        Some(&*self.service_name).filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn labels_keep_the_map_order_and_answer_lookups() {
        let map = BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("c".to_owned(), "3".to_owned()),
        ]);
        let labels = Labels::of(Some(&map));
        assert_eq!(labels.to_map(), map);
        assert_eq!(labels.get("b"), Some("2"));
        assert_eq!(labels.get("d"), None);
        assert!(Labels::of(None).is_empty());
    }

    #[test]
    fn statefulset_facts_take_every_container_port_and_nothing_else() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db", "v": "1"}},
                                  "spec": {"initContainers": [{"name": "i", "ports": [{"containerPort": 1}]}],
                                           "containers": [{"name": "a", "ports": [{"containerPort": 5432, "name": "pg"}]},
                                                          {"name": "b", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}}}
        }))
        .unwrap();
        let facts = StatefulSetFacts::of(&sts);
        assert_eq!(&*facts.name, "db");
        assert_eq!(facts.names_service(), Some("db"));
        assert_eq!(facts.pod_labels.get("v"), Some("1"));
        assert_eq!(facts.match_labels.to_map().len(), 1);
        let ports: Vec<_> = facts.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [5432, 53]);
        assert_eq!(facts.ports[1].protocol.as_deref(), Some("UDP"));
        assert_eq!(
            StatefulSetFacts::of(&StatefulSet::default()).names_service(),
            None
        );
    }
}
