//! A namespace's findings as a report object: `wgpolicyk8s.io/v1alpha2` PolicyReport or
//! `openreports.io/v1alpha1` Report, one result per violation, bounded in size, and a digest of
//! its content to tell whether a write would change anything.

use std::hash::{DefaultHasher, Hash, Hasher};

use clap::ValueEnum;
use serde_json::{Value, json};

use super::findings::{Entry, Key};

/// Which report API the reports are written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportApi {
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport (Kyverno, Policy Reporter, most tools today).
    PolicyReport,
    /// `openreports.io/v1alpha1` Report, where the ecosystem is moving.
    Openreports,
}

impl ReportApi {
    pub fn group(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "wgpolicyk8s.io",
            ReportApi::Openreports => "openreports.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "v1alpha2",
            ReportApi::Openreports => "v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "PolicyReport",
            ReportApi::Openreports => "Report",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::PolicyReport => "policyreports",
            ReportApi::Openreports => "reports",
        }
    }
}

/// The label on every report stsguard writes, by which a new leader finds them.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "stsguard");
/// Set when results were left out to keep the report under the size limit.
pub const TRUNCATED: &str = "stsguard.io/truncated";
/// Room for the results: etcd stores objects up to 1.5 MiB; the rest of the object (metadata,
/// managedFields, summary) stays well below the difference.
pub const MAX_RESULTS_BYTES: usize = 1024 * 1024;

/// A namespace's report name.
pub fn name(namespace: &str) -> String {
    format!("stsguard-{namespace}")
}

/// The report of a namespace's findings; `None` when it has none (no report should exist).
pub fn build<'a>(
    api: ReportApi,
    namespace: &str,
    entries: impl Iterator<Item = (&'a Key, &'a Entry)>,
    budget: usize,
) -> Option<Value> {
    let mut results: Vec<(u8, Value)> = entries
        .flat_map(|(key, entry)| entry.found.iter().map(move |f| (key, entry, f)))
        .map(|(key, entry, found)| {
            let mut resource = json!({
                "apiVersion": if key.kind == "Service" { "v1" } else { "apps/v1" },
                "kind": key.kind,
                "namespace": key.namespace,
                "name": key.name,
            });
            if let Some(uid) = &entry.uid {
                resource["uid"] = json!(uid);
            }
            let mut properties = json!({
                "path": found.path,
                "fix": found.fix,
                "action": found.action,
                "outcome": found.outcome,
            });
            if let Some(reason) = &found.exemption {
                properties["exemptionReason"] = json!(reason);
            }
            let order = match found.result {
                "fail" => 0,
                "warn" => 1,
                _ => 2,
            };
            let result = json!({
                "policy": "stsguard",
                "rule": found.rule,
                "result": found.result,
                "severity": found.severity,
                "scored": true,
                "source": "stsguard",
                "category": "StatefulSet best practices",
                "message": format!("{}: {}", found.path, found.message),
                "resources": [resource],
                "timestamp": {"seconds": entry.since.as_second(), "nanos": entry.since.subsec_nanosecond()},
                "properties": properties,
            });
            (order, result)
        })
        .collect();
    if results.is_empty() {
        return None;
    }
    let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    for (_, r) in &results {
        let key = r["result"].as_str().unwrap_or("error");
        summary[key] = json!(summary[key].as_u64().unwrap_or(0) + 1);
    }
    // What must be fixed first is what stays when the report has to be cut.
    results.sort_by_key(|(order, _)| *order);
    let total = results.len();
    let mut size = 0;
    let kept: Vec<Value> = results
        .into_iter()
        .map(|(_, r)| r)
        .take_while(|r| {
            size += r.to_string().len() + 1;
            size <= budget
        })
        .collect();
    let mut metadata = json!({
        "name": name(namespace),
        "namespace": namespace,
        "labels": {MANAGED_BY.0: MANAGED_BY.1},
    });
    let truncated = kept.len() < total;
    if truncated {
        metadata["annotations"] = json!({TRUNCATED: format!(
            "{} of {total} results shown (the size limit of one object); the summary counts \
             all; `stsguard audit --cluster -n {namespace}` lists every one",
            kept.len()
        )});
    }
    let mut report = json!({
        "apiVersion": format!("{}/{}", api.group(), api.version()),
        "kind": api.kind(),
        "metadata": metadata,
        "summary": summary,
        "results": kept,
    });
    if api == ReportApi::Openreports {
        report["source"] = json!("stsguard");
        if truncated {
            report["configuration"] = json!({"limits": {"maxResults": report["results"].as_array().map_or(0, Vec::len)}});
        }
    }
    Some(report)
}

/// A digest of what a report says: summary, results without their timestamps, the truncation
/// note. Equal for a report as written and as read back, whatever the order of keys.
pub fn digest(report: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    canonical(&report["summary"], &mut hasher);
    canonical(&report["metadata"]["annotations"][TRUNCATED], &mut hasher);
    for result in report["results"].as_array().into_iter().flatten() {
        let mut result = result.clone();
        if let Some(map) = result.as_object_mut() {
            map.remove("timestamp");
        }
        canonical(&result, &mut hasher);
    }
    hasher.finish()
}

fn canonical(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            "{".hash(hasher);
            for key in keys {
                key.hash(hasher);
                canonical(&map[key], hasher);
            }
            "}".hash(hasher);
        }
        Value::Array(items) => {
            "[".hash(hasher);
            items.iter().for_each(|v| canonical(v, hasher));
            "]".hash(hasher);
        }
        other => other.to_string().hash(hasher),
    }
}
