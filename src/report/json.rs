//! stsguard's JSON report (`apiVersion: stsguard.io/v1alpha1`, `kind: AuditReport`); its fields
//! are documented in README.md and only ever added to.

use serde_json::{Value, json};

use super::{Options, outcome_word};
use crate::{audit::AuditReport, evaluate::Outcome};

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let results: Vec<Value> = report
        .results
        .iter()
        .filter(|r| {
            !options.only_failed || !r.verdict.violations.is_empty() || !r.verdict.notes.is_empty()
        })
        .map(|r| {
            let violations: Vec<Value> = r
                .verdict
                .violations
                .iter()
                .map(|v| {
                    let mut out = json!({
                        "rule": v.rule.id,
                        "case": v.finding.case,
                        "action": v.action.to_string(),
                        "outcome": outcome_word(&v.outcome),
                        "path": v.finding.path,
                        "message": v.finding.message,
                        "fix": v.fix(),
                    });
                    if let Outcome::Exempted { reason } = &v.outcome {
                        out["exemptionReason"] = json!(reason);
                    }
                    out
                })
                .collect();
            json!({
                "file": r.source.file,
                "line": r.source.line,
                "apiVersion": r.api_version,
                "kind": r.target.kind(),
                "namespace": r.namespace,
                "name": r.name,
                "allowed": r.verdict.allowed(),
                "mutatedBy": r.mutated_by,
                "violations": violations,
                "notes": r.verdict.notes,
                "skippedRules": r.verdict.skipped,
            })
        })
        .collect();
    let errors: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message}))
        .collect();
    let denied = report
        .results
        .iter()
        .filter(|r| !r.verdict.allowed())
        .count();
    let warned = report
        .results
        .iter()
        .filter(|r| r.verdict.allowed() && !r.verdict.violations.is_empty())
        .count();
    let out = json!({
        "apiVersion": "stsguard.io/v1alpha1",
        "kind": "AuditReport",
        "summary": {
            "objects": report.results.len(),
            "denied": denied,
            "warned": warned,
            "passed": report.results.len() - denied - warned,
            "skippedDocuments": report.skipped_documents,
            "errors": report.errors.len(),
        },
        "results": results,
        "errors": errors,
        "notes": report.notes,
    });
    let mut text = serde_json::to_string_pretty(&out).unwrap_or_default();
    text.push('\n');
    text
}
