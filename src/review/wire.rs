//! Reading the wire format: an `admission.k8s.io/v1` AdmissionReview body, read in one pass
//! for routing. The objects are read in that pass as the kind the review names when it comes
//! first (as the API server writes it), else kept as raw JSON and read once the route says as
//! what; either way without `metadata.managedFields` (see `object_read`).

use std::{fmt, marker::PhantomData};

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::core::{
    GroupVersionKind, Resource,
    admission::{AdmissionRequest, AdmissionReview, Operation},
};
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::{
    object_read::{self, Lean, ReadLean},
    subject::Target,
};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A body that is not an AdmissionReview at all; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    Malformed(serde_json::Error),
    #[error(
        "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got apiVersion {api_version:?} \
         and kind {kind:?}"
    )]
    WrongType { api_version: String, kind: String },
    #[error("the AdmissionReview has no `request`")]
    NoRequest,
    #[error("the AdmissionReview's request has no `{0}`")]
    MissingField(&'static str),
}

/// The review as read in one pass: what routing needs, typed, and (in [`Head`]) the objects,
/// read already or left as raw JSON (see [`Object`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Envelope<H> {
    #[serde(default)]
    pub(super) api_version: String,
    #[serde(default)]
    pub(super) kind: String,
    pub(super) request: Option<H>,
}

/// What routing needs from the request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Route {
    pub(super) uid: Option<String>,
    pub(super) kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub(super) sub_resource: Option<String>,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    pub(super) operation: Option<Operation>,
    #[serde(default)]
    pub(super) dry_run: bool,
}

/// [`Route`] and the objects. Read member by member rather than with `#[serde(flatten)]`, which
/// would buffer the whole request.
struct Head<'a> {
    route: Route,
    object: Option<Object<'a>>,
    old_object: Option<Object<'a>>,
}

/// `request.object` or `request.oldObject` as the routing pass left it.
pub(super) enum Object<'a> {
    /// As raw JSON, to be read once the route says as what, or not at all.
    Raw(&'a RawValue),
    /// Read already: the API server sends `kind`, `subResource` and `operation` before the
    /// objects, so for a CREATE or UPDATE of a kind stsguard judges, the routing pass reads them
    /// as that kind straight away instead of passing over them once to capture them and again
    /// to read them.
    StatefulSet(Box<StatefulSet>),
    Service(Box<Service>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Head<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    SubResource,
    Name,
    Namespace,
    Operation,
    DryRun,
    Object,
    OldObject,
    #[serde(other)]
    Other,
}

struct HeadVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for HeadVisitor<'a> {
    type Value = Head<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    // A member given twice is an error, as with `#[derive(Deserialize)]`; the caller then reads
    // the body again without the objects.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'a>, A::Error> {
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            name: &'static str,
            value: T,
        ) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut uid, mut kind, mut sub_resource, mut name, mut namespace) =
            (None, None, None, None, None);
        let (mut operation, mut dry_run, mut object, mut old_object) = (None, None, None, None);
        while let Some(field) = map.next_key()? {
            match field {
                Field::Uid => once(&mut uid, "uid", map.next_value::<Option<String>>()?)?,
                Field::Kind => once(
                    &mut kind,
                    "kind",
                    map.next_value::<Option<GroupVersionKind>>()?,
                )?,
                Field::SubResource => once(
                    &mut sub_resource,
                    "subResource",
                    map.next_value::<Option<String>>()?,
                )?,
                Field::Name => once(&mut name, "name", map.next_value::<String>()?)?,
                Field::Namespace => once(
                    &mut namespace,
                    "namespace",
                    map.next_value::<Option<String>>()?,
                )?,
                Field::Operation => once(
                    &mut operation,
                    "operation",
                    map.next_value::<Option<Operation>>()?,
                )?,
                Field::DryRun => once(&mut dry_run, "dryRun", map.next_value::<bool>()?)?,
                Field::Object | Field::OldObject => {
                    let eager = match (&kind, &sub_resource, &operation) {
                        (
                            Some(Some(gvk)),
                            None,
                            Some(Some(Operation::Create | Operation::Update)),
                        ) => Target::of(&gvk.group, &gvk.kind),
                        _ => None,
                    };
                    let value = match eager {
                        Some(Target::StatefulSet) => map
                            .next_value::<Option<Lean<StatefulSet>>>()?
                            .map(|lean| Object::StatefulSet(Box::new(lean.0))),
                        Some(Target::Service) => map
                            .next_value::<Option<Lean<Service>>>()?
                            .map(|lean| Object::Service(Box::new(lean.0))),
                        None => map.next_value::<Option<&RawValue>>()?.map(Object::Raw),
                    };
                    match field {
                        Field::Object => once(&mut object, "object", value)?,
                        _ => once(&mut old_object, "oldObject", value)?,
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Head {
            route: Route {
                uid: uid.flatten(),
                kind: kind.flatten(),
                sub_resource: sub_resource.flatten(),
                name: name.unwrap_or_default(),
                namespace: namespace.flatten(),
                operation: operation.flatten(),
                dry_run: dry_run.unwrap_or_default(),
            },
            object: object.flatten(),
            old_object: old_object.flatten(),
        })
    }
}

/// Where the reviewed objects are read from.
pub(super) enum Objects<'a> {
    /// Captured in the routing pass.
    Routed {
        object: Option<Object<'a>>,
        old_object: Option<Object<'a>>,
    },
    /// The routing pass could not capture them (a duplicated `object`, invalid UTF-8 inside
    /// one, an object that is not the kind it claims): the whole body is read again with the
    /// objects' own types, whose error says what is wrong and where.
    Body(&'a [u8]),
}

/// The parts of an AdmissionRequest the decision reads, with its objects typed.
pub(super) struct Request<K> {
    pub(super) operation: Operation,
    pub(super) namespace: Option<String>,
    pub(super) object: Option<K>,
    pub(super) old_object: Option<K>,
}

/// Reads what routing needs, with the objects in the same pass. A body that pass refuses (an
/// object among them) is read again without them: a whole-review problem is named as before,
/// and one inside the objects is left for [`read`] to name against the objects' own types.
pub(super) fn read_envelope(body: &[u8]) -> Result<(Envelope<Route>, Objects<'_>), ReviewError> {
    // One UTF-8 check of the whole body rather than one of every string read from it, as
    // serde_json's byte reader makes; a body that is not UTF-8 throughout is read as bytes, as
    // before, and its error says where.
    let head = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str::<Envelope<Head>>(text),
        Err(_) => serde_json::from_slice::<Envelope<Head>>(body),
    };
    let Ok(Envelope {
        api_version,
        kind,
        request,
    }) = head
    else {
        let envelope = serde_json::from_slice(body).map_err(ReviewError::Malformed)?;
        return Ok((envelope, Objects::Body(body)));
    };
    let (request, objects) = match request {
        Some(Head {
            route,
            object,
            old_object,
        }) => (Some(route), Objects::Routed { object, old_object }),
        None => (None, Objects::Body(body)),
    };
    let envelope = Envelope {
        api_version,
        kind,
        request,
    };
    Ok((envelope, objects))
}

