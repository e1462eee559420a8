//! Reads the StatefulSet or Service inside an AdmissionReview into its k8s-openapi type, leaving
//! out `metadata.managedFields`.
//!
//! The API server sends `managedFields` with every object: often half its bytes, and, as JSON
//! trees, half the cost of reading it. No rule or mutator reads it, and mutations are JSON
//! Patches against the object the API server keeps, so passing over it changes no answer. The
//! rest of the object is read by k8s-openapi's own `Deserialize` impls, so the types the rules
//! see are exactly the ones `serde_json::from_str::<StatefulSet>` would give, minus that field.

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus},
        core::v1::{Service, ServiceSpec, ServiceStatus},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};
use std::{collections::BTreeMap, fmt, marker::PhantomData};

/// A kind whose reviewed objects are read without `managedFields`.
pub trait ReadLean: k8s_openapi::Resource + Sized {
    type Spec: DeserializeOwned;
    type Status: DeserializeOwned;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self;
}

impl ReadLean for StatefulSet {
    type Spec = StatefulSetSpec;
    type Status = StatefulSetStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self {
        StatefulSet {
            metadata,
            spec,
            status,
        }
    }
}

impl ReadLean for Service {
    type Spec = ServiceSpec;
    type Status = ServiceStatus;
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Self::Spec>,
        status: Option<Self::Status>,
    ) -> Self {
        Service {
            metadata,
            spec,
            status,
        }
    }
}

/// Reads one object (the JSON of `request.object` or `request.oldObject`) as `K`, with the same
/// checks as `K`'s own `Deserialize`: `apiVersion` and `kind`, when present, must be `K`'s.
pub fn from_json<K: ReadLean>(json: &str) -> serde_json::Result<K> {
    serde_json::from_str::<Lean<K>>(json).map(|lean| lean.0)
}

/// `K` read without `managedFields`, as a member of a larger document.
pub struct Lean<K>(pub K);

impl<'de, K: ReadLean> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<K>(PhantomData<K>);

impl<'de, K: ReadLean> Visitor<'de> for ObjectVisitor<K> {
    type Value = Lean<K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(K::KIND)
    }

    // A member given twice takes its last value, as in k8s-openapi and in the API server's own
    // decoding, so the rules judge what the API server stores.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const NAMES: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
        let (mut metadata, mut spec, mut status) = (None::<Meta>, None, None);
        while let Some(key) = map.next_key_seed(Key(NAMES))? {
            match key {
                Some("apiVersion") => expect(map.next_value()?, K::API_VERSION)?,
                Some("kind") => expect(map.next_value()?, K::KIND)?,
                Some("metadata") => metadata = map.next_value()?,
                Some("spec") => spec = map.next_value()?,
                Some("status") => status = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let metadata = metadata.map(Meta::into_object_meta).unwrap_or_default();
        Ok(Lean(K::assemble(metadata, spec, status)))
    }
}

fn expect<E: de::Error>(found: String, expected: &'static str) -> Result<(), E> {
    if found == expected {
        Ok(())
    } else {
        Err(E::invalid_value(de::Unexpected::Str(&found), &expected))
    }
}

/// A member name, as one of `self.0` (`None` for any other), without allocating it.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|known| **known == name).copied())
    }
}

/// Declares `Meta`: `ObjectMeta` without `managedFields`, which is passed over like any unknown
/// member, without building it. Converted field by field (no `..Default::default()`), so a
/// field k8s-openapi adds fails to compile here instead of being dropped.
macro_rules! meta {
    ($($json:literal => $field:ident: $ty:ty,)*) => {
        #[derive(Default)]
        struct Meta {
            $($field: Option<$ty>,)*
        }

        impl<'de> Deserialize<'de> for Meta {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(MetaVisitor)
            }
        }

        struct MetaVisitor;

        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Meta;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("ObjectMeta")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                const NAMES: &[&str] = &[$($json,)*];
                let mut meta = Meta::default();
                while let Some(key) = map.next_key_seed(Key(NAMES))? {
                    match key {
                        $(Some($json) => meta.$field = map.next_value()?,)*
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(meta)
            }
        }

        impl Meta {
            fn into_object_meta(self) -> ObjectMeta {
                let Meta { $($field,)* } = self;
                ObjectMeta {
                    $($field,)*
                    managed_fields: None,
                }
            }
        }
    };
}

