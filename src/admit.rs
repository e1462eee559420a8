//! The one admission chain: classify the object, apply the API server's defaulting that matters
//! to the rules, run the enabled mutators, then `evaluate`.
//!
//! Every entry point goes through it. The webhook's `/mutate` runs it up to the mutators and its
//! `/validate` runs the evaluation, because the API server applies the mutating webhook's patch
//! between the two calls; `stsguard audit` runs it whole over manifests, and `stsguard mutate`
//! up to the mutators. None of them keeps a step of its own.

use std::sync::Arc;

use jiff::civil::Date;
use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy},
    core::v1::Service,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{
    evaluate::{Input, Verdict, evaluate},
    exemption::ObjectExemption,
    lookup::Lookup,
    mutate::{self, MUTATORS, Mutation, Mutator},
    policy::Policy,
    subject::{Object, Operation, Subject},
};

/// What a document is to stsguard.
pub enum Classified {
    Object(Object),
    /// A StatefulSet of a removed beta API version, read as apps/v1, with a note saying so.
    Legacy(Object, String),
    /// Another kind; stsguard does not judge it.
    Other,
    /// A StatefulSet or Service that does not read as one: what is wrong, and the path of the
    /// field it is wrong at (`spec.replicas`) when there is one.
    Invalid {
        message: String,
        path: Option<String>,
    },
}

/// StatefulSet API versions read as `apps/v1`; the old beta ones still appear in repositories.
const STATEFULSET_VERSIONS: &[&str] = &["apps/v1", "apps/v1beta2", "apps/v1beta1"];

/// A document's apiVersion and kind.
fn type_of(value: &Value) -> (&str, &str) {
    let field = |name| value.get(name).and_then(Value::as_str).unwrap_or_default();
    (field("apiVersion"), field("kind"))
}

/// Whether stsguard judges documents of this apiVersion and kind (what [`classify`] reads).
pub fn judges(value: &Value) -> bool {
    match type_of(value) {
        (api_version, "StatefulSet") => STATEFULSET_VERSIONS.contains(&api_version),
        (api_version, "Service") => api_version == "v1",
        _ => false,
    }
}

/// Reads a document's apiVersion and kind and deserializes what stsguard judges.
pub fn classify(value: &Value) -> Classified {
    let (api_version, kind) = type_of(value);
    match kind {
        "StatefulSet" if STATEFULSET_VERSIONS.contains(&api_version) => {
            let read = if api_version == "apps/v1" {
                typed::<StatefulSet>(value)
            } else {
                // The typed StatefulSet accepts only apps/v1; the beta versions' fields read the
                // same.
                let mut value = value.clone();
                value["apiVersion"] = Value::from("apps/v1");
                typed::<StatefulSet>(&value)
            };
            match read {
                Ok(sts) if api_version == "apps/v1" => {
                    Classified::Object(Object::StatefulSet(Arc::new(sts)))
                }
                Ok(sts) => Classified::Legacy(
                    Object::StatefulSet(Arc::new(sts)),
                    format!(
                        "{api_version} is no longer served (removed in Kubernetes 1.16); audited \
                         as apps/v1, which also requires spec.selector"
                    ),
                ),
                Err(e) => invalid(&format!("{api_version} StatefulSet"), e),
            }
        }
        "Service" if api_version == "v1" => match typed::<Service>(value) {
            Ok(svc) => Classified::Object(Object::Service(Arc::new(svc))),
            Err(e) => invalid("v1 Service", e),
        },
        _ => Classified::Other,
    }
}

/// The object read as `K`; an error knows the path of the field it is about.
fn typed<K: DeserializeOwned>(
    value: &Value,
) -> Result<K, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

fn invalid(what: &str, error: serde_path_to_error::Error<serde_json::Error>) -> Classified {
    let path = error.path().to_string();
    let path = (path != ".").then_some(path);
    let message = match &path {
        Some(path) => format!("not a valid {what}: {path}: {}", error.inner()),
        None => format!("not a valid {what}: {}", error.inner()),
    };
    Classified::Invalid { message, path }
}

/// The defaulting the API server applies to every object it decodes, before any webhook sees
/// it, where it matters to the rules and mutators: a StatefulSet without
/// `persistentVolumeClaimRetentionPolicy` gets Retain/Retain. Objects sent by the API server
/// already carry it, so for the webhook this changes nothing; manifests on disk get what the
/// cluster would store.
pub fn default(object: Object) -> Object {
    let Object::StatefulSet(sts) = &object else {
        return object;
    };
    let unset = sts
        .spec
        .as_ref()
        .is_some_and(|s| s.persistent_volume_claim_retention_policy.is_none());
    if !unset {
        return object;
    }
    let mut sts = sts.as_ref().clone();
    if let Some(spec) = sts.spec.as_mut() {
        spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_owned()),
                when_scaled: Some("Retain".to_owned()),
            });
    }
    Object::StatefulSet(Arc::new(sts))
}