/// Reads the request's objects as `K`: from their raw JSON without `managedFields` (see
/// [`object_read`]), or from the whole body with `K`'s own types. The error says what could not
/// be read.
pub(super) fn read<K>(
    body: &[u8],
    objects: Objects,
    namespace: &Option<String>,
    operation: &Operation,
) -> Result<Request<K>, String>
where
    K: Routed + Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let (object, old_object) = match objects {
        Objects::Routed { object, old_object } => {
            let read = |object: Option<Object>| object.map(K::from_routed).transpose();
            match read(object).and_then(|object| Ok((object, read(old_object)?))) {
                Ok(objects) => objects,
                Err(lean) => return Err(read_error::<K>(body, lean)),
            }
        }
        Objects::Body(body) => {
            let request = whole::<K>(body).map_err(|e| describe::<K>(&e))?;
            (request.object, request.old_object)
        }
    };
    Ok(Request {
        operation: operation.clone(),
        namespace: namespace.clone(),
        object,
        old_object,
    })
}

/// A kind the routing pass may have read already.
pub(super) trait Routed: ReadLean {
    /// The object as `Self`: read from its raw JSON, or taken as the routing pass read it.
    fn from_routed(object: Object) -> serde_json::Result<Self>;
}

impl Routed for StatefulSet {
    fn from_routed(object: Object) -> serde_json::Result<Self> {
        match object {
            Object::StatefulSet(sts) => Ok(*sts),
            Object::Raw(raw) => object_read::from_json(raw.get()),
            Object::Service(_) => Err(de::Error::custom("expected a StatefulSet, read a Service")),
        }
    }
}

impl Routed for Service {
    fn from_routed(object: Object) -> serde_json::Result<Self> {
        match object {
            Object::Service(svc) => Ok(*svc),
            Object::Raw(raw) => object_read::from_json(raw.get()),
            Object::StatefulSet(_) => {
                Err(de::Error::custom("expected a Service, read a StatefulSet"))
            }
        }
    }
}

/// The whole review read with `K`'s own types.
fn whole<K>(body: &[u8]) -> serde_json::Result<AdmissionRequest<K>>
where
    K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<K> = serde_json::from_slice(body)?;
    review
        .try_into()
        .map_err(|_| serde::de::Error::custom("the AdmissionReview has no `request`"))
}

