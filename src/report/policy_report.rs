//! Policy reports: one `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace (or, with
//! `--openreports`, one `openreports.io/v1alpha1` Report), with a result per object and
//! evaluated rule, so the results show up in the tools that already read policy reports.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Options, evaluated_rules};
use crate::{audit::AuditReport, evaluate::Outcome};

/// A violation's `result` and `severity` in a policy report: what the webhook would reject (or
/// rejects only in enforce mode, or lets pass as grandfathered) fails, a warning warns, an
/// exempted violation is skipped. The audit and the in-cluster reports share it.
pub(crate) fn result_of(outcome: &Outcome) -> (&'static str, &'static str) {
    match outcome {
        Outcome::Denied | Outcome::Audited | Outcome::Grandfathered => ("fail", "high"),
        Outcome::Warned => ("warn", "medium"),
        Outcome::Exempted { .. } => ("skip", "info"),
    }
}

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let now = Timestamp::now();
    let timestamp = json!({"seconds": now.as_second(), "nanos": now.subsec_nanosecond()});
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for r in &report.results {
        let resource = json!({
            "apiVersion": if r.target.kind() == "Service" { "v1" } else { "apps/v1" },
            "kind": r.target.kind(),
            "name": r.name,
            "namespace": r.namespace,
        });
        let results = by_namespace.entry(&r.namespace).or_default();
        for rule in evaluated_rules(r, options.policy) {
            let violations = r.verdict.of_rule(rule.id);
            let (result, severity, message, properties) = match violations.first() {
                None => ("pass", None, format!("{} passed", rule.summary), json!({})),
                Some(v) => {
                    let (result, severity) = result_of(&v.outcome);
                    let message = violations
                        .iter()
                        .map(|v| format!("{}: {}", v.finding.path, v.finding.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let mut properties = json!({"path": v.finding.path, "fix": v.fix(), "file": format!("{}", r.source)});
                    if let Outcome::Exempted { reason } = &v.outcome {
                        properties["exemptionReason"] = json!(reason);
                    }
                    (result, Some(severity), message, properties)
                }
            };
            let mut entry = json!({
                "policy": "stsguard",
                "rule": rule.id,
                "result": result,
                "scored": true,
                "source": "stsguard",
                "category": "StatefulSet best practices",
                "message": message,
                "resources": [resource.clone()],
                "timestamp": timestamp.clone(),
                "properties": properties,
            });
            if let Some(severity) = severity {
                entry["severity"] = json!(severity);
            }
            results.push(entry);
        }
    }

    let mut out = String::new();
    for (namespace, results) in by_namespace {
        let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
        for r in &results {
            let key = r["result"].as_str().unwrap_or("error");
            summary[key] = json!(summary[key].as_u64().unwrap_or(0) + 1);
        }
        let metadata = json!({
            "name": format!("stsguard-{namespace}"),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "stsguard"},
        });
        let object = if options.openreports {
            json!({
                "apiVersion": "openreports.io/v1alpha1",
                "kind": "Report",
                "metadata": metadata,
                "source": "stsguard",
                "summary": summary,
                "results": results,
            })
        } else {
            json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": "PolicyReport",
                "metadata": metadata,
                "summary": summary,
                "results": results,
            })
        };
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object).unwrap_or_default());
    }
    out
}
