//! The audit's first step, one document at a time on the thread that parsed it: classify it,
//! apply the API server's defaulting, and keep the object compactly (a StatefulSet as JSON text,
//! a few times smaller than its value tree) with the facts other objects' checks need, so that
//! no parsed document is held for the whole run.

use std::sync::Arc;

use serde_json::Value;

use super::facts::Definition;
use crate::{
    admit::{self, Classified},
    manifest::{self, InputError, Source},
    subject::{self, Object},
};

/// What a document is to the audit.
pub(super) enum Read {
    Object(Entry),
    /// A StatefulSet or Service that does not read as one.
    Invalid(InputError),
    /// Another kind.
    Other,
}

/// An object to audit, defaulted as the API server would.
pub(super) struct Entry {
    pub source: Source,
    pub api_version: String,
    pub namespace: String,
    /// A note about how it was read (a beta StatefulSet read as apps/v1).
    pub note: Option<String>,
    pub object: Compact,
}

/// An object as kept between the audit's steps: JSON text, a few times smaller than the typed
/// object and many times smaller than its value tree, read again when it is mutated and judged,
/// and the compact facts the other objects' checks read.
pub(super) struct Compact {
    whole: Box<str>,
    statefulset: bool,
    pub fact: Definition,
}

impl Compact {
    /// `object`, in `namespace` unless it names its own.
    pub fn of(object: Object, namespace: &str) -> Result<Compact, String> {
        let (whole, statefulset) = match &object {
            Object::Service(svc) => (serde_json::to_string(svc.as_ref()), false),
            Object::StatefulSet(sts) => (serde_json::to_string(sts.as_ref()), true),
        };
        Ok(Compact {
            whole: whole
                .map_err(|e| format!("cannot keep the object as JSON: {e}"))?
                .into_boxed_str(),
            statefulset,
            fact: Definition::of(&object, namespace),
        })
    }

    /// The whole object.
    pub fn object(&self) -> Result<Object, String> {
        let again = |e: serde_json::Error| format!("cannot read the kept object again: {e}");
        Ok(if self.statefulset {
            Object::StatefulSet(Arc::new(serde_json::from_str(&self.whole).map_err(again)?))
        } else {
            Object::Service(Arc::new(serde_json::from_str(&self.whole).map_err(again)?))
        })
    }
}

/// Reads one document (`text` is its text as written, for the line of an invalid field).
/// Objects without a namespace are in `namespace`.
pub(super) fn read(source: &Source, text: &str, value: &Value, namespace: &str) -> Read {
    let (object, note) = match admit::classify(value) {
        Classified::Object(object) => (object, None),
        Classified::Legacy(object, note) => (object, Some(note)),
        Classified::Invalid { message, path } => {
            return Read::Invalid(InputError {
                file: source.file.clone(),
                line: Some(manifest::field_line(text, source.line, path.as_deref())),
                column: None,
                message,
            });
        }
        Classified::Other => return Read::Other,
    };
    let object = admit::default(object);
    let namespace = subject::namespace(object.subject().metadata(), namespace).to_owned();
    match Compact::of(object, &namespace) {
        Ok(object) => Read::Object(Entry {
            source: source.clone(),
            api_version: value["apiVersion"].as_str().unwrap_or_default().to_owned(),
            namespace,
            note,
            object,
        }),
        Err(message) => Read::Invalid(InputError {
            file: source.file.clone(),
            line: Some(source.line),
            column: None,
            message,
        }),
    }
}

/// Reads a parsed document as the manifest reader would list it: each item of a `kind: List`
/// (with no text of its own), or the document itself.
pub(super) fn read_parsed(source: &Source, text: &str, value: Value, namespace: &str) -> Vec<Read> {
    if manifest::is_list(&value) {
        let items = value.get("items").and_then(Value::as_array);
        return items
            .into_iter()
            .flatten()
            .map(|item| read(source, "", item, namespace))
            .collect();
    }
    vec![read(source, text, &value, namespace)]
}