/// One object under admission, after defaulting.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The namespace the object lives in (see `subject::namespace`).
    pub namespace: &'a str,
    /// The object; on DELETE, the object being deleted.
    pub object: Subject<'a>,
    /// The object an UPDATE replaces.
    pub old: Option<Subject<'a>>,
}

/// The chain's settings for one review or one audit: the policy, where cross-object facts come
/// from, and the date that decides whether an `exempt-until` has passed.
#[derive(Clone, Copy)]
pub struct Chain<'a> {
    pub policy: &'a Policy,
    pub lookup: &'a dyn Lookup,
    pub today: Date,
}

/// An object that went through the whole chain.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The object as it would be stored: defaulted and mutated.
    pub object: Object,
    pub mutation: Mutation,
    pub verdict: Verdict,
}

impl Chain<'_> {
    /// The mutators this request runs: enabled by the policy, not exempted by the object's
    /// annotations or its namespace, and on UPDATE only those that touch mutable fields. Nothing
    /// runs on DELETE.
    pub fn mutators(&self, request: &Request) -> Vec<&'static Mutator> {
        if request.operation == Operation::Delete {
            return vec![];
        }
        let exemption = ObjectExemption::of(&request.object, self.today);
        MUTATORS
            .iter()
            .filter(|m| {
                m.target() == request.object.target()
                    && self.policy.mutator_enabled(m.id)
                    && (request.operation == Operation::Create || m.mutable_fields_only)
                    && exemption.covers_mutator(m.id).is_none()
                    && self
                        .policy
                        .namespace_mutator_exemption(request.namespace, m.id)
                        .is_none()
            })
            .collect()
    }

    /// What the mutating webhook changes: a JSON Patch against the object as given.
    pub fn mutate(&self, request: &Request) -> Mutation {
        let mutators = self.mutators(request);
        if mutators.is_empty() {
            return Mutation::default();
        }
        mutate::run(
            request.object,
            request.namespace,
            &self.policy.defaults,
            self.lookup,
            mutators,
        )
    }

    /// The verdict the validating webhook gives.
    pub fn validate(&self, request: &Request) -> Verdict {
        let input = Input {
            subject: request.object,
            old: request.old,
            namespace: request.namespace,
            operation: request.operation,
        };
        evaluate(&input, self.lookup, self.policy, self.today)
    }

    /// Mutates `object` (defaulted already) and returns it as the API server would store it,
    /// with the mutation. A patch that does not apply to its own object would be a mutator bug:
    /// the object is then kept as it was, so that it is still judged rather than lost.
    pub fn mutated(
        &self,
        operation: Operation,
        namespace: &str,
        object: Object,
        old: Option<&Object>,
    ) -> (Object, Mutation) {
        let request = Request {
            operation,
            namespace,
            object: object.subject(),
            old: old.map(Object::subject),
        };
        let mutation = self.mutate(&request);
        if mutation.is_empty() {
            return (object, mutation);
        }
        match patched(&object, &mutation) {
            Some(mutated) => (mutated, mutation),
            None => {
                tracing::error!(
                    mutators = ?mutation.applied,
                    "a mutation does not apply to its own object; judged unmutated"
                );
                (object, Mutation::default())
            }
        }
    }

    /// The whole chain for one object: defaulting, mutation, evaluation of the result.
    pub fn admit(
        &self,
        operation: Operation,
        namespace: &str,
        object: Object,
        old: Option<Object>,
    ) -> Admitted {
        let old = old.map(default);
        let (object, mutation) = self.mutated(operation, namespace, default(object), old.as_ref());
        let verdict = self.validate(&Request {
            operation,
            namespace,
            object: object.subject(),
            old: old.as_ref().map(Object::subject),
        });
        Admitted {
            object,
            mutation,
            verdict,
        }
    }
}

