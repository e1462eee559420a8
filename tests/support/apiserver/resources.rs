//! The kinds the fake API server serves, and their paths.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    StatefulSet,
    Secret,
    ConfigMap,
    Lease,
    ValidatingWebhookConfiguration,
    MutatingWebhookConfiguration,
    PolicyReport,
    ClusterPolicyReport,
    /// `openreports.io/v1alpha1` Report.
    OpenReport,
    /// The owner of the webhook configurations stsguard registers.
    ClusterRole,
    /// `discovery.k8s.io/v1`: whether the webhook's Service has a ready endpoint.
    EndpointSlice,
    /// The backstop stsguard's leader applies.
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    MutatingAdmissionPolicy,
    MutatingAdmissionPolicyBinding,
}

impl Kind {
    pub(super) const ALL: [Kind; 16] = [
        Kind::Service,
        Kind::StatefulSet,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Lease,
        Kind::ValidatingWebhookConfiguration,
        Kind::MutatingWebhookConfiguration,
        Kind::PolicyReport,
        Kind::ClusterPolicyReport,
        Kind::OpenReport,
        Kind::ClusterRole,
        Kind::EndpointSlice,
        Kind::ValidatingAdmissionPolicy,
        Kind::ValidatingAdmissionPolicyBinding,
        Kind::MutatingAdmissionPolicy,
        Kind::MutatingAdmissionPolicyBinding,
    ];

    /// What only Kubernetes 1.36 serves (MutatingAdmissionPolicy v1).
    pub(super) fn since_1_36(self) -> bool {
        matches!(
            self,
            Kind::MutatingAdmissionPolicy | Kind::MutatingAdmissionPolicyBinding
        )
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Secret | Kind::ConfigMap => "v1",
            Kind::StatefulSet => "apps/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::ValidatingWebhookConfiguration
            | Kind::MutatingWebhookConfiguration
            | Kind::ValidatingAdmissionPolicy
            | Kind::ValidatingAdmissionPolicyBinding
            | Kind::MutatingAdmissionPolicy
            | Kind::MutatingAdmissionPolicyBinding => "admissionregistration.k8s.io/v1",
            Kind::PolicyReport | Kind::ClusterPolicyReport => "wgpolicyk8s.io/v1alpha2",
            Kind::OpenReport => "openreports.io/v1alpha1",
            Kind::ClusterRole => "rbac.authorization.k8s.io/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::OpenReport => "Report",
            other => other.kind_name(),
        }
    }

    pub(super) fn kind_name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::StatefulSet => "StatefulSet",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Lease => "Lease",
            Kind::ValidatingWebhookConfiguration => "ValidatingWebhookConfiguration",
            Kind::MutatingWebhookConfiguration => "MutatingWebhookConfiguration",
            Kind::PolicyReport => "PolicyReport",
            Kind::ClusterPolicyReport => "ClusterPolicyReport",
            Kind::OpenReport => "Report",
            Kind::ClusterRole => "ClusterRole",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ValidatingAdmissionPolicy => "ValidatingAdmissionPolicy",
            Kind::ValidatingAdmissionPolicyBinding => "ValidatingAdmissionPolicyBinding",
            Kind::MutatingAdmissionPolicy => "MutatingAdmissionPolicy",
            Kind::MutatingAdmissionPolicyBinding => "MutatingAdmissionPolicyBinding",
        }
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::StatefulSet => "statefulsets",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Lease => "leases",
            Kind::ValidatingWebhookConfiguration => "validatingwebhookconfigurations",
            Kind::MutatingWebhookConfiguration => "mutatingwebhookconfigurations",
            Kind::PolicyReport => "policyreports",
            Kind::ClusterPolicyReport => "clusterpolicyreports",
            Kind::OpenReport => "reports",
            Kind::ClusterRole => "clusterroles",
            Kind::EndpointSlice => "endpointslices",
            Kind::ValidatingAdmissionPolicy => "validatingadmissionpolicies",
            Kind::ValidatingAdmissionPolicyBinding => "validatingadmissionpolicybindings",
            Kind::MutatingAdmissionPolicy => "mutatingadmissionpolicies",
            Kind::MutatingAdmissionPolicyBinding => "mutatingadmissionpolicybindings",
        }
    }

    pub(super) fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::ValidatingWebhookConfiguration
                | Kind::MutatingWebhookConfiguration
                | Kind::ClusterPolicyReport
                | Kind::ClusterRole
                | Kind::ValidatingAdmissionPolicy
                | Kind::ValidatingAdmissionPolicyBinding
                | Kind::MutatingAdmissionPolicy
                | Kind::MutatingAdmissionPolicyBinding
        )
    }

    /// Custom resources: the API server has no strategic merge patch for them.
    pub(super) fn custom(self) -> bool {
        matches!(
            self,
            Kind::PolicyReport | Kind::ClusterPolicyReport | Kind::OpenReport
        )
    }

    /// The resource as the API server names it in messages (`leases.coordination.k8s.io`).
    pub(super) fn resource(self) -> String {
        match self.api_version().split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural()),
            None => self.plural().to_owned(),
        }
    }

    pub(super) fn of(value: &Value) -> Kind {
        let (api_version, kind) = (value["apiVersion"].as_str(), value["kind"].as_str());
        Kind::ALL
            .into_iter()
            .find(|k| Some(k.api_version()) == api_version && Some(k.name()) == kind)
            .unwrap_or_else(|| {
                panic!("the fake API server does not serve {api_version:?} {kind:?}")
            })
    }
}

/// The resource path: kind, namespace and name, from `/api/v1/...` or `/apis/GROUP/VERSION/...`.
/// Cluster-scoped objects have the namespace `Some("")`.
pub(super) fn route(path: &str) -> Option<(Kind, Option<String>, Option<String>)> {
    let (group_version, rest) = match path.strip_prefix("/api/v1/") {
        Some(rest) => ("v1".to_owned(), rest),
        None => {
            let mut parts = path.strip_prefix("/apis/")?.splitn(3, '/');
            let (group, version, rest) = (parts.next()?, parts.next()?, parts.next()?);
            (format!("{group}/{version}"), rest)
        }
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let kind_of = |plural: &str| {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == group_version && k.plural() == plural)
    };
    match parts.as_slice() {
        [plural] => {
            let kind = kind_of(plural)?;
            Some((kind, (!kind.namespaced()).then(String::new), None))
        }
        [plural, name] => {
            let kind = kind_of(plural).filter(|k| !k.namespaced())?;
            Some((kind, Some(String::new()), Some((*name).to_owned())))
        }
        ["namespaces", ns, plural] => {
            let kind = kind_of(plural).filter(|k| k.namespaced())?;
            Some((kind, Some((*ns).to_owned()), None))
        }
        ["namespaces", ns, plural, name] => {
            let kind = kind_of(plural).filter(|k| k.namespaced())?;
            Some((kind, Some((*ns).to_owned()), Some((*name).to_owned())))
        }
        _ => None,
    }
}

/// The discovery document of one group version (`/apis/GROUP/VERSION`): the resources of the
/// kinds served there.
pub(super) fn discovery(group_version: &str, before_1_36: bool) -> Option<Value> {
    let resources: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.api_version() == group_version && !(before_1_36 && k.since_1_36()))
        .map(|k| {
            serde_json::json!({"name": k.plural(), "singularName": "", "namespaced": k.namespaced(),
                               "kind": k.name(),
                               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    (!resources.is_empty()).then(|| {
        serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1",
                           "groupVersion": group_version, "resources": resources})
    })
}