meta! {
    "annotations" => annotations: BTreeMap<String, String>,
    "creationTimestamp" => creation_timestamp: Time,
    "deletionGracePeriodSeconds" => deletion_grace_period_seconds: i64,
    "deletionTimestamp" => deletion_timestamp: Time,
    "finalizers" => finalizers: Vec<String>,
    "generateName" => generate_name: String,
    "generation" => generation: i64,
    "labels" => labels: BTreeMap<String, String>,
    "name" => name: String,
    "namespace" => namespace: String,
    "ownerReferences" => owner_references: Vec<OwnerReference>,
    "resourceVersion" => resource_version: String,
    "selfLink" => self_link: String,
    "uid" => uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full<K: ReadLean + DeserializeOwned>(value: &serde_json::Value) -> K {
        serde_json::from_value(value.clone()).expect("k8s-openapi reads it")
    }

    fn lean<K: ReadLean>(value: &serde_json::Value) -> serde_json::Result<K> {
        from_json(&value.to_string())
    }

    fn statefulset() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "generation": 3,
                "resourceVersion": "42", "generateName": "w-", "selfLink": "/x",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "deletionTimestamp": "2026-01-03T03:04:05Z",
                "deletionGracePeriodSeconds": 30,
                "labels": {"app": "web"},
                "annotations": {"stsguard.io/exempt": "sts-readiness-probe"},
                "finalizers": ["x/y"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u-2"}],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                    "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}
                }]
            },
            "spec": {
                "serviceName": "web", "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}
                }
            },
            "status": {"replicas": 2, "availableReplicas": 1},
            "somethingNew": {"ignored": true}
        })
    }

    #[test]
    fn reads_everything_but_managed_fields() {
        let value = statefulset();
        let mut expected: StatefulSet = full(&value);
        assert!(expected.metadata.managed_fields.is_some());
        expected.metadata.managed_fields = None;
        assert_eq!(lean::<StatefulSet>(&value).unwrap(), expected);
    }

    #[test]
    fn reads_services() {
        let value = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "managedFields": [{"manager": "m", "fieldsV1": {}}]},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}
        });
        let mut expected: Service = full(&value);
        expected.metadata.managed_fields = None;
        assert_eq!(lean::<Service>(&value).unwrap(), expected);
    }

    #[test]
    fn missing_parts_are_left_empty_as_k8s_openapi_leaves_them() {
        for value in [json!({}), json!({"metadata": null, "spec": null})] {
            assert_eq!(lean::<StatefulSet>(&value).unwrap(), full(&value));
        }
    }

    #[test]
    fn another_kind_or_version_is_refused_like_k8s_openapi_refuses_it() {
        for (field, value, says) in [
            (
                "kind",
                "Deployment",
                "invalid value: string \"Deployment\", expected StatefulSet",
            ),
            (
                "apiVersion",
                "apps/v1beta2",
                "invalid value: string \"apps/v1beta2\", expected apps/v1",
            ),
        ] {
            let mut object = statefulset();
            object[field] = json!(value);
            let error = lean::<StatefulSet>(&object).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            let theirs = serde_json::from_value::<StatefulSet>(object).unwrap_err();
            assert!(theirs.to_string().contains(says), "{theirs}");
        }
    }

    #[test]
    fn wrong_types_elsewhere_are_errors_that_name_them() {
        let mut object = statefulset();
        object["spec"]["replicas"] = json!("three");
        let error = lean::<StatefulSet>(&object).unwrap_err().to_string();
        assert!(error.contains("invalid type: string \"three\""), "{error}");
        let mut object = statefulset();
        object["metadata"]["labels"] = json!(["not", "a", "map"]);
        assert!(lean::<StatefulSet>(&object).is_err());
    }

    #[test]
    fn a_member_given_twice_takes_its_last_value_as_k8s_openapi_does() {
        let json = r#"{"metadata": {"name": "a", "labels": {"x": "1"}, "name": "b"},
                       "spec": {"serviceName": "a"}, "spec": {"serviceName": "b"},
                       "metadata": {"name": "c"}}"#;
        let lean: StatefulSet = from_json(json).unwrap();
        let theirs: StatefulSet = serde_json::from_str(json).unwrap();
        assert_eq!(lean, theirs);
        assert_eq!(lean.metadata.name.as_deref(), Some("c"));
        assert_eq!(lean.metadata.labels, None);
        assert_eq!(lean.spec.unwrap().service_name.as_deref(), Some("b"));
    }

    #[test]
    fn malformed_managed_fields_are_not_read_so_not_an_error() {
        let mut object = statefulset();
        object["metadata"]["managedFields"] = json!("not a list");
        let sts = lean::<StatefulSet>(&object).unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("web"));
    }
}
