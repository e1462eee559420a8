//! How the backstop steps aside while the webhook answers: every generated policy takes the
//! EndpointSlices of the webhook's own Service as its params, and admits (or mutates nothing)
//! while one of them lists a ready endpoint.
//!
//! The control plane keeps those slices current whatever becomes of stsguard: the
//! EndpointSlice controller marks an endpoint not ready when its pod fails its readiness probe,
//! stops or is deleted, and the API server reads the slices from its own informer when it
//! evaluates a policy (`CollectParams` in k8s.io/apiserver's policy dispatcher). So the webhook
//! alone speaks while it is up, and the API server itself enforces while it is gone.
//!
//! A policy is evaluated once per selected slice and any failure counts, so with several
//! slices (dual-stack) the backstop speaks unless every one of them has a ready endpoint: in
//! doubt, two voices rather than none. With no slice at all (the Service deleted, an uninstall
//! half done) `parameterNotFoundAction: Allow` leaves the request alone: an orphaned backstop
//! never locks a cluster out.

use k8s_openapi::{
    api::admissionregistration::v1::{ParamKind, ParamRef, Variable},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use super::{
    ServiceRef,
    cel::{exempt_valid_pattern, lit},
};
use crate::{exemption::EXEMPT, mutate::MUTATORS, rules::RULES};

/// The label the EndpointSlice controller puts on a Service's slices.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The variable every expression starts with.
pub(crate) const WEBHOOK_READY: &str = "webhookReady";

pub(crate) fn param_kind() -> ParamKind {
    ParamKind {
        api_version: Some("discovery.k8s.io/v1".to_owned()),
        kind: Some("EndpointSlice".to_owned()),
    }
}

pub(crate) fn param_ref(service: &ServiceRef) -> ParamRef {
    ParamRef {
        namespace: Some(service.namespace.clone()),
        selector: Some(LabelSelector {
            match_labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.name.clone())].into()),
            ..LabelSelector::default()
        }),
        parameter_not_found_action: Some("Allow".to_owned()),
        ..ParamRef::default()
    }
}

/// The variables every generated policy reads, in order: whether the webhook is ready (an
/// endpoint whose `ready` is true or unknown, as the EndpointSlice API tells consumers to read
/// it), the exemption annotation and whether it applies.
pub(crate) fn variables() -> Vec<Variable> {
    let known = RULES
        .iter()
        .map(|r| r.id)
        .chain(MUTATORS.iter().map(|m| m.id));
    vec![
        Variable {
            name: WEBHOOK_READY.to_owned(),
            expression: "has(params.endpoints) && params.endpoints.exists(e, \
                         !has(e.conditions) || !has(e.conditions.ready) || e.conditions.ready)"
                .to_owned(),
        },
        Variable {
            name: "exempt".to_owned(),
            expression: format!(
                "has(object.metadata.annotations) && {key} in object.metadata.annotations ? \
                 object.metadata.annotations[{key}] : ''",
                key = lit(EXEMPT)
            ),
        },
        Variable {
            name: "exemptApplies".to_owned(),
            expression: format!(
                "variables.exempt.matches('{}')",
                exempt_valid_pattern(known)
            ),
        },
    ]
}
