//! JUnit XML: a testsuite per input file, a testcase per object and evaluated rule. Violations at
//! or above `--fail-on` are failures; the others pass with the warning in system-out; exempted
//! ones are skipped with the reason; input errors are errors.

use std::{collections::BTreeMap, fmt::Write};

use super::{Options, evaluated_rules};
use crate::{audit::AuditReport, evaluate::Outcome, rules::Action};

#[derive(Default)]
struct Suite {
    cases: String,
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

pub(super) fn render(report: &AuditReport, options: &Options) -> String {
    let mut suites: BTreeMap<&str, Suite> = BTreeMap::new();
    for r in &report.results {
        let suite = suites.entry(&r.source.file).or_default();
        let classname = format!("{}/{}/{}", r.target.kind(), r.namespace, r.name);
        for rule in evaluated_rules(r, options.policy) {
            suite.tests += 1;
            let violations = r.verdict.of_rule(rule.id);
            let _ = write!(
                suite.cases,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"0\">",
                escape(&classname),
                rule.id
            );
            let failing = violations.iter().any(|v| {
                options.fail_on != Action::Off && crate::audit::level(&v.outcome) >= options.fail_on
            });
            let exempted = violations.iter().find_map(|v| match &v.outcome {
                Outcome::Exempted { reason } => Some(reason.as_str()),
                _ => None,
            });
            let detail: String = violations
                .iter()
                .map(|v| {
                    format!(
                        "{}:{} {}: {}\nfix: {}\n",
                        r.source.file,
                        r.source.line,
                        v.finding.path,
                        v.finding.message,
                        v.fix()
                    )
                })
                .collect();
            if failing {
                suite.failures += 1;
                let _ = write!(
                    suite.cases,
                    "\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    ",
                    rule.id,
                    escape(&violations[0].finding.message),
                    escape(&detail)
                );
            } else if let (Some(reason), true) = (exempted, violations.len() == 1) {
                suite.skipped += 1;
                let _ = write!(
                    suite.cases,
                    "\n      <skipped message=\"exempted: {}\"/>\n    ",
                    escape(reason)
                );
            } else if !violations.is_empty() {
                let _ = write!(
                    suite.cases,
                    "\n      <system-out>{}</system-out>\n    ",
                    escape(&detail)
                );
            }
            suite.cases.push_str("</testcase>\n");
        }
    }
    for e in &report.errors {
        let suite = suites.entry(&e.file).or_default();
        suite.tests += 1;
        suite.errors += 1;
        let _ = writeln!(
            suite.cases,
            "    <testcase classname=\"input\" name=\"{}\" time=\"0\">\n      <error type=\"input\" message=\"{}\"/>\n    </testcase>",
            escape(&format!(
                "line {}",
                e.line.map_or("?".to_owned(), |l| l.to_string())
            )),
            escape(&e.to_string())
        );
    }

    let (tests, failures, errors) = suites.values().fold((0, 0, 0), |(t, f, e), s| {
        (t + s.tests, f + s.failures, e + s.errors)
    });
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"stsguard\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    for (file, suite) in &suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"0\">",
            escape(file),
            escape(file),
            suite.tests,
            suite.failures,
            suite.errors,
            suite.skipped
        );
        out.push_str(&suite.cases);
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot carry.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"c'\u{1}\nd"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;d"
        );
    }
}
