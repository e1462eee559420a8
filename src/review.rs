//! AdmissionReview in, AdmissionReview out: routes a review on its kind, operation and
//! subresource, calls `evaluate` or `mutate`, and turns the result into the response the API
//! server expects. No I/O here; the server and tests call [`Reviewer::review`] with the body.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use jiff::{Timestamp, civil::Date, tz::TimeZone};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::core::{
    GroupVersionKind, Resource,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    response::Status,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    evaluate::{Input, Outcome, Verdict, evaluate},
    lookup::{Confirmed, Fact, Lookup, Need, WithConfirmed},
    mutate::{self, mutate_service, mutate_statefulset},
    object_read::{self, ReadLean},
    policy::Policy,
    subject::Subject,
};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// The two webhook endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

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

/// How a review was answered, for the log line and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Warned,
    Denied,
    Mutated,
    /// Not reviewed: DELETE, CONNECT, subresources, kinds stsguard does not know.
    Skipped,
    /// The review could not be read as the kind it claims to be.
    Invalid,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Warned => "warned",
            Decision::Denied => "denied",
            Decision::Mutated => "mutated",
            Decision::Skipped => "skipped",
            Decision::Invalid => "invalid",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The response plus what the log line needs.
#[derive(Debug)]
pub struct Answer {
    pub response: AdmissionResponse,
    pub summary: Summary,
}

impl Answer {
    /// The AdmissionReview the API server gets back.
    ///
    /// Serialized through [`WireReview`] rather than kube's `AdmissionReview`, whose `patch`
    /// (`Vec<u8>`) serializes as an array of numbers; the API server decodes a Go `[]byte`
    /// from a base64 string and rejects anything else (kube-rs/kube#1781).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let r = &self.response;
        let wire = WireReview {
            api_version: API_VERSION,
            kind: KIND,
            response: WireResponse {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch: r.patch.as_deref().map(|p| BASE64.encode(p)),
                patch_type: r.patch.as_ref().map(|_| "JSONPatch"),
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_deref(),
            },
        };
        serde_json::to_vec(&wire)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub sub_resource: Option<String>,
    pub dry_run: bool,
    pub decision: Decision,
    pub rules: Vec<&'static str>,
    /// Each violation's rule and the policy's action for it.
    pub violations: Vec<(&'static str, crate::rules::Action)>,
    /// Enabled rules skipped for want of cluster facts.
    pub skipped: Vec<&'static str>,
}

/// The review as read in one pass: what routing needs, typed, and (in [`Head`]) the objects
/// left as raw JSON until the route says which type to read them as, or that they need not be
/// read at all.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<H> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<H>,
}

/// What routing needs from the request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Route {
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
enum Objects<'a> {
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
struct Request<K> {
    operation: Operation,
    namespace: Option<String>,
    object: Option<K>,
    old_object: Option<K>,
}

/// A review read from its body: what the log line needs, the response so far, and the typed
/// request still to be decided. Owns its data, so parsing can run on a blocking thread.
pub struct Parsed {
    summary: Summary,
    response: AdmissionResponse,
    request: Typed,
}

enum Typed {
    /// Answered already (skipped or invalid).
    Done,
    StatefulSet(Box<Request<StatefulSet>>),
    Service(Box<Request<Service>>),
    /// A Service being deleted, to warn about the StatefulSets it governs.
    ServiceDelete(Box<Request<Service>>),
}

impl Parsed {
    /// The namespace and cross-object fact the decision will depend on, if any.
    fn need(&self) -> Option<(String, Need<'_>)> {
        match &self.request {
            Typed::StatefulSet(req) => {
                let sts = req.object.as_ref()?;
                let name = sts
                    .spec
                    .as_ref()?
                    .service_name
                    .as_deref()
                    .filter(|n| !n.is_empty())?;
                Some((
                    namespace_of(req, &sts.metadata).to_owned(),
                    Need::Service {
                        name,
                        statefulset: sts,
                    },
                ))
            }
            Typed::Service(req) | Typed::ServiceDelete(req) => {
                let svc = req.object.as_ref().or(req.old_object.as_ref())?;
                let name = svc.metadata.name.as_deref().filter(|n| !n.is_empty())?;
                Some((
                    namespace_of(req, &svc.metadata).to_owned(),
                    Need::Naming {
                        name,
                        object: req.object.as_ref(),
                        old: req.old_object.as_ref(),
                    },
                ))
            }
            Typed::Done => None,
        }
    }
}

