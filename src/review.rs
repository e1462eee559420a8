//! AdmissionReview in, AdmissionReview out: routes a review on its kind, operation and
//! subresource, hands the object to the admission chain (`admit`), and answers. No I/O here but
//! the live confirmation of cluster facts; the server and tests call [`Reviewer::review`].
//!
//! Reading the body is `wire`, shaping the answer is `response`; this file only orchestrates.

use std::{fmt, future::Future, sync::Arc};

use jiff::civil::Date;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service};
use kube::core::admission::{AdmissionResponse, Operation as WireOperation};

use crate::{
    admit::Chain,
    lookup::{Confirmed, Lookup, Need, WithConfirmed},
    mutate::{MUTATORS, Mutator},
    policy::{Policy, PolicySlot},
    rules::Action,
    subject::{self, Operation, Subject, Target},
    time,
};

mod response;
mod scaffold;
mod wire;

pub use response::{Answer, MAX_WARNING_CHARS, SKIPPED_NOTE, WARNING_BUDGET, warnings};
pub use scaffold::admission_review;
pub use wire::{API_VERSION, KIND, ReviewError};
use wire::{Objects, Request, read, read_envelope};

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

/// How a review was answered, for the log line and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Warned,
    Denied,
    Mutated,
    /// Not reviewed: CONNECT, subresources, kinds stsguard does not know, deletions of what no
    /// rule judges.
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
    pub violations: Vec<(&'static str, Action)>,
    /// Enabled rules skipped for want of cluster facts.
    pub skipped: Vec<&'static str>,
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
}

impl Typed {
    /// The object the chain judges (on DELETE the one being deleted), its old object, and what
    /// happens to it.
    fn subjects(&self) -> Option<(Subject<'_>, Option<Subject<'_>>, Operation)> {
        fn of<'a, K>(
            req: &'a Request<K>,
            wrap: fn(&'a K) -> Subject<'a>,
        ) -> Option<(Subject<'a>, Option<Subject<'a>>, Operation)> {
            match req.operation {
                WireOperation::Delete => {
                    Some((wrap(req.old_object.as_ref()?), None, Operation::Delete))
                }
                WireOperation::Update => Some((
                    wrap(req.object.as_ref()?),
                    req.old_object.as_ref().map(wrap),
                    Operation::Update,
                )),
                // Anything else that writes the object is a creation.
                _ => Some((wrap(req.object.as_ref()?), None, Operation::Create)),
            }
        }
        match self {
            Typed::Done => None,
            Typed::StatefulSet(req) => of(req, Subject::StatefulSet),
            Typed::Service(req) => of(req, Subject::Service),
        }
    }

    fn namespace(&self) -> Option<&str> {
        match self {
            Typed::StatefulSet(req) => req.namespace.as_deref(),
            Typed::Service(req) => req.namespace.as_deref(),
            Typed::Done => None,
        }
    }
}

/// The namespace of an object under review: the request's, else the object's own.
fn namespace<'a>(request: Option<&'a str>, subject: &Subject<'a>) -> &'a str {
    request
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| subject::namespace(subject.metadata(), "default"))
}

impl Parsed {
    /// The namespace and cross-object fact the decision will depend on, if any.
    fn need(&self) -> Option<(String, Need<'_>)> {
        let (subject, _, _) = self.request.subjects()?;
        let ns = namespace(self.request.namespace(), &subject).to_owned();
        match (subject, &self.request) {
            (Subject::StatefulSet(sts), _) => Some((
                ns,
                Need::Service {
                    name: subject::governing_service(sts)?,
                    statefulset: sts,
                },
            )),
            (Subject::Service(svc), Typed::Service(req)) => {
                let name = svc.metadata.name.as_deref().filter(|n| !n.is_empty())?;
                let object = match req.operation {
                    WireOperation::Delete => None,
                    _ => req.object.as_ref(),
                };
                Some((
                    ns,
                    Need::Naming {
                        name,
                        object,
                        old: req.old_object.as_ref(),
                    },
                ))
            }
            _ => None,
        }
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
        Ok(self.answer(endpoint, parsed, time::today()).await)
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
        let name = if head.name.is_empty() {
            "<generated>".to_owned()
        } else {
            head.name.clone()
        };
        let namespace = head.namespace.clone().unwrap_or_default();
        // No span per review: creating one cost about 4 % of the webhook's CPU under load
        // (BENCHMARKS.md). The few lines logged while a review is answered (an invalid object, a
        // rule that failed, a failed live lookup) carry its uid themselves.
        let mut parsed = Parsed {
            summary: Summary {
                uid: uid.clone(),
                kind: gvk.kind.clone(),
                namespace,
                name,
                operation: operation_name(&operation),
                sub_resource: head.sub_resource.clone(),
                dry_run: head.dry_run,
                decision: Decision::Skipped,
                rules: vec![],
                violations: vec![],
                skipped: vec![],
            },
            response: response::allowed(&uid),
            request: Typed::Done,
        };
        if head.sub_resource.is_some() || operation == WireOperation::Connect {
            return Ok(parsed);
        }
        let target = match Target::of(&gvk.group, &gvk.kind) {
            Some(target) => target,
            None => {
                let (group, kind) = (gvk.group.as_str(), gvk.kind.as_str());
                if operation != WireOperation::Delete {
                    let gk = if group.is_empty() {
                        kind.to_owned()
                    } else {
                        format!("{group}/{kind}")
                    };
                    tracing::warn!(
                        uid = parsed.summary.uid.as_str(),
                        kind = %gk,
                        "review of a kind stsguard does not check"
                    );
                    parsed.response.warnings = Some(vec![format!(
                        "stsguard reviews apps/StatefulSet and Service, not {gk}; allowed \
                         unchecked (check the webhook configuration's rules)"
                    )]);
                }
                return Ok(parsed);
            }
        };
        // A deletion is only read when a rule of its kind could judge it, and then only for
        // warnings' sake an unreadable old object is no error.
        if operation == WireOperation::Delete {
            if endpoint == Endpoint::Mutate || !self.judges_deletion(target) {
                return Ok(parsed);
            }
            if let Ok(typed) = typed(target, body, objects, &head.namespace, &operation) {
                parsed.request = typed;
            }
            return Ok(parsed);
        }
        match typed(target, body, objects, &head.namespace, &operation) {
            Ok(typed) => parsed.request = typed,
            Err(message) => response::invalid(&mut parsed.response, &mut parsed.summary, message),
        }
        Ok(parsed)
    }

