//! `sts-complete-volume-claim-templates`: fills missing accessModes and storage requests in
//! existing volumeClaimTemplates.

use json_patch::PatchOperation;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::json;

use super::Defaults;
use super::{Apply, Mutator, add};

pub(super) const MUTATOR: Mutator = Mutator {
    id: "sts-complete-volume-claim-templates",
    summary: "fills a missing accessModes and resources.requests.storage in existing \
              volumeClaimTemplates from defaults.volumeClaimTemplate",
    why: "A template without them can never be turned into a claim, so the pods never start.",
    default_enabled: true,
    mutable_fields_only: false,
    apply: Apply::StatefulSet(apply),
};

fn apply(sts: &StatefulSet, defaults: &Defaults) -> Vec<PatchOperation> {
    let d = &defaults.volume_claim_template;
    let templates = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default();
    let mut ops = Vec::new();
    for (i, template) in templates.iter().enumerate() {
        let index = i.to_string();
        let at = |rest: &[&'static str]| spec_path(&index, rest);
        let Some(spec) = template.spec.as_ref() else {
            ops.push(add(
                &at(&[]),
                json!({"accessModes": d.access_modes,
                       "resources": {"requests": {"storage": d.storage}}}),
            ));
            continue;
        };
        if spec.access_modes.as_ref().is_none_or(Vec::is_empty) {
            ops.push(add(&at(&["accessModes"]), json!(d.access_modes)));
        }
        let storage = json!(d.storage);
        match spec.resources.as_ref() {
            None => ops.push(add(
                &at(&["resources"]),
                json!({"requests": {"storage": storage}}),
            )),
            Some(r) => match r.requests.as_ref() {
                None => ops.push(add(
                    &at(&["resources", "requests"]),
                    json!({"storage": storage}),
                )),
                Some(requests) if !requests.contains_key("storage") => {
                    ops.push(add(&at(&["resources", "requests", "storage"]), storage));
                }
                Some(_) => {}
            },
        }
    }
    ops
}

/// The tokens of `spec.volumeClaimTemplates[index].spec` followed by `rest`.
fn spec_path<'a>(index: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut tokens = vec!["spec", "volumeClaimTemplates", index, "spec"];
    tokens.extend_from_slice(rest);
    tokens
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        mutate::{Mutation, tests::apply as apply_patch},
        rules::testing::sts,
    };

    fn run(built: &StatefulSet) -> StatefulSet {
        let patch = apply(built, &Defaults::default());
        apply_patch(
            built,
            &Mutation {
                patch,
                applied: vec![],
            },
        )
    }

    #[test]
    fn fills_each_missing_level() {
        let built = sts()
            .set(
                "/spec/volumeClaimTemplates/-",
                json!({"metadata": {"name": "a"}}),
            )
            .set(
                "/spec/volumeClaimTemplates/-",
                json!({"metadata": {"name": "b"}, "spec": {"resources": {}}}),
            )
            .set(
                "/spec/volumeClaimTemplates/-",
                json!({"metadata": {"name": "c"},
                        "spec": {"accessModes": [], "resources": {"requests": {"cpu": "1"}}}}),
            )
            .build();
        let patched = run(&built);
        for template in patched.spec.unwrap().volume_claim_templates.unwrap() {
            let spec = template.spec.unwrap();
            assert!(!spec.access_modes.unwrap().is_empty());
            assert!(
                spec.resources
                    .unwrap()
                    .requests
                    .unwrap()
                    .contains_key("storage")
            );
        }
    }

    #[test]
    fn complete_templates_are_left_alone() {
        assert!(apply(&sts().build(), &Defaults::default()).is_empty());
        let two_ti = sts()
            .set(
                "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
                json!("2Ti"),
            )
            .build();
        assert!(apply(&two_ti, &Defaults::default()).is_empty());
    }
}
