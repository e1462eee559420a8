//! The governing Service rules: a StatefulSet's `serviceName` must name a headless Service in its
//! namespace that selects its pods, checked from both sides (the StatefulSet and the Service).
//!
//! These rules need cluster facts; without them ([`Fact::Unknown`]) they report nothing and
//! `evaluate` says they were skipped.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};
use crate::lookup::Fact;

pub(super) const HEADLESS: Rule = Rule {
    id: "sts-governing-service-headless",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Deny,
    }],
    needs_lookup: true,
    summary: "the Service named by spec.serviceName is headless (clusterIP: None)",
    why: "Only a headless Service publishes per-pod DNS records (web-0.web.ns.svc); with a \
          cluster IP the pods have no stable network identity.",
    fix: "Recreate the Service with spec.clusterIP: None (clusterIP is immutable), or point \
          spec.serviceName at a headless Service.",
    check: Check::StatefulSet(check_headless),
};

pub(super) const EXISTS: Rule = Rule {
    id: "sts-governing-service-exists",
    target: Target::StatefulSet,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: true,
    summary: "the Service named by spec.serviceName exists in the StatefulSet's namespace",
    why: "Without the governing Service the pods get no DNS records. It may legitimately \
          follow (kubectl apply -f dir/), so this warns; svc-headless-for-statefulset checks \
          the Service when it arrives.",
    fix: "Create the headless Service given in the message.",
    check: Check::StatefulSet(check_exists),
};

pub(super) const SELECTOR: Rule = Rule {
    id: "sts-governing-service-selector",
    target: Target::StatefulSet,
    cases: &[
        Case {
            name: MISMATCH,
            default: Action::Deny,
        },
        Case {
            name: NO_SELECTOR,
            default: Action::Warn,
        },
    ],
    needs_lookup: true,
    summary: "the governing Service's selector selects the pod template labels (mismatch), \
              and it has a selector at all (no-selector)",
    why: "DNS records are made for the pods the Service selects; a selector that misses the \
          pods leaves them without names, and a Service without a selector relies on \
          hand-made endpoints.",
    fix: "Set the Service's spec.selector to labels the pod template carries (see the Service \
          in the message).",
    check: Check::StatefulSet(check_selector),
};

pub(super) const SVC_HEADLESS_FOR_STATEFULSET: Rule = Rule {
    id: "svc-headless-for-statefulset",
    target: Target::Service,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Deny,
    }],
    needs_lookup: true,
    summary: "a Service that a StatefulSet in its namespace names as serviceName is headless",
    why: "Whichever of the two objects is applied first, the governing Service must end up \
          headless; this is the Service-side half of sts-governing-service-headless.",
    fix: "Set spec.clusterIP: None on this Service.",
    check: Check::Service(check_svc_headless),
};

pub(super) const SVC_GOVERNING_TYPE: Rule = Rule {
    id: "svc-governing-type",
    target: Target::Service,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: true,
    summary: "a governing Service is not of type NodePort, LoadBalancer or ExternalName",
    why: "A governing Service exists to publish per-pod DNS records; exposing it outside the \
          cluster is almost always a second, separate Service's job.",
    fix: "Keep the governing Service type: ClusterIP with clusterIP: None, and expose the \
          pods through another Service.",
    check: Check::Service(check_svc_type),
};

pub(super) const SVC_PUBLISH_NOT_READY: Rule = Rule {
    id: "svc-publish-not-ready",
    target: Target::Service,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Off,
    }],
    needs_lookup: true,
    summary: "a governing Service sets publishNotReadyAddresses: true",
    why: "During ordered start-up members usually need to find their peers by DNS before they \
          are Ready (to join a quorum); without it their records appear only once Ready.",
    fix: "Set spec.publishNotReadyAddresses: true on the governing Service.",
    check: Check::Service(check_svc_publish),
};

pub(crate) const MISMATCH: &str = "mismatch";
pub(crate) const NO_SELECTOR: &str = "no-selector";
const PATH: &str = "spec.serviceName";

