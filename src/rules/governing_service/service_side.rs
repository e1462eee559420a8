//! The Service side of the governing Service rules: a Service that StatefulSets name is judged
//! against them, with the same facts as their own side.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use super::{
    fix::{fix_for_existing, headless_service_for},
    selector_problem,
};
use crate::{
    lookup::{Fact, Labels, StatefulSetFacts, is_headless},
    rules::{Context, Finding},
};

pub(super) fn check_svc_selector(svc: &Service, ctx: &Context) -> Vec<Finding> {
    let governed = governed(svc, ctx);
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let selector = Labels::of(svc.spec.as_ref().and_then(|s| s.selector.as_ref()));
    // One finding per case, naming every StatefulSet it applies to.
    let mut found: Vec<(&'static str, String, Vec<Arc<StatefulSetFacts>>)> = Vec::new();
    for sts in governed {
        let Some((case, problem)) = selector_problem(&selector, &sts.pod_labels) else {
            continue;
        };
        match found.iter_mut().find(|(c, _, _)| *c == case) {
            Some((_, _, list)) => list.push(sts),
            None => found.push((case, problem, vec![sts])),
        }
    }
    found
        .into_iter()
        .map(|(case, problem, list)| {
            let fixed = headless_service_for(&list[0], ctx.namespace, name);
            Finding::new(
                "spec.selector",
                format!(
                    "this Service is the governing Service of StatefulSet {} but {problem}",
                    names(&list)
                ),
            )
            .case(case)
            .fix(fix_for_existing(svc, &fixed))
        })
        .collect()
}

/// The StatefulSets that name this Service, if the lookup can tell.
fn governed(svc: &Service, ctx: &Context) -> Vec<Arc<StatefulSetFacts>> {
    let Some(name) = svc.metadata.name.as_deref() else {
        return vec![];
    };
    match ctx.lookup.statefulsets_naming(ctx.namespace, name) {
        Fact::Found(list) => list,
        Fact::Absent | Fact::Unknown => vec![],
    }
}

/// One finding about a governing Service: at `path`, the message `says` (given the names of the
/// StatefulSets it governs) and the fix `fixed` (given the headless Service they need); nothing
/// when no StatefulSet names it.
fn governing_finding(
    svc: &Service,
    ctx: &Context,
    path: &str,
    says: impl FnOnce(&str) -> String,
    fixed: impl FnOnce(Service) -> Service,
) -> Vec<Finding> {
    let governed = governed(svc, ctx);
    let Some(first) = governed.first() else {
        return vec![];
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let needed = fixed(headless_service_for(first, ctx.namespace, name));
    vec![Finding::new(path, says(&names(&governed))).fix(fix_for_existing(svc, &needed))]
}

fn names(list: &[Arc<StatefulSetFacts>]) -> String {
    list.iter()
        .map(|s| format!("{:?}", &*s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn check_svc_headless(svc: &Service, ctx: &Context) -> Vec<Finding> {
    if is_headless(svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref())) {
        return vec![];
    }
    governing_finding(
        svc,
        ctx,
        "spec.clusterIP",
        |names| {
            format!(
                "this Service is the governing Service of StatefulSet {names} but is not \
                 headless, so their pods get no per-pod DNS records"
            )
        },
        |needed| needed,
    )
}

pub(super) fn check_svc_type(svc: &Service, ctx: &Context) -> Vec<Finding> {
    let kind = svc
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if !matches!(kind, "NodePort" | "LoadBalancer" | "ExternalName") {
        return vec![];
    }
    governing_finding(
        svc,
        ctx,
        "spec.type",
        |names| {
            format!(
                "governing Service of StatefulSet {names} has type {kind}; expose the pods \
                 through a separate Service"
            )
        },
        |needed| needed,
    )
}

pub(super) fn check_svc_publish(svc: &Service, ctx: &Context) -> Vec<Finding> {
    if svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true)
    {
        return vec![];
    }
    governing_finding(
        svc,
        ctx,
        "spec.publishNotReadyAddresses",
        |names| {
            format!(
                "governing Service of StatefulSet {names} does not publish not-ready pods, so \
                 members cannot find their peers by DNS before they are Ready"
            )
        },
        |mut needed| {
            if let Some(spec) = needed.spec.as_mut() {
                spec.publish_not_ready_addresses = Some(true);
            }
            needed
        },
    )
}
