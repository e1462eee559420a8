//! `svc-delete-governing-service`: deleting a Service that StatefulSets name as their governing
//! Service takes their pods' DNS names away.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use super::{Action, Case, Check, Context, DEFAULT_CASE, Finding, Rule, Target, clip};
use crate::lookup::{Fact, StatefulSetFacts};

pub(super) const RULE: Rule = Rule {
    id: "svc-delete-governing-service",
    target: Target::Service,
    cases: &[Case {
        name: DEFAULT_CASE,
        default: Action::Warn,
    }],
    needs_lookup: true,
    summary: "a Service being deleted is not the governing Service of a StatefulSet in its \
              namespace (judged on DELETE)",
    why: "The pods of a StatefulSet get their stable DNS names (web-0.web.ns.svc) from its \
          governing Service; deleting it removes those names until a headless Service of that \
          name exists again. Deny it in the policy to protect governing Services from deletion.",
    fix: "Recreate a headless Service of the same name, or delete the StatefulSets first \
          (kubectl delete statefulset <name>), or point their spec.serviceName elsewhere.",
    check: Check::ServiceDelete(check),
};

fn check(svc: &Service, ctx: &Context) -> Vec<Finding> {
    let Some(name) = svc.metadata.name.as_deref() else {
        return vec![];
    };
    let Fact::Found(governed) = ctx.lookup.statefulsets_naming(ctx.namespace, name) else {
        return vec![];
    };
    if governed.is_empty() {
        return vec![];
    }
    vec![Finding::new(
        "metadata.name",
        format!(
            "deleting Service {:?} leaves StatefulSet {} without its governing Service: their \
             pods lose their stable DNS names until a headless Service of that name exists again",
            clip(name),
            listed(&governed)
        ),
    )]
}

/// At most a few names: a namespace can hold many StatefulSets naming one Service.
fn listed(governed: &[Arc<StatefulSetFacts>]) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<String> = governed
        .iter()
        .take(SHOWN)
        .map(|s| format!("{:?}", clip(&s.name)))
        .collect();
    if governed.len() > SHOWN {
        names.push(format!("and {} more", governed.len() - SHOWN));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lookup::{InMemory, NoLookup},
        rules::{Settings, testing::sts},
    };

    fn service(name: &str) -> Service {
        let mut svc = Service::default();
        svc.metadata.name = Some(name.into());
        svc
    }

    fn check_with(facts: &dyn crate::lookup::Lookup) -> Vec<Finding> {
        let settings = Settings::default();
        let ctx = Context {
            namespace: "ns",
            lookup: facts,
            settings: &settings,
        };
        check(&service("web"), &ctx)
    }

    #[test]
    fn deleting_a_governing_service_names_the_statefulsets() {
        let facts = InMemory::new().with_statefulset("ns", sts().build());
        let found = check_with(&facts);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("leaves StatefulSet \"web\""),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn other_services_and_unknown_facts_pass() {
        assert!(check_with(&InMemory::new()).is_empty());
        assert!(check_with(&NoLookup).is_empty());
    }

    #[test]
    fn many_statefulsets_are_listed_briefly() {
        let mut facts = InMemory::new();
        for i in 0..8 {
            facts.add_statefulset(
                "ns",
                sts()
                    .set("/metadata/name", serde_json::json!(format!("db-{i}")))
                    .build(),
            );
        }
        let found = check_with(&facts);
        assert!(
            found[0].message.contains("and 3 more"),
            "{}",
            found[0].message
        );
    }
}