fn service_name(sts: &StatefulSet) -> Option<&str> {
    sts.spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn governing_service(sts: &StatefulSet, ctx: &Context) -> Option<(String, Fact<Arc<Service>>)> {
    let name = service_name(sts)?;
    Some((name.to_owned(), ctx.lookup.service(ctx.namespace, name)))
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn check_headless(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    match governing_service(sts, ctx) {
        Some((name, Fact::Found(svc))) if !is_headless(&svc) => {
            let ip = svc
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .unwrap_or("unset");
            vec![
                Finding::new(
                    PATH,
                    format!(
                        "governing Service {name:?} is not headless (clusterIP {ip}), so the pods \
                         get no per-pod DNS records"
                    ),
                )
                .fix(paste_fix(sts, ctx.namespace, &name)),
            ]
        }
        _ => vec![],
    }
}

fn check_exists(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    match governing_service(sts, ctx) {
        Some((name, Fact::Absent)) => vec![
            Finding::new(
                PATH,
                format!(
                    "governing Service {name:?} does not exist in namespace {:?} (yet)",
                    ctx.namespace
                ),
            )
            .fix(paste_fix(sts, ctx.namespace, &name)),
        ],
        _ => vec![],
    }
}

fn check_selector(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    let Some((name, Fact::Found(svc))) = governing_service(sts, ctx) else {
        return vec![];
    };
    let fix = || paste_fix(sts, ctx.namespace, &name);
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return vec![
            Finding::new(
                PATH,
                format!(
                    "governing Service {name:?} has no selector, so no pod gets DNS records from it"
                ),
            )
            .case(NO_SELECTOR)
            .fix(fix()),
        ];
    };
    let labels = pod_labels(sts);
    if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return vec![];
    }
    vec![
        Finding::new(
            PATH,
            format!(
                "governing Service {name:?} selects {} but the pod template is labelled {}, so \
                 the pods get no DNS records",
                render_labels(selector),
                render_labels(labels)
            ),
        )
        .case(MISMATCH)
        .fix(fix()),
    ]
}

/// The StatefulSets that name this Service, if the lookup can tell.
fn governed(svc: &Service, ctx: &Context) -> Vec<Arc<StatefulSet>> {
    let Some(name) = svc.metadata.name.as_deref() else {
        return vec![];
    };
    match ctx.lookup.statefulsets_naming(ctx.namespace, name) {
        Fact::Found(list) => list,
        Fact::Absent | Fact::Unknown => vec![],
    }
}

