//! The governing Service rules: a StatefulSet's `serviceName` must name a headless Service in its
//! namespace that selects its pods, checked from both sides (the StatefulSet and the Service).
//!
//! These rules need cluster facts; without them ([`Fact::Unknown`]) they report nothing and
//! `evaluate` says they were skipped.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target};
use crate::lookup::{Fact, Labels, ServiceFacts, StatefulSetFacts};

#[cfg(test)]
mod equivalence;
mod fix;
mod service_side;

pub(crate) use fix::headless_service_for;
use fix::{fix_for_stored, paste_fix, pod_labels, render_labels};
use service_side::{check_svc_headless, check_svc_publish, check_svc_selector, check_svc_type};

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

/// Both halves of the selector check, the StatefulSet's and the Service's, have these cases.
const SELECTOR_CASES: &[Case] = &[
    Case {
        name: MISMATCH,
        default: Action::Deny,
    },
    Case {
        name: NO_SELECTOR,
        default: Action::Warn,
    },
];

pub(super) const SELECTOR: Rule = Rule {
    id: "sts-governing-service-selector",
    target: Target::StatefulSet,
    cases: SELECTOR_CASES,
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

pub(super) const SVC_SELECTOR_FOR_STATEFULSET: Rule = Rule {
    id: "svc-selector-for-statefulset",
    target: Target::Service,
    cases: SELECTOR_CASES,
    needs_lookup: true,
    summary: "a Service that a StatefulSet in its namespace names as serviceName selects that \
              StatefulSet's pod template labels (mismatch), and has a selector at all \
              (no-selector)",
    why: "Whichever of the two objects is applied first, and whenever the selector changes, the \
          governing Service must select the pods; this is the Service-side half of \
          sts-governing-service-selector.",
    fix: "Set spec.selector to labels the StatefulSet's pods carry, e.g. its \
          spec.selector.matchLabels (see the Service in the message).",
    check: Check::Service(check_svc_selector),
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

fn governing_service(
    sts: &StatefulSet,
    ctx: &Context,
) -> Option<(String, Fact<Arc<ServiceFacts>>)> {
    let name = crate::subject::governing_service(sts)?;
    Some((name.to_owned(), ctx.lookup.service(ctx.namespace, name)))
}

fn check_headless(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    match governing_service(sts, ctx) {
        Some((name, Fact::Found(svc))) if !svc.is_headless() => {
            let ip = svc.cluster_ip.as_deref().unwrap_or("unset");
            vec![
                Finding::new(
                    PATH,
                    format!(
                        "governing Service {name:?} is not headless (clusterIP {ip}), so the pods \
                         get no per-pod DNS records"
                    ),
                )
                .fix(fix_for_stored(
                    svc.cluster_ip.as_deref(),
                    &headless_service_for(&StatefulSetFacts::of(sts), ctx.namespace, &name),
                )),
            ]
        }
        _ => vec![],
    }
}

fn check_exists(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    match governing_service(sts, ctx) {
        Some((name, Fact::Absent)) => {
            // Valid as a DNS-1123 label but not as a DNS-1035 one: only clusters with
            // RelaxedServiceNameValidation can create such a Service.
            let relaxed_only = name.starts_with(|c: char| c.is_ascii_digit());
            let note = if relaxed_only {
                "; a Service name that starts with a digit can exist only where the API server \
                 has RelaxedServiceNameValidation on (Kubernetes 1.34 alpha, on by default since \
                 it went beta), otherwise rename it"
            } else {
                ""
            };
            vec![
                Finding::new(
                    PATH,
                    format!(
                        "governing Service {name:?} does not exist in namespace {:?} (yet){note}",
                        ctx.namespace
                    ),
                )
                .fix(paste_fix(&StatefulSetFacts::of(sts), ctx.namespace, &name)),
            ]
        }
        _ => vec![],
    }
}

/// How a governing Service's selector fails a StatefulSet's pods, if it does: the case and
/// what is wrong. Both halves of the selector rule (StatefulSet side and Service side) judge
/// through this one function, so they agree on the same facts.
/// `selector` is the Service's, `labels` the pod template's.
fn selector_problem(selector: &Labels, labels: &Labels) -> Option<(&'static str, String)> {
    if selector.is_empty() {
        return Some((
            NO_SELECTOR,
            "has no selector, so no pod gets DNS records from it".to_owned(),
        ));
    }
    if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return None;
    }
    Some((
        MISMATCH,
        format!(
            "selects {} but the pod template is labelled {}, so the pods get no DNS records",
            render_labels(selector),
            render_labels(labels)
        ),
    ))
}

/// Whether `svc`, as the governing Service of `sts`, gives the StatefulSet-side rules nothing
/// to report: it is headless and selects the pods. When it does not, a verdict may rest on it,
/// and a cached copy is confirmed with the API server first.
pub(crate) fn governs_cleanly(svc: &ServiceFacts, sts: &StatefulSet) -> bool {
    svc.is_headless() && selector_problem(&svc.selector, &pod_labels(sts)).is_none()
}

fn check_selector(sts: &StatefulSet, ctx: &Context) -> Vec<Finding> {
    let Some((name, Fact::Found(svc))) = governing_service(sts, ctx) else {
        return vec![];
    };
    let Some((case, problem)) = selector_problem(&svc.selector, &pod_labels(sts)) else {
        return vec![];
    };
    vec![
        Finding::new(PATH, format!("governing Service {name:?} {problem}"))
            .case(case)
            .fix(fix_for_stored(
                svc.cluster_ip.as_deref(),
                &headless_service_for(&StatefulSetFacts::of(sts), ctx.namespace, &name),
            )),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Service;
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
    fn a_stored_cluster_ip_service_is_replaced_not_applied() {
        let stored = svc()
            .set("/metadata/resourceVersion", json!("42"))
            .set("/spec/clusterIP", json!("10.0.0.1"));
        let fix = |found: &[Finding]| found[0].fix.clone().unwrap();

        // StatefulSet side: the Service exists, with a cluster IP that cannot be changed.
        let found = check_sts_with(check_headless, sts(), &cluster_with(stored.clone().build()));
        let text = fix(&found);
        assert!(!text.starts_with("apply"), "{text}");
        assert!(text.contains("spec.clusterIP is immutable"), "{text}");
        assert!(text.contains("kubectl delete service web -n ns"), "{text}");
        let yaml = text
            .split_once("then apply this headless Service:\n")
            .unwrap()
            .1;
        let pasted: Service = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(pasted.spec.unwrap().cluster_ip.as_deref(), Some("None"));

        // Service side: an UPDATE of a stored Service is replaced too; a Service being created
        // (no resourceVersion yet) is simply created headless.
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let found = check_svc_with(check_svc_headless, stored.clone(), &facts);
        assert!(fix(&found).contains("kubectl delete service web -n ns"));
        let creating = svc().set("/spec/clusterIP", json!("10.0.0.1"));
        let found = check_svc_with(check_svc_headless, creating, &facts);
        assert!(fix(&found).starts_with("apply this headless Service:\n"));
        let node_port = stored.set("/spec/type", json!("NodePort"));
        let found = check_svc_with(check_svc_type, node_port, &facts);
        assert!(fix(&found).contains("kubectl delete service web -n ns"));

        // A headless Service only needs its selector changed: apply works.
        let headless = svc()
            .set("/metadata/resourceVersion", json!("42"))
            .set("/spec/selector", json!({"app": "db"}));
        let found = check_sts_with(check_selector, sts(), &cluster_with(headless.build()));
        assert!(fix(&found).starts_with("apply this headless Service:\n"));
    }

    #[test]
    fn pasted_selector_is_the_statefulset_selector_not_every_template_label() {
        let released = sts().set(
            "/spec/template/metadata/labels",
            json!({"app": "web", "helm.sh/chart": "web-1.2.3", "app.kubernetes.io/version": "1.2.3"}),
        );
        let svc = headless_service_for(&StatefulSetFacts::of(&released.build()), "ns", "web");
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector, BTreeMap::from([("app".into(), "web".into())]));
    }

    #[test]
    fn service_side_selector_check_mirrors_the_statefulset_side() {
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let other = svc().set("/spec/selector", json!({"app": "db"}));
        let found = check_svc_with(check_svc_selector, other.clone(), &facts);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].case, MISMATCH);
        assert_eq!(found[0].path, "spec.selector");
        assert!(found[0].message.contains("\"web\""), "{}", found[0].message);
        // The same facts, judged from the StatefulSet side, give the same case.
        let sts_side = check_sts_with(check_selector, sts(), &cluster_with(other.build()));
        assert_eq!(sts_side[0].case, MISMATCH);

        let none = svc().remove("/spec/selector");
        let found = check_svc_with(check_svc_selector, none, &facts);
        assert_eq!(found[0].case, NO_SELECTOR);
        assert!(check_svc_with(check_svc_selector, svc(), &facts).is_empty());
        // A Service no StatefulSet names is none of this rule's business.
        let unrelated = svc()
            .set("/metadata/name", json!("other"))
            .set("/spec/selector", json!({"app": "db"}));
        assert!(check_svc_with(check_svc_selector, unrelated, &facts).is_empty());
        assert!(
            check_svc_with(
                check_svc_selector,
                svc().remove("/spec/selector"),
                &NoLookup
            )
            .is_empty()
        );
    }

    #[test]
    fn a_missing_digit_first_service_says_why_it_may_not_exist() {
        let found = check_sts_with(
            check_exists,
            sts().set("/spec/serviceName", json!("1abc")),
            &InMemory::new(),
        );
        assert!(
            found[0].message.contains("RelaxedServiceNameValidation"),
            "{}",
            found[0].message
        );
        let found = check_sts_with(check_exists, sts(), &InMemory::new());
        assert!(!found[0].message.contains("RelaxedServiceNameValidation"));
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
        let svc = headless_service_for(&StatefulSetFacts::of(&built), "ns", "web");
        let ports = svc.spec.unwrap().ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p.name.is_some()));
    }
}