/// An unreadable object is rare, so it is read again as part of the whole review with `K`'s own
/// types: that costs nothing that matters and positions the error in the body the user sent
/// rather than in the object alone.
fn read_error<K>(body: &[u8], lean: serde_json::Error) -> String
where
    K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    match whole::<K>(body) {
        Err(whole) => describe::<K>(&whole),
        Ok(_) => describe::<K>(&lean),
    }
}

fn describe<K: Resource<DynamicType = ()>>(error: &serde_json::Error) -> String {
    format!(
        "cannot read the review as a {} {}: {error}",
        K::api_version(&()),
        K::kind(&())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::Path;

    fn fixtures() -> Vec<(String, Value)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                (p.file_name().unwrap().to_string_lossy().into_owned(), value)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The review with `object` and `oldObject` moved ahead of every other member of the
    /// request, so that the routing pass meets them before it knows the kind.
    fn objects_first(review: &Value) -> Value {
        let mut review = review.clone();
        let request = review["request"].as_object_mut().unwrap();
        let mut reordered = serde_json::Map::new();
        for key in ["object", "oldObject"] {
            if let Some(value) = request.shift_remove(key) {
                reordered.insert(key.to_owned(), value);
            }
        }
        reordered.append(request);
        review["request"] = Value::Object(reordered);
        review
    }

    enum Read {
        StatefulSet(Box<Request<StatefulSet>>),
        Service(Box<Request<Service>>),
        Unread,
    }

    /// What the review path reads from a body, and whether its object was read in the routing
    /// pass.
    fn read_body(body: &[u8]) -> (Result<Read, String>, bool) {
        let (envelope, objects) = read_envelope(body).unwrap();
        let route = envelope.request.unwrap();
        let eager = matches!(
            &objects,
            Objects::Routed {
                object: Some(Object::StatefulSet(_) | Object::Service(_)),
                ..
            }
        );
        let gvk = route.kind.unwrap();
        let operation = route.operation.unwrap();
        let read = match Target::of(&gvk.group, &gvk.kind) {
            _ if route.sub_resource.is_some() => Ok(Read::Unread),
            Some(Target::StatefulSet) => read(body, objects, &route.namespace, &operation)
                .map(|r| Read::StatefulSet(Box::new(r))),
            Some(Target::Service) => read(body, objects, &route.namespace, &operation)
                .map(|r| Read::Service(Box::new(r))),
            None => Ok(Read::Unread),
        };
        (read, eager)
    }

    fn same(a: &Read, b: &Read) -> bool {
        fn eq<K: PartialEq>(a: &Request<K>, b: &Request<K>) -> bool {
            a.object == b.object && a.old_object == b.old_object && a.namespace == b.namespace
        }
        match (a, b) {
            (Read::StatefulSet(a), Read::StatefulSet(b)) => eq(a, b),
            (Read::Service(a), Read::Service(b)) => eq(a, b),
            (Read::Unread, Read::Unread) => true,
            _ => false,
        }
    }

    #[test]
    fn objects_read_in_the_routing_pass_are_the_objects_read_afterwards() {
        let mut eager = 0;
        for (name, review) in fixtures() {
            let (captured, read_early) = read_body(&serde_json::to_vec(&review).unwrap());
            let (late, read_late) =
                read_body(&serde_json::to_vec(&objects_first(&review)).unwrap());
            assert!(!read_late, "{name}: the object came before the kind");
            let (captured, late) = (captured.unwrap(), late.unwrap());
            assert!(same(&captured, &late), "{name}: read differently");
            let request = &review["request"];
            let judged = request.get("subResource").is_none()
                && matches!(request["operation"].as_str(), Some("CREATE" | "UPDATE"))
                && matches!(
                    request["kind"]["kind"].as_str(),
                    Some("StatefulSet" | "Service")
                );
            assert_eq!(read_early, judged, "{name}: read in the routing pass");
            eager += usize::from(read_early);
        }
        assert!(
            eager >= 10,
            "only {eager} captured reviews were read in one pass"
        );
    }

    #[test]
    fn an_unreadable_object_is_named_the_same_whichever_member_comes_first() {
        let (_, mut review) = fixtures()
            .into_iter()
            .find(|(name, _)| name == "validate-StatefulSet-CREATE-cap-web-1.json")
            .unwrap();
        review["request"]["object"]["spec"]["replicas"] = "three".into();
        for body in [review.clone(), objects_first(&review)] {
            let (read, _) = read_body(&serde_json::to_vec(&body).unwrap());
            let message = read.err().expect("an error");
            assert!(
                message.starts_with(
                    "cannot read the review as a apps/v1 StatefulSet: invalid type: string \
                     \"three\", expected i32 at line 1 column"
                ),
                "{message}"
            );
        }
    }
}