/// The object with the patch applied, read back as its type.
fn patched(object: &Object, mutation: &Mutation) -> Option<Object> {
    fn apply<K: serde::Serialize + DeserializeOwned>(object: &K, mutation: &Mutation) -> Option<K> {
        let mut value = serde_json::to_value(object).ok()?;
        json_patch::patch(&mut value, &mutation.patch).ok()?;
        serde_json::from_value(value).ok()
    }
    Some(match object {
        Object::StatefulSet(sts) => Object::StatefulSet(Arc::new(apply(sts.as_ref(), mutation)?)),
        Object::Service(svc) => Object::Service(Arc::new(apply(svc.as_ref(), mutation)?)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        lookup::{InMemory, NoLookup},
        rules::testing::sts,
    };

    fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    fn chain<'a>(policy: &'a Policy, lookup: &'a dyn Lookup) -> Chain<'a> {
        Chain {
            policy,
            lookup,
            today: today(),
        }
    }

    fn request<'a>(operation: Operation, object: &'a StatefulSet) -> Request<'a> {
        Request {
            operation,
            namespace: "ns",
            object: Subject::StatefulSet(object),
            old: None,
        }
    }

    #[test]
    fn defaulting_sets_what_the_api_server_sets_and_nothing_else() {
        let bare = Object::StatefulSet(Arc::new(sts().build()));
        let Object::StatefulSet(defaulted) = default(bare) else {
            unreachable!()
        };
        let retention = defaulted
            .spec
            .as_ref()
            .unwrap()
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        let explicit = sts()
            .set(
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Delete"}),
            )
            .build();
        let Object::StatefulSet(kept) = default(Object::StatefulSet(Arc::new(explicit.clone())))
        else {
            unreachable!()
        };
        assert_eq!(*kept, explicit);
    }

    #[test]
    fn updates_run_only_mutators_of_mutable_fields() {
        let bare = sts().remove("/spec/volumeClaimTemplates").build();
        let policy = Policy::builtin();
        let create = chain(&policy, &NoLookup).mutate(&request(Operation::Create, &bare));
        assert_eq!(create.applied, ["sts-inject-volume-claim-templates"]);
        let update = chain(&policy, &NoLookup).mutate(&request(Operation::Update, &bare));
        assert!(update.is_empty(), "{update:?}");
        let delete = chain(&policy, &NoLookup).mutate(&request(Operation::Delete, &bare));
        assert!(delete.is_empty(), "{delete:?}");
    }

    #[test]
    fn disabled_or_named_mutators_do_not_run_but_a_star_leaves_them_on() {
        let bare = sts().remove("/spec/volumeClaimTemplates").build();
        let policy = Policy::from_yaml(
            "exemptions: [{namespaces: [ns], rules: [sts-inject-volume-claim-templates], reason: byo}]",
            "t",
        )
        .unwrap();
        let m = chain(&policy, &NoLookup).mutate(&request(Operation::Create, &bare));
        assert!(m.is_empty(), "{m:?}");
        let disabled =
            Policy::from_yaml("mutators: {sts-inject-volume-claim-templates: false}", "t").unwrap();
        let m = chain(&disabled, &NoLookup).mutate(&request(Operation::Create, &bare));
        assert!(m.is_empty(), "{m:?}");

        // `*` exempts from the rules; the fixes stay on, so the object is still complete.
        let starred = sts()
            .remove("/spec/volumeClaimTemplates")
            .set("/metadata/annotations", json!({"stsguard.io/exempt": "*"}))
            .build();
        let everything =
            Policy::from_yaml("exemptions: [{namespaces: [ns], reason: legacy}]", "t").unwrap();
        for policy in [Policy::builtin(), everything] {
            let m = chain(&policy, &NoLookup).mutate(&request(Operation::Create, &starred));
            assert_eq!(m.applied, ["sts-inject-volume-claim-templates"]);
        }
    }

    #[test]
    fn the_whole_chain_judges_the_mutated_object() {
        // An incomplete template is denied as written, but the mutator completes it first.
        let incomplete = sts()
            .remove("/spec/volumeClaimTemplates/0/spec/accessModes")
            .build();
        let policy = Policy::builtin();
        let admitted = chain(&policy, &NoLookup).admit(
            Operation::Create,
            "ns",
            Object::StatefulSet(Arc::new(incomplete.clone())),
            None,
        );
        assert_eq!(
            admitted.mutation.applied,
            ["sts-complete-volume-claim-templates"]
        );
        assert!(admitted.verdict.allowed(), "{:?}", admitted.verdict);

        let off = Policy::from_yaml(
            "mutators: {sts-complete-volume-claim-templates: false}",
            "t",
        )
        .unwrap();
        let admitted = chain(&off, &NoLookup).admit(
            Operation::Create,
            "ns",
            Object::StatefulSet(Arc::new(incomplete)),
            None,
        );
        assert!(!admitted.verdict.allowed());
    }

    #[test]
    fn services_are_mutated_before_they_are_judged() {
        let policy = Policy::from_yaml("mutators: {svc-make-headless: true}", "t").unwrap();
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        let admitted = chain(&policy, &facts).admit(
            Operation::Create,
            "ns",
            Object::Service(Arc::new(svc.clone())),
            None,
        );
        assert_eq!(admitted.mutation.applied, ["svc-make-headless"]);
        assert!(admitted.verdict.allowed(), "{:?}", admitted.verdict);

        let admitted = chain(&Policy::builtin(), &facts).admit(
            Operation::Create,
            "ns",
            Object::Service(Arc::new(svc)),
            None,
        );
        assert_eq!(
            admitted.verdict.rule_ids(),
            ["svc-headless-for-statefulset"]
        );
    }

    #[test]
    fn classify_reads_beta_statefulsets_and_names_bad_ones() {
        let beta = json!({"apiVersion": "apps/v1beta2", "kind": "StatefulSet",
                          "metadata": {"name": "a"}, "spec": {}});
        assert!(matches!(classify(&beta), Classified::Legacy(..)));
        let bad = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                         "metadata": {"name": "a"}, "spec": {"replicas": "three"}});
        let Classified::Invalid { message, path } = classify(&bad) else {
            panic!("not invalid")
        };
        assert_eq!(
            message,
            "not a valid apps/v1 StatefulSet: spec.replicas: invalid type: string \"three\", \
             expected i32"
        );
        assert_eq!(path.as_deref(), Some("spec.replicas"));
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(matches!(classify(&other), Classified::Other));
    }
}
