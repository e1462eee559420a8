//! The text report: grouped by object with file:line, each violation with rule id, severity,
//! message and fix; a summary line at the end.

use std::fmt::Write;

use super::Options;
use crate::{audit::AuditReport, evaluate::Outcome};

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let paint = |code: &str, text: &str| {
        if options.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    for error in &report.errors {
        let _ = writeln!(out, "{} {error}", paint(RED, "error:"));
    }
    for note in &report.notes {
        let _ = writeln!(out, "{} {note}", paint(YELLOW, "note:"));
    }
    let (mut denied, mut warned, mut passed) = (0, 0, 0);
    for r in &report.results {
        let status = if !r.verdict.allowed() {
            denied += 1;
            paint(RED, "denied")
        } else if !r.verdict.violations.is_empty() {
            warned += 1;
            paint(YELLOW, "warnings")
        } else {
            passed += 1;
            paint(GREEN, "ok")
        };
        if options.only_failed && r.verdict.violations.is_empty() && r.verdict.notes.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{}  {} {}/{}  [{status}]",
            r.source,
            paint(BOLD, r.target.kind()),
            r.namespace,
            r.name
        );
        if !r.mutated_by.is_empty() {
            let _ = writeln!(
                out,
                "  {}",
                paint(
                    DIM,
                    &format!("mutated first by: {}", r.mutated_by.join(", "))
                )
            );
        }
        for v in &r.verdict.violations {
            let (mark, color) = match &v.outcome {
                Outcome::Denied => ("deny", RED),
                Outcome::Audited => ("deny (audit)", RED),
                Outcome::Warned => ("warn", YELLOW),
                Outcome::Grandfathered => ("deny (pre-existing)", YELLOW),
                Outcome::Exempted { .. } => ("exempt", DIM),
            };
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                paint(color, mark),
                v.rule.id,
                v.finding.path
            );
            let _ = writeln!(out, "        {}", v.finding.message);
            if let Outcome::Exempted { reason } = &v.outcome {
                let _ = writeln!(out, "        exempted: {reason}");
            }
            let mut lines = v.fix().lines();
            if let Some(first) = lines.next() {
                let _ = writeln!(out, "        fix: {first}");
            }
            for line in lines {
                let _ = writeln!(out, "          {line}");
            }
        }
        for note in &r.verdict.notes {
            let _ = writeln!(out, "  {}  {note}", paint(YELLOW, "note"));
        }
    }
    let _ = writeln!(
        out,
        "{} object{}: {denied} denied, {warned} with warnings, {passed} passed; {} other document{} skipped; {} input error{}",
        report.results.len(),
        plural(report.results.len()),
        report.skipped_documents,
        plural(report.skipped_documents),
        report.errors.len(),
        plural(report.errors.len())
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::audit, manifest, policy::Policy, rules::Action};

    #[test]
    fn colour_only_when_asked() {
        let mut loaded = manifest::Loaded::default();
        manifest::parse_into(
            &mut loaded,
            "m.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {}\n",
            false,
        );
        let policy = Policy::builtin();
        let report = audit(&loaded, &policy, "default", "2026-01-01".parse().unwrap());
        let options = |color| Options {
            policy: &policy,
            fail_on: Action::Deny,
            color,
            only_failed: false,
            openreports: false,
        };
        let plain = render(&report, &options(false));
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            plain.contains("m.yaml:1  StatefulSet default/x  [denied]"),
            "{plain}"
        );
        assert!(plain.ends_with("1 object: 1 denied, 0 with warnings, 0 passed; 0 other documents skipped; 0 input errors\n"));
        let colored = render(&report, &options(true));
        assert!(colored.contains("\x1b[31mdenied\x1b[0m"), "{colored}");
    }
}
