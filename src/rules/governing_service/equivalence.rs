//! The compact facts lose nothing the rules read: over every StatefulSet and Service of the
//! corpus (tests/fixtures/corpus), paired each with each, what the rules derive from the facts
//! equals what the full-object code they replaced derived from the whole objects. The `full_*`
//! functions are that code, as it was, kept here as the reference.

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use super::{
    MISMATCH, NO_SELECTOR,
    fix::{fix_for_stored, headless_service_for, pod_labels, render_labels, render_yaml},
    selector_problem,
};
use crate::lookup::{ServiceFacts, StatefulSetFacts};

fn full_pod_labels(sts: &StatefulSet) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    sts.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&EMPTY)
}

fn full_render_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

fn full_headless_service_for(sts: &StatefulSet, namespace: &str, name: &str) -> Service {
    let mut ports: Vec<ServicePort> = Vec::new();
    let containers = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    for port in containers.iter().flat_map(|c| c.ports.iter().flatten()) {
        let protocol = port.protocol.clone().filter(|p| p != "TCP");
        if ports
            .iter()
            .any(|p| p.port == port.container_port && p.protocol == protocol)
        {
            continue;
        }
        ports.push(ServicePort {
            name: port.name.clone(),
            port: port.container_port,
            target_port: port.name.clone().map(IntOrString::String),
            protocol,
            ..Default::default()
        });
    }
    if ports.len() > 1 {
        for (i, port) in ports.iter_mut().enumerate() {
            port.name.get_or_insert_with(|| format!("port-{i}"));
        }
    }
    let match_labels = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .filter(|m| !m.is_empty());
    let selector = match_labels.unwrap_or_else(|| full_pod_labels(sts)).clone();
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector).filter(|s| !s.is_empty()),
            ports: Some(ports).filter(|p| !p.is_empty()),
            ..Default::default()
        }),
        status: None,
    }
}

fn full_is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn full_selector_problem(svc: &Service, sts: &StatefulSet) -> Option<(&'static str, String)> {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Some((
            NO_SELECTOR,
            "has no selector, so no pod gets DNS records from it".to_owned(),
        ));
    };
    let labels = full_pod_labels(sts);
    if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return None;
    }
    Some((
        MISMATCH,
        format!(
            "selects {} but the pod template is labelled {}, so the pods get no DNS records",
            full_render_labels(selector),
            full_render_labels(labels)
        ),
    ))
}

fn full_cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref())
}

/// Every StatefulSet and Service in the corpus.
fn corpus() -> (Vec<StatefulSet>, Vec<Service>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let loaded = crate::manifest::load(&[dir], &mut std::io::empty());
    let (mut statefulsets, mut services) = (Vec::new(), Vec::new());
    for mut doc in loaded.documents {
        // Old apps/v1beta1 objects read as apps/v1, as the rules see them.
        if let Some(object) = doc.value.as_object_mut() {
            object.remove("apiVersion");
        }
        match doc.value["kind"].as_str() {
            Some("StatefulSet") => statefulsets.push(serde_json::from_value(doc.value).unwrap()),
            Some("Service") => services.push(serde_json::from_value(doc.value).unwrap()),
            _ => {}
        }
    }
    (statefulsets, services)
}

#[test]
fn facts_give_what_the_whole_objects_gave() {
    let (statefulsets, mut services) = corpus();
    assert!(statefulsets.len() >= 40 && services.len() >= 40);
    // The corpus has no Service without a selector (one with hand-made endpoints): add one.
    let mut bare = services[0].clone();
    if let Some(spec) = bare.spec.as_mut() {
        spec.selector = None;
    }
    services.push(bare);
    let mut cases = BTreeMap::new();
    for sts in &statefulsets {
        let facts = StatefulSetFacts::of(sts);
        let name = sts.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(&*facts.name, name);
        let pasted = render_yaml(&headless_service_for(&facts, "ns", "svc"));
        let full = render_yaml(&full_headless_service_for(sts, "ns", "svc"));
        assert_eq!(pasted, full, "the Service pasted for {name}");
        assert_eq!(
            render_labels(&pod_labels(sts)),
            full_render_labels(full_pod_labels(sts))
        );
        for svc in &services {
            let svc_facts = ServiceFacts::of(svc);
            let about = format!("StatefulSet {name}, Service {:?}", svc.metadata.name);
            assert_eq!(svc_facts.is_headless(), full_is_headless(svc), "{about}");
            // The StatefulSet side compares the looked-up Service with the StatefulSet under
            // review; the Service side, the Service under review with looked-up StatefulSets.
            let problem = selector_problem(&svc_facts.selector, &pod_labels(sts));
            assert_eq!(problem, full_selector_problem(svc, sts), "{about}");
            let problem = selector_problem(&svc_facts.selector, &facts.pod_labels);
            assert_eq!(problem, full_selector_problem(svc, sts), "{about}");
            let fixed = full_headless_service_for(sts, "ns", "svc");
            assert_eq!(
                fix_for_stored(svc_facts.cluster_ip.as_deref(), &fixed),
                fix_for_stored(full_cluster_ip(svc), &fixed),
                "{about}"
            );
            *cases.entry(problem.map(|p| p.0)).or_insert(0) += 1;
        }
    }
    // The pairs reach every outcome of the selector check.
    assert_eq!(cases.len(), 3, "{cases:?}");
}
