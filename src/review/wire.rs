//! Reading the wire format: an `admission.k8s.io/v1` AdmissionReview body, read in one pass
//! for routing with its objects kept as raw JSON, then the objects read as the type the route
//! says, without `metadata.managedFields` (see `object_read`).

use kube::core::{
    GroupVersionKind, Resource,
    admission::{AdmissionRequest, AdmissionReview, Operation},
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::object_read::{self, ReadLean};

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

/// The review as read in one pass: what routing needs, typed, and (in [`Head`]) the objects
/// left as raw JSON until the route says which type to read them as, or that they need not be
/// read at all.
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

/// [`Route`] and the objects as raw JSON. Read member by member rather than with
/// `#[serde(flatten)]`, which would buffer the whole request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    uid: Option<String>,
    kind: Option<GroupVersionKind>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Option<Operation>,
    #[serde(default)]
    dry_run: bool,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    old_object: Option<&'a RawValue>,
}

impl<'a> Head<'a> {
    fn split(self) -> (Route, Objects<'a>) {
        let Head {
            uid,
            kind,
            sub_resource,
            name,
            namespace,
            operation,
            dry_run,
            object,
            old_object,
        } = self;
        let route = Route {
            uid,
            kind,
            sub_resource,
            name,
            namespace,
            operation,
            dry_run,
        };
        (route, Objects::Raw { object, old_object })
    }
}

/// Where the reviewed objects are read from.
#[derive(Clone, Copy)]
pub(super) enum Objects<'a> {
    /// Captured as raw JSON in the routing pass.
    Raw {
        object: Option<&'a RawValue>,
        old_object: Option<&'a RawValue>,
    },
    /// The routing pass could not capture them (a duplicated `object`, invalid UTF-8 inside
    /// one): the whole body is read again with the objects' own types, whose error says what is
    /// wrong and where.
    Body(&'a [u8]),
}

/// The parts of an AdmissionRequest the decision reads, with its objects typed.
pub(super) struct Request<K> {
    pub(super) operation: Operation,
    pub(super) namespace: Option<String>,
    pub(super) object: Option<K>,
    pub(super) old_object: Option<K>,
}

/// Reads what routing needs, capturing the objects as raw JSON in the same pass. A body that
/// pass refuses is read again without them: a whole-review problem is named as before, and
/// one inside the objects is left for [`read`] to name against the objects' own types.
pub(super) fn read_envelope(body: &[u8]) -> Result<(Envelope<Route>, Objects<'_>), ReviewError> {
    let Ok(Envelope {
        api_version,
        kind,
        request,
    }) = serde_json::from_slice::<Envelope<Head>>(body)
    else {
        let envelope = serde_json::from_slice(body).map_err(ReviewError::Malformed)?;
        return Ok((envelope, Objects::Body(body)));
    };
    let (request, objects) = match request.map(Head::split) {
        Some((route, objects)) => (Some(route), objects),
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
    K: ReadLean + Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let (object, old_object) = match objects {
        Objects::Raw { object, old_object } => {
            let read = |raw: Option<&RawValue>| {
                raw.map(|raw| object_read::from_json::<K>(raw.get()))
                    .transpose()
            };
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
