//! The objects stsguard judges, typed: a StatefulSet or a Service.

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::rules::Target;

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