    /// Whether any enabled rule judges the deletion of this kind.
    fn judges_deletion(&self, target: Target) -> bool {
        let policy = self.policy.get();
        crate::rules::RULES.iter().any(|r| {
            r.target == target
                && r.check.judges(Operation::Delete)
                && policy.strongest_action(r) != Action::Off
        })
    }

    /// Gathers the cluster facts a parsed review depends on (confirming with the API server
    /// what the cache says is absent), then decides.
    // Not an `async fn`: one keeps its arguments twice in its state (rust-lang/rust#62958), and
    // `Parsed` is most of the review's future, which is copied whenever it moves.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    pub fn answer(
        &self,
        endpoint: Endpoint,
        parsed: Parsed,
        today: Date,
    ) -> impl Future<Output = Answer> + Send + '_ {
        async move {
            let confirmed = self.confirm(endpoint, &parsed).await;
            let facts = WithConfirmed {
                base: self.lookup.as_ref(),
                confirmed,
            };
            self.decide(endpoint, parsed, &facts, today)
        }
    }

    async fn confirm(&self, endpoint: Endpoint, parsed: &Parsed) -> Confirmed {
        // Mutation needs facts only for Service mutators; StatefulSet mutators need none.
        let needs_facts = match (&parsed.request, endpoint) {
            (_, Endpoint::Validate) => true,
            (Typed::Service(_), Endpoint::Mutate) => mutates(&self.policy.get(), Target::Service),
            _ => false,
        };
        let confirmed = match parsed.need() {
            Some((namespace, need)) if needs_facts => self.lookup.confirm(&namespace, need).await,
            _ => Confirmed::default(),
        };
        // Debug: during an outage this is every review; the cluster logs the outage once.
        if let Some(failed) = &confirmed.failed {
            tracing::debug!(
                uid = parsed.summary.uid.as_str(),
                namespace = failed.namespace,
                name = failed.name,
                kind = failed.kind,
                why = failed.why,
                "could not confirm a cached fact with the API server; using the cache"
            );
        }
        confirmed
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
        let chain = Chain {
            policy: &policy,
            lookup: facts,
            today,
        };
        match request.subjects() {
            None if !matches!(request, Typed::Done) => response::invalid(
                &mut response,
                &mut summary,
                "request.object is missing".to_owned(),
            ),
            None => {}
            Some((object, old, operation)) => {
                let request = crate::admit::Request {
                    operation,
                    namespace: namespace(request.namespace(), &object),
                    object,
                    old,
                };
                match endpoint {
                    Endpoint::Validate => {
                        let verdict = chain.validate(&request);
                        response::judge(&object, &verdict, &mut response, &mut summary);
                    }
                    Endpoint::Mutate => {
                        response::patch(&mut response, &mut summary, chain.mutate(&request));
                    }
                }
            }
        }
        Answer { response, summary }
    }
}

/// Whether any enabled mutator changes objects of this kind.
fn mutates(policy: &Policy, target: Target) -> bool {
    MUTATORS
        .iter()
        .any(|m: &Mutator| m.target() == target && policy.mutator_enabled(m.id))
}

/// The request's objects read as the target's type.
fn typed(
    target: Target,
    body: &[u8],
    objects: Objects,
    namespace: &Option<String>,
    operation: &WireOperation,
) -> Result<Typed, String> {
    Ok(match target {
        Target::StatefulSet => {
            Typed::StatefulSet(Box::new(read(body, objects, namespace, operation)?))
        }
        Target::Service => Typed::Service(Box::new(read(body, objects, namespace, operation)?)),
    })
}

fn operation_name(op: &WireOperation) -> &'static str {
    match op {
        WireOperation::Create => "CREATE",
        WireOperation::Update => "UPDATE",
        WireOperation::Delete => "DELETE",
        WireOperation::Connect => "CONNECT",
    }
}

#[cfg(test)]
mod tests;
