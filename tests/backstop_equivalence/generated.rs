//! Generated StatefulSets for the equivalence test: each knob picks among values that pass and
//! values that violate a rule, including the edges (empty strings, empty lists, whitespace around
//! ids, unknown ids, every selector operator).

use proptest::prelude::*;
use serde_json::{Value, json};

pub(crate) fn pick<T: Clone + std::fmt::Debug + 'static>(
    options: Vec<T>,
) -> impl Strategy<Value = T> {
    prop::sample::select(options)
}

fn container() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::collection::vec(pick(vec!["data", "config", "logs", "cache"]), 0..3),
    )
        .prop_map(|(probe, mounts)| {
            let mut c = json!({"name": "c", "image": "x"});
            if probe {
                c["readinessProbe"] = json!({"tcpSocket": {"port": 1}});
            }
            if !mounts.is_empty() {
                c["volumeMounts"] = mounts
                    .iter()
                    .map(|m| json!({"name": m, "mountPath": format!("/{m}")}))
                    .collect();
            }
            c
        })
}

fn template() -> impl Strategy<Value = Value> {
    (
        pick(vec![None, Some("data"), Some("logs")]),
        pick(vec![json!(null), json!([]), json!(["ReadWriteOnce"])]),
        pick(vec![
            json!(null),
            json!({}),
            json!({"storage": "1Gi"}),
            json!({"storage": ""}),
            json!({"storage": " \u{a0}"}),
            json!({"cpu": "1"}),
        ]),
        prop::collection::btree_set(
            pick(vec![
                "helm.sh/chart",
                "app",
                "chart",
                "app.kubernetes.io/version",
                "version",
            ]),
            0..3,
        ),
    )
        .prop_map(|(name, modes, requests, labels)| {
            let mut t = json!({"metadata": {}, "spec": {}});
            if let Some(name) = name {
                t["metadata"]["name"] = json!(name);
            }
            if !labels.is_empty() {
                t["metadata"]["labels"] = labels
                    .iter()
                    .map(|l| (l.to_string(), json!("v1")))
                    .collect();
            }
            if !modes.is_null() {
                t["spec"]["accessModes"] = modes;
            }
            if !requests.is_null() {
                t["spec"]["resources"] = json!({"requests": requests});
            }
            t
        })
}

prop_compose! {
    pub(crate) fn statefulset()(
        service_name in pick(vec![
            json!(null), json!(""), json!("web"), json!("Web"), json!("web-"), json!("1web"),
            json!("a"), json!("x".repeat(63)), json!("x".repeat(64)), json!("wéb"), json!("web.db"),
        ]),
        replicas in pick(vec![json!(null), json!(0), json!(1), json!(3)]),
        match_labels in pick(vec![json!(null), json!({}), json!({"app": "web"}), json!({"app": "db"})]),
        match_expressions in pick(vec![
            json!(null), json!([]),
            json!([{"key": "app", "operator": "In", "values": ["web", "x"]}]),
            json!([{"key": "app", "operator": "In", "values": ["x"]}]),
            json!([{"key": "app", "operator": "In"}]),
            json!([{"key": "app", "operator": "NotIn", "values": ["web"]}]),
            json!([{"key": "tier", "operator": "NotIn", "values": ["web"]}]),
            json!([{"key": "app", "operator": "Exists"}]),
            json!([{"key": "app", "operator": "DoesNotExist"}]),
            json!([{"key": "zz", "operator": "DoesNotExist"}]),
            json!([{"key": "app", "operator": "Bogus"}]),
        ]),
        pod_labels in pick(vec![json!(null), json!({}), json!({"app": "web"}), json!({"app": "web", "tier": "db"})]),
        containers in prop::collection::vec(container(), 0..3),
        init in prop::collection::vec(container(), 0..2),
        volumes in pick(vec![json!(null), json!([]), json!([{"name": "config", "emptyDir": {}}])]),
        templates in pick(vec![None, Some(0usize), Some(1), Some(2)]),
        template_list in prop::collection::vec(template(), 2),
        strategy in pick(vec![
            json!(null), json!({"type": "OnDelete"}), json!({"type": "RollingUpdate"}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 3}}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 5}}),
        ]),
        grace in pick(vec![json!(null), json!(0), json!(30)]),
        pmp in pick(vec![json!(null), json!("Parallel"), json!("OrderedReady")]),
        retention in pick(vec![
            json!(null), json!({"whenDeleted": "Delete", "whenScaled": "Retain"}),
            json!({"whenDeleted": "Retain", "whenScaled": "Delete"}),
            json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        ]),
        affinity in pick(vec![
            json!(null), json!({"podAntiAffinity": {}}),
            json!({"nodeAffinity": {}}),
        ]),
        spread in pick(vec![json!(null), json!([]), json!([{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}])]),
        exempt in pick(vec![
            None, Some(""), Some("*"), Some("sts-service-name"),
            Some("sts-readiness-probe, sts-update-strategy"), Some(" sts-selector-labels\u{a0}"),
            Some("sts-nope"), Some("sts-service-name,sts-typo"), Some(",,*,"),
            Some("sts-complete-volume-claim-templates"), Some("sts-volume-mounts,sts-vct-volatile-labels,sts-pvc-retention"),
            Some("sts-volume-claim-templates ,sts-pod-anti-affinity, sts-termination-grace"),
            Some("*sts-service-name"), Some("sts-service-name sts-readiness-probe"),
        ]),
        until in pick(vec![None, Some("2099-12-31")]),
    ) -> Value {
        let mut spec = json!({
            "selector": {},
            "template": {"metadata": {}, "spec": {}},
        });
        if !service_name.is_null() { spec["serviceName"] = service_name; }
        if !replicas.is_null() { spec["replicas"] = replicas; }
        if !match_labels.is_null() { spec["selector"]["matchLabels"] = match_labels; }
        if !match_expressions.is_null() { spec["selector"]["matchExpressions"] = match_expressions; }
        if !pod_labels.is_null() { spec["template"]["metadata"]["labels"] = pod_labels; }
        spec["template"]["spec"]["containers"] = json!(containers);
        if !init.is_empty() { spec["template"]["spec"]["initContainers"] = json!(init); }
        if !volumes.is_null() { spec["template"]["spec"]["volumes"] = volumes; }
        if !grace.is_null() { spec["template"]["spec"]["terminationGracePeriodSeconds"] = grace; }
        if !affinity.is_null() { spec["template"]["spec"]["affinity"] = affinity; }
        if !spread.is_null() { spec["template"]["spec"]["topologySpreadConstraints"] = spread; }
        if let Some(n) = templates { spec["volumeClaimTemplates"] = json!(template_list[..n]); }
        if !strategy.is_null() { spec["updateStrategy"] = strategy; }
        if !pmp.is_null() { spec["podManagementPolicy"] = pmp; }
        if !retention.is_null() { spec["persistentVolumeClaimRetentionPolicy"] = retention; }
        let mut annotations = serde_json::Map::new();
        if let Some(exempt) = exempt { annotations.insert("stsguard.io/exempt".into(), json!(exempt)); }
        if let Some(until) = until { annotations.insert("stsguard.io/exempt-until".into(), json!(until)); }
        let mut metadata = json!({"name": "web"});
        if !annotations.is_empty() { metadata["annotations"] = Value::Object(annotations); }
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata, "spec": spec})
    }
}
