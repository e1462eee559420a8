//! CEL types from an OpenAPI v3 document, by the rules of the API server's type checker
//! (k8s.io/apiserver/pkg/cel: `common.SchemaDeclType` over a schema whose refs
//! `openapi/resolver.PopulateRefs` has inlined, field names through `cel.Escape`). What it
//! cannot type is nil there and `None` here, and a property whose type is `None` is no field:
//! selecting it is an "undefined field" for the API server, whatever the `cel` crate says.

use std::{collections::BTreeMap, rc::Rc};

use serde_json::Value;

/// A CEL type as the checker needs it: enough to follow field selections.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Dyn,
    /// The element type of an empty list or map literal: a free type variable for cel-go, so it
    /// takes the type of the other branch of a conditional.
    Free,
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Null,
    List(Box<Type>),
    /// Keys are strings in every map an object schema gives.
    Map(Box<Type>),
    Object(Rc<BTreeMap<String, Type>>),
}

impl Type {
    pub fn object(fields: impl IntoIterator<Item = (String, Type)>) -> Type {
        Type::Object(Rc::new(fields.into_iter().collect()))
    }

    /// The name cel-go prints for it in "type '...' does not support field selection".
    pub fn name(&self) -> String {
        match self {
            Type::Dyn | Type::Free => "dyn".into(),
            Type::Bool => "bool".into(),
            Type::Int => "int".into(),
            Type::Double => "double".into(),
            Type::String => "string".into(),
            Type::Bytes => "bytes".into(),
            Type::Duration => "google.protobuf.Duration".into(),
            Type::Timestamp => "google.protobuf.Timestamp".into(),
            Type::Null => "null_type".into(),
            Type::List(elem) => format!("list({})", elem.name()),
            Type::Map(value) => format!("map(string, {})", value.name()),
            Type::Object(_) => "object".into(),
        }
    }
}

/// The `components.schemas` of an OpenAPI v3 document.
pub struct Document {
    schemas: serde_json::Map<String, Value>,
}

const REF_PREFIX: &str = "#/components/schemas/";

impl Document {
    pub fn new(document: &Value) -> Document {
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("an OpenAPI v3 document has components.schemas")
            .clone();
        Document { schemas }
    }

    /// The schema a definition name (`io.k8s.api.apps.v1.StatefulSet`) names.
    pub fn schema(&self, name: &str) -> &Value {
        self.schemas
            .get(name)
            .unwrap_or_else(|| panic!("the document has no schema {name}"))
    }

    /// The declared type of a resource (a kind's root schema), as `object` and `oldObject` get
    /// it.
    pub fn resource(&self, name: &str) -> Option<Type> {
        let mut visiting = vec![name.to_owned()];
        self.decl(self.schema(name), true, &mut visiting)
    }

    /// The declared type of a definition that is not a resource (`ObjectMeta`).
    pub fn definition(&self, name: &str) -> Option<Type> {
        let mut visiting = vec![name.to_owned()];
        let schema = self.schema(name);
        self.decl(schema, embedded(schema), &mut visiting)
    }

    /// A property, item or additionalProperties schema: its ref inlined first, as PopulateRefs
    /// does, so the extensions read are the referred schema's.
    fn nested(&self, schema: &Value, visiting: &mut Vec<String>) -> Option<Type> {
        let Some(name) = ref_of(schema) else {
            return self.decl(schema, embedded(schema), visiting);
        };
        if visiting.iter().any(|v| v == name) {
            // PopulateRefs puts `{type: object}` where a ref comes back to one it is inside.
            return self.decl(&serde_json::json!({"type": "object"}), false, visiting);
        }
        let resolved = self.schema(name);
        visiting.push(name.to_owned());
        let declared = self.decl(resolved, embedded(resolved), visiting);
        visiting.pop();
        declared
    }

