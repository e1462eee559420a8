//! stsguard's JSON report (`apiVersion: stsguard.io/v1alpha1`, `kind: AuditReport`); its fields
//! are documented in the book (docs/src/cli.md) and only ever added to.
//!
//! Written from structs that borrow the report, in the order of their fields: an audit of
//! 100,000 objects built a value tree of the whole report first, about a second of a run's time.

use serde::Serialize;

use super::{Options, outcome_word};
use crate::{
    audit::{AuditReport, ObjectResult},
    evaluate::{Outcome, Violation},
    manifest::InputError,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    api_version: &'static str,
    kind: &'static str,
    summary: Summary,
    results: Vec<Entry<'a>>,
    errors: Vec<Error<'a>>,
    notes: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    objects: usize,
    denied: usize,
    warned: usize,
    passed: usize,
    skipped_documents: usize,
    errors: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    file: &'a str,
    line: usize,
    api_version: &'a str,
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    allowed: bool,
    mutated_by: &'a [&'static str],
    violations: Vec<Finding<'a>>,
    notes: &'a [String],
    skipped_rules: &'a [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Finding<'a> {
    rule: &'static str,
    case: &'static str,
    action: String,
    outcome: &'static str,
    path: &'a str,
    message: &'a str,
    fix: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exemption_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Error<'a> {
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    message: &'a str,
}

impl<'a> Finding<'a> {
    fn of(v: &'a Violation) -> Self {
        Finding {
            rule: v.rule.id,
            case: v.finding.case,
            action: v.action.to_string(),
            outcome: outcome_word(&v.outcome),
            path: &v.finding.path,
            message: &v.finding.message,
            fix: v.fix(),
            exemption_reason: match &v.outcome {
                Outcome::Exempted { reason } => Some(reason),
                _ => None,
            },
        }
    }
}

impl<'a> Entry<'a> {
    fn of(r: &'a ObjectResult) -> Self {
        Entry {
            file: &r.source.file,
            line: r.source.line,
            api_version: &r.api_version,
            kind: r.target.kind(),
            namespace: &r.namespace,
            name: &r.name,
            allowed: r.verdict.allowed(),
            mutated_by: &r.mutated_by,
            violations: r.verdict.violations.iter().map(Finding::of).collect(),
            notes: &r.verdict.notes,
            skipped_rules: &r.verdict.skipped,
        }
    }
}

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let results = report
        .results
        .iter()
        .filter(|r| {
            !options.only_failed || !r.verdict.violations.is_empty() || !r.verdict.notes.is_empty()
        })
        .map(Entry::of)
        .collect();
    let errors = report
        .errors
        .iter()
        .map(|e: &InputError| Error {
            file: &e.file,
            line: e.line,
            column: e.column,
            message: &e.message,
        })
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
    let document = Document {
        api_version: "stsguard.io/v1alpha1",
        kind: "AuditReport",
        summary: Summary {
            objects: report.results.len(),
            denied,
            warned,
            passed: report.results.len() - denied - warned,
            skipped_documents: report.skipped_documents,
            errors: report.errors.len(),
        },
        results,
        errors,
        notes: &report.notes,
    };
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}