fn names(list: &[Arc<StatefulSet>]) -> String {
    list.iter()
        .map(|s| format!("{:?}", s.metadata.name.as_deref().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_svc_headless(svc: &Service, ctx: &Context) -> Vec<Finding> {
    if is_headless(svc) {
        return vec![];
    }
    let governed = governed(svc, ctx);
    let Some(first) = governed.first() else {
        return vec![];
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    vec![
        Finding::new(
            "spec.clusterIP",
            format!(
                "this Service is the governing Service of StatefulSet {} but is not headless, so \
                 their pods get no per-pod DNS records",
                names(&governed)
            ),
        )
        .fix(paste_fix(first, ctx.namespace, name)),
    ]
}

fn check_svc_type(svc: &Service, ctx: &Context) -> Vec<Finding> {
    let kind = svc
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer" | "ExternalName") {
        return vec![];
    }
    let governed = governed(svc, ctx);
    let Some(first) = governed.first() else {
        return vec![];
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    vec![
        Finding::new(
            "spec.type",
            format!(
                "governing Service of StatefulSet {} has type {kind}; expose the pods through a \
                 separate Service",
                names(&governed)
            ),
        )
        .fix(paste_fix(first, ctx.namespace, name)),
    ]
}

fn check_svc_publish(svc: &Service, ctx: &Context) -> Vec<Finding> {
    if svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true)
    {
        return vec![];
    }
    let governed = governed(svc, ctx);
    let Some(first) = governed.first() else {
        return vec![];
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mut fixed = headless_service_for(first, ctx.namespace, name);
    if let Some(spec) = fixed.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    vec![
        Finding::new(
            "spec.publishNotReadyAddresses",
            format!(
                "governing Service of StatefulSet {} does not publish not-ready pods, so members \
                 cannot find their peers by DNS before they are Ready",
                names(&governed)
            ),
        )
        .fix(render_fix(&fixed)),
    ]
}

fn pod_labels(sts: &StatefulSet) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    sts.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&EMPTY)
}

fn render_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// The headless Service this StatefulSet needs, built from it, for people to paste.
pub(crate) fn headless_service_for(sts: &StatefulSet, namespace: &str, name: &str) -> Service {
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
    // A Service with several ports needs a name on each.
    if ports.len() > 1 {
        for (i, port) in ports.iter_mut().enumerate() {
            port.name.get_or_insert_with(|| format!("port-{i}"));
        }
    }
    let selector = pod_labels(sts).clone();
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

fn paste_fix(sts: &StatefulSet, namespace: &str, name: &str) -> String {
    render_fix(&headless_service_for(sts, namespace, name))
}

fn render_fix(svc: &Service) -> String {
    let yaml = serde_saphyr::to_string(svc).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!("apply this headless Service:\n{yaml}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        lookup::{InMemory, NoLookup},
        rules::testing::{check_sts_with, check_svc_with, sts, svc},
    };

    fn cluster_with(service: Service) -> InMemory {
        InMemory::new().with_service("ns", service)
    }

    #[test]
    fn without_facts_nothing_is_reported() {
        for check in [check_headless, check_exists, check_selector] {
            assert!(check_sts_with(check, sts(), &NoLookup).is_empty());
        }
        let cluster_ip = svc().set("/spec/clusterIP", json!("10.0.0.1"));
        assert!(check_svc_with(check_svc_headless, cluster_ip, &NoLookup).is_empty());
    }

    #[test]
    fn headless_matching_service_passes() {
        let facts = cluster_with(svc().build());
        for check in [check_headless, check_exists, check_selector] {
            assert!(check_sts_with(check, sts(), &facts).is_empty());
        }
    }

    #[test]
    fn missing_service_warns_with_a_ready_fix() {
        let found = check_sts_with(check_exists, sts(), &InMemory::new());
        assert_eq!(found.len(), 1);
        let fix = found[0].fix.as_deref().unwrap();
        let pasted: Service =
            serde_saphyr::from_str(fix.trim_start_matches("apply this headless Service:\n"))
                .unwrap();
        let spec = pasted.spec.unwrap();
        assert_eq!(pasted.metadata.name.as_deref(), Some("web"));
        assert_eq!(pasted.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()["app"], "web");
        assert_eq!(spec.ports.unwrap()[0].port, 80);
    }

    #[test]
    fn cluster_ip_service_is_denied_from_both_sides() {
        let not_headless = svc().set("/spec/clusterIP", json!("10.0.0.1"));
        let found = check_sts_with(check_headless, sts(), &cluster_with(not_headless.build()));
        assert!(found[0].message.contains("not headless"));

        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let not_headless = svc().set("/spec/clusterIP", json!("10.0.0.1"));
        let found = check_svc_with(check_svc_headless, not_headless, &facts);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("\"web\""));
        let unrelated = svc()
            .set("/metadata/name", json!("other"))
            .set("/spec/clusterIP", json!("10.0.0.1"));
        assert!(check_svc_with(check_svc_headless, unrelated, &facts).is_empty());
    }

    #[test]
    fn selector_mismatch_and_missing_selector_are_separate_cases() {
        let other = cluster_with(svc().set("/spec/selector", json!({"app": "db"})).build());
        assert_eq!(
            check_sts_with(check_selector, sts(), &other)[0].case,
            MISMATCH
        );
        let none = cluster_with(svc().remove("/spec/selector").build());
        assert_eq!(
            check_sts_with(check_selector, sts(), &none)[0].case,
            NO_SELECTOR
        );
    }

    #[test]
    fn governing_service_type_and_publishing_are_checked() {
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let node_port = svc().set("/spec/type", json!("NodePort"));
        let found = check_svc_with(check_svc_type, node_port, &facts);
        assert!(found[0].fix.as_deref().unwrap().contains("clusterIP: None"));
        assert!(check_svc_with(check_svc_type, svc(), &facts).is_empty());
        let found = check_svc_with(check_svc_publish, svc(), &facts);
        assert!(
            found[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("publishNotReadyAddresses: true")
        );
        let publishing = svc().set("/spec/publishNotReadyAddresses", json!(true));
        assert!(check_svc_with(check_svc_publish, publishing, &facts).is_empty());
    }

    #[test]
    fn pasted_service_names_every_port_when_there_are_several() {
        let built = sts()
            .set(
                "/spec/template/spec/containers/0/ports/-",
                json!({"containerPort": 9090}),
            )
            .set(
                "/spec/template/spec/containers/0/ports/-",
                json!({"containerPort": 80, "name": "dup"}),
            )
            .build();
        let svc = headless_service_for(&built, "ns", "web");
        let ports = svc.spec.unwrap().ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p.name.is_some()));
    }
}