    /// SchemaDeclType on a schema whose own ref is resolved.
    fn decl(&self, schema: &Value, root: bool, visiting: &mut Vec<String>) -> Option<Type> {
        if int_or_string(schema) {
            return Some(Type::Dyn);
        }
        let declared = match type_of(schema) {
            Some("array") => match &schema["items"] {
                items @ Value::Object(_) => {
                    Some(Type::List(Box::new(self.nested(items, visiting)?)))
                }
                _ => None,
            },
            Some("object") => match &schema["additionalProperties"] {
                // `additionalProperties: true` has no schema and leaves the properties.
                values @ Value::Object(_) => {
                    Some(Type::Map(Box::new(self.nested(values, visiting)?)))
                }
                _ => {
                    let properties = schema["properties"].as_object().into_iter().flatten();
                    let fields: Vec<(String, Type)> = properties
                        .filter_map(|(name, property)| {
                            Some((escape(name)?, self.nested(property, visiting)?))
                        })
                        .collect();
                    Some(Type::object(fields))
                }
            },
            Some("string") => Some(match schema["format"].as_str() {
                Some("byte") => Type::Bytes,
                Some("duration") => Type::Duration,
                Some("date" | "date-time") => Type::Timestamp,
                _ => Type::String,
            }),
            Some("boolean") => Some(Type::Bool),
            Some("number") => Some(Type::Double),
            Some("integer") => Some(Type::Int),
            _ => None,
        };
        if root {
            with_type_and_object_meta(declared)
        } else {
            declared
        }
    }
}

/// WithTypeAndObjectMeta: a resource root always shows apiVersion, kind, metadata.name and
/// metadata.generateName; when one is missing, metadata is replaced by just those two.
fn with_type_and_object_meta(declared: Option<Type>) -> Option<Type> {
    let Some(Type::Object(fields)) = declared else {
        return declared;
    };
    let meta_ok = match fields.get("metadata") {
        Some(Type::Object(meta)) => {
            meta.get("name") == Some(&Type::String)
                && meta.get("generateName") == Some(&Type::String)
        }
        _ => false,
    };
    if meta_ok
        && fields.get("kind") == Some(&Type::String)
        && fields.get("apiVersion") == Some(&Type::String)
    {
        return Some(Type::Object(fields));
    }
    let mut fields = (*fields).clone();
    fields.insert("kind".into(), Type::String);
    fields.insert("apiVersion".into(), Type::String);
    fields.insert(
        "metadata".into(),
        Type::object([
            ("name".into(), Type::String),
            ("generateName".into(), Type::String),
        ]),
    );
    Some(Type::Object(Rc::new(fields)))
}

/// refOf: `$ref`, or a ref wrapped in `allOf` (kube-openapi wraps refs to keep descriptions).
fn ref_of(schema: &Value) -> Option<&str> {
    if let Some(r) = schema["$ref"].as_str() {
        return Some(
            r.strip_prefix(REF_PREFIX)
                .unwrap_or_else(|| panic!("a ref outside the document: {r}")),
        );
    }
    schema["allOf"].as_array()?.iter().find_map(ref_of)
}

/// kube-openapi's Type[0]: `type` is a string or a list of them.
fn type_of(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(t) => Some(t),
        Value::Array(types) => types.first()?.as_str(),
        _ => None,
    }
}

/// isXIntOrString: built-in types carry the format, CRDs the extension.
fn int_or_string(schema: &Value) -> bool {
    schema["format"] == "int-or-string" || schema["x-kubernetes-int-or-string"] == true
}

fn embedded(schema: &Value) -> bool {
    schema["x-kubernetes-embedded-resource"] == true
}

/// cel.Escape: the CEL name of a property, `None` when it has none (the property is dropped).
pub fn escape(name: &str) -> Option<String> {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// The type of a JSON value in which every struct is fully populated: objects are objects,
/// except empty ones, which only maps can be there.
pub fn from_example(value: &Value) -> Type {
    match value {
        Value::Null => Type::Null,
        Value::Bool(_) => Type::Bool,
        Value::Number(n) if n.is_i64() || n.is_u64() => Type::Int,
        Value::Number(_) => Type::Double,
        Value::String(_) => Type::String,
        Value::Array(items) => Type::List(Box::new(items.first().map_or(Type::Dyn, from_example))),
        Value::Object(map) if map.is_empty() => Type::Map(Box::new(Type::Dyn)),
        Value::Object(map) => Type::object(
            map.iter()
                .filter_map(|(k, v)| Some((escape(k)?, from_example(v)))),
        ),
    }
}
