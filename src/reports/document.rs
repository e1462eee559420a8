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
    // The brackets, and a comma (or none for the last) per result.
    let mut size = 1;
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
            report["configuration"] =
                json!({"limits": {"maxResults": report["results"].as_array().map_or(0, Vec::len)}});
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

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::reports::findings::{Findings, Found, Judged};

    fn found(rule: &'static str, result: &'static str) -> Found {
        Found {
            rule,
            action: if result == "fail" { "deny" } else { "warn" },
            result,
            severity: if result == "fail" { "high" } else { "medium" },
            outcome: "denied",
            path: "spec.x".into(),
            message: "is wrong".into(),
            fix: "set it".into(),
            exemption: None,
        }
    }

    fn findings(objects: usize) -> Findings {
        let mut findings = Findings::default();
        for i in 0..objects {
            findings.set(Judged {
                key: Key {
                    namespace: "ns".into(),
                    kind: "StatefulSet",
                    name: format!("s{i:04}"),
                },
                uid: Some(format!("uid-{i}")),
                found: vec![found("a-warning", "warn"), found("z-deny", "fail")],
            });
        }
        findings
    }

    #[test]
    fn a_report_over_the_budget_keeps_what_fails_first_and_says_it_was_cut() {
        let findings = findings(100);
        let full = build(
            ReportApi::PolicyReport,
            "ns",
            findings.namespace("ns"),
            usize::MAX,
        )
        .unwrap();
        assert_eq!(full["results"].as_array().unwrap().len(), 200);
        assert!(full["metadata"]["annotations"].is_null());
        let cut = build(
            ReportApi::PolicyReport,
            "ns",
            findings.namespace("ns"),
            50_000,
        )
        .unwrap();
        let results = cut["results"].as_array().unwrap();
        assert!(results.len() < 200 && !results.is_empty());
        assert!(cut["results"].to_string().len() <= 50_000);
        // All 100 denies come before any warning.
        assert!(
            results
                .iter()
                .take(100.min(results.len()))
                .all(|r| r["result"] == "fail")
        );
        assert_eq!(cut["summary"]["fail"], 100);
        assert_eq!(cut["summary"]["warn"], 100);
        let note = cut["metadata"]["annotations"][TRUNCATED].as_str().unwrap();
        assert!(
            note.starts_with(&format!("{} of 200 results shown", results.len())),
            "{note}"
        );
        let open = build(
            ReportApi::Openreports,
            "ns",
            findings.namespace("ns"),
            50_000,
        )
        .unwrap();
        assert_eq!(open["configuration"]["limits"]["maxResults"], results.len());
    }

    #[test]
    fn no_findings_no_report() {
        assert!(
            build(
                ReportApi::PolicyReport,
                "ns",
                Findings::default().namespace("ns"),
                usize::MAX
            )
            .is_none()
        );
    }

    #[test]
    fn the_digest_ignores_timestamps_and_key_order_but_not_content() {
        let findings = findings(2);
        let report = build(
            ReportApi::PolicyReport,
            "ns",
            findings.namespace("ns"),
            usize::MAX,
        )
        .unwrap();
        let mut later = report.clone();
        later["results"][0]["timestamp"] =
            json!({"seconds": Timestamp::now().as_second() + 99, "nanos": 1});
        // Read back, objects may come with their keys in another order.
        let reordered: Value = {
            let mut map = serde_json::Map::new();
            for (k, v) in report.as_object().unwrap().iter().rev() {
                map.insert(k.clone(), v.clone());
            }
            Value::Object(map)
        };
        assert_eq!(digest(&report), digest(&later));
        assert_eq!(digest(&report), digest(&reordered));
        let mut changed = report.clone();
        changed["results"][0]["message"] = json!("spec.x: is something else");
        assert_ne!(digest(&report), digest(&changed));
    }
}
