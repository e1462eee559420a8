//! `sts-inject-volume-claim-templates`: a volumeClaimTemplate for every volumeMount that names
//! neither a pod volume nor a template.

use json_patch::PatchOperation;
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{Map, Value, json};

use super::Defaults;
use super::{Apply, Mutator, add};
use crate::rules::unresolved_mounts;

pub(super) const MUTATOR: Mutator = Mutator {
    id: "sts-inject-volume-claim-templates",
    summary: "adds a volumeClaimTemplate (from defaults.volumeClaimTemplate) for each \
              volumeMount that names no pod volume and no template",
    why: "Without it the API server rejects the StatefulSet; with it each pod gets its own \
          persistent volume under the mount's name.",
    default_enabled: true,
    mutable_fields_only: false,
    apply: Apply::StatefulSet(apply),
};

fn apply(sts: &StatefulSet, defaults: &Defaults) -> Vec<PatchOperation> {
    let templates: Vec<Value> = unresolved_mounts(sts)
        .iter()
        .map(|m| template(m.volume, defaults))
        .collect();
    if templates.is_empty() {
        return vec![];
    }
    let has_list = sts
        .spec
        .as_ref()
        .is_some_and(|s| s.volume_claim_templates.is_some());
    if has_list {
        templates
            .into_iter()
            .map(|t| add(&["spec", "volumeClaimTemplates", "-"], t))
            .collect()
    } else {
        vec![add(
            &["spec", "volumeClaimTemplates"],
            Value::Array(templates),
        )]
    }
}

/// A volumeClaimTemplate named `name` with the policy's defaults.
fn template(name: &str, defaults: &Defaults) -> Value {
    let d = &defaults.volume_claim_template;
    let mut spec = Map::new();
    spec.insert("accessModes".into(), json!(d.access_modes));
    spec.insert(
        "resources".into(),
        json!({"requests": {"storage": d.storage}}),
    );
    if let Some(class) = &d.storage_class_name {
        spec.insert("storageClassName".into(), json!(class));
    }
    if let Some(mode) = &d.volume_mode {
        spec.insert("volumeMode".into(), json!(mode));
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        mutate::{Mutation, VolumeClaimTemplateDefaults, tests::apply as apply_patch},
        rules::testing::sts,
    };

    fn run(built: &StatefulSet, defaults: &Defaults) -> StatefulSet {
        let patch = apply(built, defaults);
        apply_patch(
            built,
            &Mutation {
                patch,
                applied: vec![],
            },
        )
    }

    #[test]
    fn creates_the_list_when_there_is_none() {
        let built = sts().remove("/spec/volumeClaimTemplates").build();
        let patched = run(&built, &Defaults::default());
        let templates = patched.spec.unwrap().volume_claim_templates.unwrap();
        assert_eq!(templates.len(), 1);
        assert_eq!(templates[0].metadata.name.as_deref(), Some("data"));
        let spec = templates[0].spec.as_ref().unwrap();
        assert_eq!(
            spec.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "1Gi"
        );
        assert!(spec.storage_class_name.is_none());
    }

    #[test]
    fn appends_to_an_existing_list_with_class_and_mode() {
        let built = sts()
            .set(
                "/spec/template/spec/containers/0/volumeMounts/-",
                json!({"name": "wal", "mountPath": "/wal"}),
            )
            .build();
        let defaults = Defaults {
            volume_claim_template: VolumeClaimTemplateDefaults {
                access_modes: vec!["ReadWriteOncePod".into()],
                storage: "5Gi".into(),
                storage_class_name: Some("fast".into()),
                volume_mode: Some("Filesystem".into()),
            },
        };
        let patched = run(&built, &defaults);
        let templates = patched.spec.unwrap().volume_claim_templates.unwrap();
        let names: Vec<_> = templates
            .iter()
            .map(|t| t.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["data", "wal"]);
        let wal = templates[1].spec.as_ref().unwrap();
        assert_eq!(wal.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(wal.volume_mode.as_deref(), Some("Filesystem"));
    }

    #[test]
    fn resolved_mounts_need_nothing() {
        assert!(apply(&sts().build(), &Defaults::default()).is_empty());
    }
}
