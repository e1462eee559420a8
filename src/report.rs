//! Audit reports: the same [`AuditReport`] rendered for people (text) and machines (JSON, SARIF,
//! JUnit, PolicyReport / OpenReports).

use clap::ValueEnum;

use crate::{
    audit::{AuditReport, ObjectResult},
    evaluate::Outcome,
    policy::Policy,
    rules::{Action, RULES, Rule},
};

mod json;
mod junit;
mod policy_report;

pub(crate) use policy_report::result_of;
mod sarif;
mod text;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Grouped by object, for people.
    Text,
    /// stsguard's own JSON (documented in docs/src/cli.md).
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
    /// JUnit XML, one testcase per object and rule.
    Junit,
    /// wgpolicyk8s.io/v1alpha2 PolicyReport objects (openreports.io/v1alpha1 with --openreports).
    PolicyReport,
}

/// What renderers need besides the report.
pub struct Options<'a> {
    pub policy: &'a Policy,
    /// The level at which a violation fails the run (and a JUnit testcase).
    pub fail_on: Action,
    /// Colour for the text format.
    pub color: bool,
    /// Text and JSON list only the objects with findings (`--quiet`); the summary still counts
    /// every object.
    pub only_failed: bool,
    /// Emit openreports.io/v1alpha1 Report objects instead of wgpolicyk8s.io PolicyReports.
    pub openreports: bool,
}

pub fn render(report: &AuditReport, format: Format, options: &Options) -> String {
    match format {
        Format::Text => text::render(report, options),
        Format::Json => json::render(report, options),
        Format::Sarif => sarif::render(report, options),
        Format::Junit => junit::render(report, options),
        Format::PolicyReport => policy_report::render(report, options),
    }
}

/// The rules that were evaluated for an object: enabled for its kind and not skipped.
pub(crate) fn evaluated_rules<'a>(
    result: &'a ObjectResult,
    policy: &'a Policy,
) -> impl Iterator<Item = &'static Rule> + 'a {
    RULES.iter().filter(move |rule| {
        rule.target == result.target
            && policy.strongest_action(rule) != Action::Off
            && !result.verdict.skipped.contains(&rule.id)
    })
}

/// A short word for an outcome, as reports show it.
pub(crate) fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Denied => "denied",
        Outcome::Warned => "warned",
        Outcome::Exempted { .. } => "exempted",
        Outcome::Grandfathered => "grandfathered",
        Outcome::Audited => "audited",
    }
}