/// The policy in force, replaced as a whole when a changed policy file loads; each review
/// works with the policy it started with.
#[derive(Debug)]
pub struct PolicySlot(RwLock<Arc<Policy>>);

impl PolicySlot {
    pub fn new(policy: Policy) -> Self {
        PolicySlot(RwLock::new(Arc::new(policy)))
    }

    pub fn get(&self) -> Arc<Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

/// Reviews AdmissionReview bodies against a policy and a source of cluster facts.
#[derive(Clone)]
pub struct Reviewer {
    policy: Arc<PolicySlot>,
    lookup: Arc<dyn Lookup>,
}

impl Reviewer {
    pub fn new(policy: Arc<Policy>, lookup: Arc<dyn Lookup>) -> Self {
        let policy = Arc::new(PolicySlot::new(Arc::unwrap_or_clone(policy)));
        Reviewer { policy, lookup }
    }

    /// A reviewer whose policy can be replaced through `slot`.
    pub fn with_slot(slot: Arc<PolicySlot>, lookup: Arc<dyn Lookup>) -> Self {
        Reviewer {
            policy: slot,
            lookup,
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.get()
    }

    /// Answers one review body.
    pub async fn review(&self, endpoint: Endpoint, body: &[u8]) -> Result<Answer, ReviewError> {
        let parsed = self.parse(endpoint, body)?;
        Ok(self.answer(endpoint, parsed, today()).await)
    }

    /// Reads a body: routes on kind, operation and subresource, and parses the typed objects.
    pub fn parse(&self, endpoint: Endpoint, body: &[u8]) -> Result<Parsed, ReviewError> {
        let (envelope, objects) = read_envelope(body)?;
        if envelope.api_version != API_VERSION || envelope.kind != KIND {
            return Err(ReviewError::WrongType {
                api_version: envelope.api_version,
                kind: envelope.kind,
            });
        }
        let mut head = envelope.request.ok_or(ReviewError::NoRequest)?;
        let uid = head.uid.take().ok_or(ReviewError::MissingField("uid"))?;
        let gvk = head.kind.take().ok_or(ReviewError::MissingField("kind"))?;
        let operation = head
            .operation
            .take()
            .ok_or(ReviewError::MissingField("operation"))?;
        let mut parsed = Parsed {
            summary: Summary {
                uid: uid.clone(),
                kind: gvk.kind.clone(),
                namespace: head.namespace.clone().unwrap_or_default(),
                name: if head.name.is_empty() {
                    "<generated>".to_owned()
                } else {
                    head.name.clone()
                },
                operation: operation_name(&operation),
                sub_resource: head.sub_resource.clone(),
                dry_run: head.dry_run,
                decision: Decision::Skipped,
                rules: vec![],
                violations: vec![],
                skipped: vec![],
            },
            response: allowed(&uid),
            request: Typed::Done,
        };

        let writes = matches!(operation, Operation::Create | Operation::Update);
        let kind = (gvk.group.as_str(), gvk.kind.as_str());
        if head.sub_resource.is_some() {
            return Ok(parsed);
        }
        match (&operation, kind) {
            (Operation::Delete, ("", "Service")) if endpoint == Endpoint::Validate => {
                // Only a warning can come of it, so an unreadable old object is not an error.
                if let Ok(req) = read::<Service>(body, objects, &head.namespace, &operation) {
                    parsed.request = Typed::ServiceDelete(Box::new(req));
                }
            }
            (_, ("apps", "StatefulSet")) if writes => {
                match read(body, objects, &head.namespace, &operation) {
                    Ok(req) => parsed.request = Typed::StatefulSet(Box::new(req)),
                    Err(message) => invalid(&mut parsed, message),
                }
            }
            (_, ("", "Service")) if writes => {
                match read(body, objects, &head.namespace, &operation) {
                    Ok(req) => parsed.request = Typed::Service(Box::new(req)),
                    Err(message) => invalid(&mut parsed, message),
                }
            }
            (_, (group, kind)) if writes => {
                let gk = if group.is_empty() {
                    kind.to_owned()
                } else {
                    format!("{group}/{kind}")
                };
                tracing::warn!(uid = %uid, kind = %gk, "review of a kind stsguard does not check");
                parsed.response.warnings = Some(vec![format!(
                    "stsguard reviews apps/StatefulSet and Service, not {gk}; allowed unchecked \
                     (check the webhook configuration's rules)"
                )]);
            }
            _ => {}
        }
        Ok(parsed)
    }

    /// Gathers the cluster facts a parsed review depends on (confirming with the API server
    /// what the cache says is absent), then decides.
    pub async fn answer(&self, endpoint: Endpoint, parsed: Parsed, today: Date) -> Answer {
        // Mutation needs facts only for Service mutators; StatefulSet mutators need none.
        let needs_facts = match (&parsed.request, endpoint) {
            (_, Endpoint::Validate) => true,
            (Typed::Service(_), Endpoint::Mutate) => mutate::mutates_services(&self.policy.get()),
            _ => false,
        };
        let confirmed = match parsed.need() {
            Some((namespace, need)) if needs_facts => self.lookup.confirm(&namespace, need).await,
            _ => Confirmed::default(),
        };
        let facts = WithConfirmed {
            base: self.lookup.as_ref(),
            confirmed,
        };
        self.decide(endpoint, parsed, &facts, today)
    }

    /// The decision, from the parsed review and the facts; no I/O.
    pub fn decide(
        &self,
        endpoint: Endpoint,
        parsed: Parsed,
        facts: &dyn Lookup,
        today: Date,
    ) -> Answer {
        let Parsed {
            mut summary,
            mut response,
            request,
        } = parsed;
        let policy = self.policy.get();
        match request {
            Typed::Done => {}
            Typed::StatefulSet(req) => statefulset(
                &policy,
                endpoint,
                &req,
                facts,
                today,
                &mut response,
                &mut summary,
            ),
            Typed::Service(req) => service(
                &policy,
                endpoint,
                &req,
                facts,
                today,
                &mut response,
                &mut summary,
            ),
            Typed::ServiceDelete(req) => service_delete(&req, facts, &mut response, &mut summary),
        }
        Answer { response, summary }
    }
}

fn statefulset(
    policy: &Policy,
    endpoint: Endpoint,
    req: &Request<StatefulSet>,
    facts: &dyn Lookup,
    today: Date,
    response: &mut AdmissionResponse,
    summary: &mut Summary,
) {
    let Some(sts) = req.object.as_ref() else {
        return invalid_response(response, summary, "request.object is missing".to_owned());
    };
    let namespace = namespace_of(req, &sts.metadata);
    match endpoint {
        Endpoint::Validate => {
            let input = Input {
                subject: Subject::StatefulSet(sts),
                old: req.old_object.as_ref().map(Subject::StatefulSet),
                namespace,
            };
            let verdict = evaluate(&input, facts, policy, today);
            judge(&Subject::StatefulSet(sts), &verdict, response, summary);
        }
        Endpoint::Mutate => {
            let operation = mutate_operation(&req.operation);
            let mutation = mutate_statefulset(sts, namespace, operation, policy, today);
            patch(response, summary, mutation);
        }
    }
}

fn service(
    policy: &Policy,
    endpoint: Endpoint,
    req: &Request<Service>,
    facts: &dyn Lookup,
    today: Date,
    response: &mut AdmissionResponse,
    summary: &mut Summary,
) {
    let Some(svc) = req.object.as_ref() else {
        return invalid_response(response, summary, "request.object is missing".to_owned());
    };
    let namespace = namespace_of(req, &svc.metadata);
    if endpoint == Endpoint::Mutate {
        let operation = mutate_operation(&req.operation);
        let mutation = mutate_service(svc, namespace, operation, policy, facts, today);
        return patch(response, summary, mutation);
    }
    let input = Input {
        subject: Subject::Service(svc),
        old: req.old_object.as_ref().map(Subject::Service),
        namespace,
    };
    let verdict = evaluate(&input, facts, policy, today);
    judge(&Subject::Service(svc), &verdict, response, summary);
}

/// UPDATE limits mutators to mutable fields; anything else that is mutated is a creation.
fn mutate_operation(operation: &Operation) -> mutate::Operation {
    match operation {
        Operation::Update => mutate::Operation::Update,
        _ => mutate::Operation::Create,
    }
}

/// Puts a mutation into the response as a JSON Patch; an empty one leaves the response as is.
fn patch(response: &mut AdmissionResponse, summary: &mut Summary, mutation: mutate::Mutation) {
    if mutation.is_empty() {
        summary.decision = Decision::Allowed;
        return;
    }
    summary.rules = mutation.applied.clone();
    let patch = json_patch::Patch(mutation.patch);
    match std::mem::replace(response, allowed("")).with_patch(patch) {
        Ok(patched) => {
            *response = patched;
            summary.decision = Decision::Mutated;
        }
        Err(e) => {
            *response = allowed(&summary.uid);
            tracing::error!(error = %e, "cannot serialize patch; object left unchanged");
            summary.decision = Decision::Allowed;
        }
    }
}

/// A Service DELETE is always allowed; deleting a governing Service gets a warning naming the
/// StatefulSets whose pods lose their DNS names.
fn service_delete(
    req: &Request<Service>,
    facts: &dyn Lookup,
    response: &mut AdmissionResponse,
    summary: &mut Summary,
) {
    let Some(svc) = req.old_object.as_ref() else {
        return;
    };
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let Fact::Found(governed) = facts.statefulsets_naming(namespace_of(req, &svc.metadata), name)
    else {
        return;
    };
    if governed.is_empty() {
        return;
    }
    let names: Vec<String> = governed
        .iter()
        .map(|s| format!("{:?}", s.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    response.warnings = Some(vec![format!(
        "deleting Service {name:?} leaves StatefulSet {} without its governing Service: their \
         pods lose their stable DNS names until a headless Service of that name exists again",
        names.join(", ")
    )]);
    summary.decision = Decision::Warned;
}

/// Turns a verdict into the response: denial message, warnings and audit annotations.
fn judge(
    subject: &Subject,
    verdict: &Verdict,
    response: &mut AdmissionResponse,
    summary: &mut Summary,
) {
    summary.rules = verdict.rule_ids();
    summary.violations = verdict
        .violations
        .iter()
        .map(|v| (v.rule.id, v.action))
        .collect();
    summary.skipped = verdict.skipped.clone();
    let mut warnings: Vec<String> = verdict
        .violations
        .iter()
        .filter(|v| v.outcome != Outcome::Denied)
        .map(ToString::to_string)
        .collect();
    warnings.extend(verdict.notes.iter().cloned());
    if !verdict.skipped.is_empty() {
        warnings.push(format!("{SKIPPED_NOTE}: {}", verdict.skipped.join(", ")));
    }

    let mut annotations: HashMap<String, String> = HashMap::new();
    for v in verdict
        .violations
        .iter()
        .filter(|v| v.outcome == Outcome::Audited)
    {
        annotations
            .entry(format!("stsguard.io/{}", v.rule.id))
            .and_modify(|m| {
                m.push_str("; ");
                m.push_str(&v.finding.message);
            })
            .or_insert_with(|| format!("{}: {}", v.finding.path, v.finding.message));
    }
    response.audit_annotations = annotations;

    if !verdict.allowed() {
        summary.decision = Decision::Denied;
        response.allowed = false;
        response.result =
            Status::failure(&denial_message(subject, verdict), "Forbidden").with_code(403);
    } else if verdict.violations.is_empty() && verdict.notes.is_empty() {
        summary.decision = Decision::Allowed;
    } else {
        summary.decision = Decision::Warned;
    }
    if !warnings.is_empty() {
        response.warnings = Some(capped(warnings));
    }
}

/// At most this many warnings of at most this many characters go back: the API server keeps
/// only a few KiB of them, and an object must not be able to make its answer huge.
const MAX_WARNINGS: usize = 100;
const MAX_WARNING_CHARS: usize = 512;
/// At most this many violations are spelled out in a denial.
const MAX_DENIALS_LISTED: usize = 50;

fn capped(mut warnings: Vec<String>) -> Vec<String> {
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - (MAX_WARNINGS - 1);
        warnings.truncate(MAX_WARNINGS - 1);
        warnings.push(format!(
            "… and {more} more warnings (stsguard audit and the stsguard log list them all)"
        ));
    }
    for warning in &mut warnings {
        truncate(warning, MAX_WARNING_CHARS);
    }
    warnings
}

fn truncate(text: &mut String, max_chars: usize) {
    if let Some((at, _)) = text.char_indices().nth(max_chars) {
        text.truncate(at);
        text.push('…');
    }
}

/// Starts the warning that says which cross-object rules could not run.
pub const SKIPPED_NOTE: &str = "cluster lookups unavailable, not checked";

/// The status message of a denial: every deny-level violation with its path and fix.
fn denial_message(subject: &Subject, verdict: &Verdict) -> String {
    let denied: Vec<_> = verdict.denied().collect();
    let mut message = format!(
        "stsguard denied {} {:?}: {} violation{}",
        subject.target().kind(),
        subject.display_name(),
        denied.len(),
        if denied.len() == 1 { "" } else { "s" }
    );
    let count = denied.len();
    for v in denied.into_iter().take(MAX_DENIALS_LISTED) {
        let mut line = format!(
            "\n- {} at {}: {}. Fix: {}",
            v.rule.id,
            v.finding.path,
            v.finding.message,
            v.fix()
        );
        truncate(&mut line, 4 * MAX_WARNING_CHARS);
        message.push_str(&line);
    }
    if count > MAX_DENIALS_LISTED {
        message.push_str(&format!(
            "\n- … and {} more (stsguard audit lists them all)",
            count - MAX_DENIALS_LISTED
        ));
    }
    message
}

/// Reads what routing needs, capturing the objects as raw JSON in the same pass. A body that
/// pass refuses is read again without them: a whole-review problem is named as before, and
/// one inside the objects is left for [`read`] to name against the objects' own types.
fn read_envelope(body: &[u8]) -> Result<(Envelope<Route>, Objects<'_>), ReviewError> {
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
fn read<K>(
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

fn namespace_of<'a, K>(
    req: &'a Request<K>,
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &'a str {
    req.namespace
        .as_deref()
        .or(meta.namespace.as_deref())
        .unwrap_or("default")
}

/// An allowing response for the review with this uid (apiVersion and kind are v1's).
fn allowed(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::success();
    response
}

fn invalid(parsed: &mut Parsed, message: String) {
    invalid_response(&mut parsed.response, &mut parsed.summary, message);
}

fn invalid_response(response: &mut AdmissionResponse, summary: &mut Summary, message: String) {
    tracing::warn!(uid = %summary.uid, %message, "invalid review");
    response.allowed = false;
    response.result = Status::failure(&message, "BadRequest").with_code(400);
    summary.decision = Decision::Invalid;
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Today's date in UTC, for `stsguard.io/exempt-until`.
pub fn today() -> Date {
    Timestamp::now().to_zoned(TimeZone::UTC).date()
}
