//! The fixes the governing Service rules print: the headless Service a StatefulSet needs, built
//! from it, in a form the API server accepts for the Service as it stands.

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use crate::lookup::{Labels, StatefulSetFacts};

/// The pod template labels of a StatefulSet under review.
pub(super) fn pod_labels(sts: &StatefulSet) -> Labels {
    Labels::of(
        sts.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
    )
}

pub(super) fn render_labels(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// The headless Service this StatefulSet needs, built from it, for people to paste.
pub(crate) fn headless_service_for(sts: &StatefulSetFacts, namespace: &str, name: &str) -> Service {
    let mut ports: Vec<ServicePort> = Vec::new();
    for port in &sts.ports {
        let protocol = port.protocol.as_deref().filter(|p| *p != "TCP");
        if ports
            .iter()
            .any(|p| p.port == port.container_port && p.protocol.as_deref() == protocol)
        {
            continue;
        }
        let port_name = port.name.as_deref().map(str::to_owned);
        ports.push(ServicePort {
            name: port_name.clone(),
            port: port.container_port,
            target_port: port_name.map(IntOrString::String),
            protocol: protocol.map(str::to_owned),
            ..Default::default()
        });
    }
    // A Service with several ports needs a name on each.
    if ports.len() > 1 {
        for (i, port) in ports.iter_mut().enumerate() {
            port.name.get_or_insert_with(|| format!("port-{i}"));
        }
    }
    // The StatefulSet's own selector: it selects the pods (sts-selector-labels) and is
    // immutable, unlike template labels such as helm.sh/chart or app.kubernetes.io/version that
    // change with every release. Template labels only when there are no matchLabels.
    let selector = if sts.match_labels.is_empty() {
        sts.pod_labels.to_map()
    } else {
        sts.match_labels.to_map()
    };
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

pub(super) fn paste_fix(sts: &StatefulSetFacts, namespace: &str, name: &str) -> String {
    render_fix(&headless_service_for(sts, namespace, name))
}

pub(super) fn render_yaml(svc: &Service) -> String {
    serde_saphyr::to_string(svc).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

pub(super) fn render_fix(svc: &Service) -> String {
    format!("apply this headless Service:\n{}", render_yaml(svc))
}

/// The fix for the Service under review: one being created (no resourceVersion yet, as on a
/// CREATE review or in a manifest) is simply applied as `fixed`; one already stored is fixed as
/// [`fix_for_stored`] says.
pub(super) fn fix_for_existing(current: &Service, fixed: &Service) -> String {
    let stored = current
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty());
    if stored {
        let ip = current.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        fix_for_stored(ip, fixed)
    } else {
        render_fix(fixed)
    }
}

/// The fix that turns a stored Service whose `spec.clusterIP` is `ip` into `fixed`, in a form
/// the API server accepts: `spec.clusterIP` is immutable once set, so a Service with a cluster
/// IP cannot be made headless by applying; it has to be deleted and created again.
pub(super) fn fix_for_stored(ip: Option<&str>, fixed: &Service) -> String {
    if matches!(ip, None | Some("" | "None")) {
        return render_fix(fixed);
    }
    let name = fixed.metadata.name.as_deref().unwrap_or_default();
    let namespace = fixed
        .metadata
        .namespace
        .as_deref()
        .map(|ns| format!(" -n {ns}"))
        .unwrap_or_default();
    format!(
        "replace the Service: spec.clusterIP is immutable, so applying clusterIP: None to a \
         Service that has a cluster IP is rejected. Delete it and create it headless (its pods \
         have no per-pod DNS records in between): kubectl delete service {name}{namespace}, \
         then apply this headless Service:\n{}",
        render_yaml(fixed)
    )
}
