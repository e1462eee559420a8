//! SARIF 2.1.0: every rule's metadata, each violation located at its object's file and line.
//! Exempted violations are reported with a suppression carrying the exemption's reason.

use serde_json::{Value, json};

use super::Options;
use crate::{
    audit::AuditReport,
    catalog,
    evaluate::Outcome,
    rules::{Action, RULES},
};

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|rule| {
            let level = rule
                .cases
                .iter()
                .map(|c| options.policy.action(rule, c.name))
                .max()
                .map_or("none", level);
            json!({
                "id": rule.id,
                "shortDescription": {"text": rule.summary},
                "fullDescription": {"text": rule.why},
                "help": {"text": rule.fix},
                "defaultConfiguration": {"level": level},
                "properties": {
                    "defaults": catalog::default_actions(rule),
                    "target": rule.target.kind(),
                },
            })
        })
        .collect();

    let mut results = Vec::new();
    for r in &report.results {
        for v in &r.verdict.violations {
            let rule_index = RULES.iter().position(|rule| rule.id == v.rule.id);
            let level = match v.outcome {
                Outcome::Denied | Outcome::Audited => "error",
                Outcome::Warned | Outcome::Grandfathered => "warning",
                Outcome::Exempted { .. } => "note",
            };
            let mut result = json!({
                "ruleId": v.rule.id,
                "level": level,
                "message": {"text": format!(
                    "{} {}/{}: {} ({}). Fix: {}",
                    r.target.kind(), r.namespace, r.name, v.finding.message, v.finding.path, v.fix()
                )},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&r.source.file)},
                        "region": {"startLine": r.source.line},
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": format!("{}/{}/{}", r.target.kind(), r.namespace, r.name),
                        "kind": "object",
                    }],
                }],
                "partialFingerprints": {
                    "stsguard/v1": format!("{}/{}/{}/{}/{}", v.rule.id, r.target.kind(), r.namespace, r.name, v.finding.path),
                },
                "properties": {"path": v.finding.path, "case": v.finding.case, "action": v.action.to_string()},
            });
            if let Some(index) = rule_index {
                result["ruleIndex"] = json!(index);
            }
            if let Outcome::Exempted { reason } = &v.outcome {
                result["suppressions"] = json!([{"kind": "inSource", "justification": reason}]);
            }
            results.push(result);
        }
    }

    let notes = report
        .notes
        .iter()
        .map(|n| json!({"level": "warning", "message": {"text": n}}));
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            let mut region = json!({});
            if let Some(line) = e.line {
                region["startLine"] = json!(line);
            }
            if let Some(column) = e.column {
                region["startColumn"] = json!(column);
            }
            json!({
                "level": "error",
                "message": {"text": e.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": uri(&e.file)},
                    "region": region,
                }}],
            })
        })
        .chain(notes)
        .collect();

    let sarif = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "stsguard",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/stsguard/stsguard",
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": report.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    });
    let mut text = serde_json::to_string_pretty(&sarif).unwrap_or_default();
    text.push('\n');
    text
}

fn level(action: Action) -> &'static str {
    match action {
        Action::Deny => "error",
        Action::Warn => "warning",
        Action::Off => "none",
    }
}

/// A file as a relative URI reference; stdin becomes `stdin`.
fn uri(file: &str) -> String {
    if file == "-" {
        return "stdin".to_owned();
    }
    let mut out = String::new();
    for byte in file.trim_start_matches("./").bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::uri;

    #[test]
    fn uris_are_escaped_references() {
        assert_eq!(uri("./charts/my app/sts.yaml"), "charts/my%20app/sts.yaml");
        assert_eq!(uri("-"), "stdin");
    }
}
