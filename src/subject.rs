//! The objects stsguard judges, typed: a StatefulSet or a Service, borrowed ([`Subject`]) or
//! shared ([`Object`]), and the two facts about them that every layer needs the same way: the
//! namespace an object lives in and the Service a StatefulSet names.

use std::sync::Arc;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// The kind of object a rule or mutator looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    StatefulSet,
    Service,
}

impl Target {
    /// The target an API group and kind name, if stsguard judges that kind.
    pub fn of(group: &str, kind: &str) -> Option<Target> {
        match (group, kind) {
            ("apps", "StatefulSet") => Some(Target::StatefulSet),
            ("", "Service") => Some(Target::Service),
            _ => None,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Target::StatefulSet => "StatefulSet",
            Target::Service => "Service",
        }
    }
}

/// What the request does to the object. Mutators and most rules judge creations and updates;
/// an UPDATE may touch only what is mutable and is judged against its old object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// An object the rules look at.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    StatefulSet(&'a StatefulSet),
    Service(&'a Service),
}

impl<'a> Subject<'a> {
    pub fn target(&self) -> Target {
        match self {
            Subject::StatefulSet(_) => Target::StatefulSet,
            Subject::Service(_) => Target::Service,
        }
    }

    pub fn metadata(&self) -> &'a ObjectMeta {
        match self {
            Subject::StatefulSet(s) => &s.metadata,
            Subject::Service(s) => &s.metadata,
        }
    }

    /// The object's name, or its `generateName` prefix, or `<unnamed>`.
    pub fn display_name(&self) -> &'a str {
        let meta = self.metadata();
        meta.name
            .as_deref()
            .or(meta.generate_name.as_deref())
            .unwrap_or("<unnamed>")
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.metadata()
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
}

/// An object stsguard judges, shared: caches and the audit hand the same one to every lookup.
#[derive(Clone, Debug)]
pub enum Object {
    StatefulSet(Arc<StatefulSet>),
    Service(Arc<Service>),
}

impl Object {
    pub fn subject(&self) -> Subject<'_> {
        match self {
            Object::StatefulSet(s) => Subject::StatefulSet(s),
            Object::Service(s) => Subject::Service(s),
        }
    }
}

/// The namespace an object lives in: the one it names, else `fallback` (the review's namespace,
/// or the namespace an audit assumes for manifests that name none). An empty name counts as none,
/// as it does for the API server.
pub fn namespace<'a>(meta: &'a ObjectMeta, fallback: &'a str) -> &'a str {
    meta.namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(fallback)
}

/// The governing Service a StatefulSet names in `spec.serviceName`, if any. The API server sends
/// a missing serviceName as `""`, so empty is none.
pub fn governing_service(sts: &StatefulSet) -> Option<&str> {
    sts.spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetSpec;

    use super::*;

    #[test]
    fn an_empty_namespace_or_service_name_is_none() {
        let mut meta = ObjectMeta {
            namespace: Some(String::new()),
            ..ObjectMeta::default()
        };
        assert_eq!(namespace(&meta, "fallback"), "fallback");
        meta.namespace = Some("apps".into());
        assert_eq!(namespace(&meta, "fallback"), "apps");

        let mut sts = StatefulSet {
            spec: Some(StatefulSetSpec {
                service_name: Some(String::new()),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        };
        assert_eq!(governing_service(&sts), None);
        sts.spec.as_mut().unwrap().service_name = Some("web".into());
        assert_eq!(governing_service(&sts), Some("web"));
    }
}
