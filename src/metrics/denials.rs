//! Denied reviews by the namespace of the object, for the dashboard's denials-by-namespace panel
//! and the alert on denials spiking in one namespace.

use std::{collections::HashSet, sync::Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// The namespaces given a series of their own; later ones share `OTHER`. The namespace comes
/// from the request body, so anything that can reach the port could otherwise make a series per
/// request; a real cluster's namespaces with denials stay far below this.
const MAX_NAMESPACES: usize = 1000;
const OTHER: &str = "_other";

/// `resource_namespace`, not `namespace`: Prometheus gives the scraped pod's namespace that name
/// (the Prometheus Operator and the usual Kubernetes scrape configs), and a clash would rename
/// ours to `exported_namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    resource_namespace: String,
}

#[derive(Debug, Default)]
pub(super) struct NamespaceDenials {
    counts: Family<NamespaceLabels, Counter>,
    seen: Mutex<HashSet<String>>,
}

impl NamespaceDenials {
    pub(super) fn register(registry: &mut Registry) -> NamespaceDenials {
        let denials = NamespaceDenials::default();
        registry.register(
            "namespace_denials",
            "Reviews answered with a denial, by the namespace of the object (resource_namespace; \
             past 1,000 namespaces the rest count as _other)",
            denials.counts.clone(),
        );
        denials
    }

    pub(super) fn denied(&self, namespace: &str) {
        let label = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(namespace) {
                namespace.to_owned()
            } else if seen.len() < MAX_NAMESPACES {
                seen.insert(namespace.to_owned());
                namespace.to_owned()
            } else {
                OTHER.to_owned()
            }
        };
        self.counts
            .get_or_create(&NamespaceLabels {
                resource_namespace: label,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn namespaces_past_the_limit_share_one_series() {
        let mut registry = Registry::with_prefix("stsguard");
        let denials = NamespaceDenials::register(&mut registry);
        for n in 0..MAX_NAMESPACES + 5 {
            denials.denied(&format!("ns-{n}"));
        }
        denials.denied("ns-0");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("stsguard_namespace_denials_total{resource_namespace=\"ns-0\"} 2"));
        assert!(text.contains("stsguard_namespace_denials_total{resource_namespace=\"_other\"} 5"));
        let series = text
            .lines()
            .filter(|l| l.starts_with("stsguard_namespace_denials_total{"))
            .count();
        assert_eq!(series, MAX_NAMESPACES + 1, "{text}");
    }
}
