//! Shaping the response: a verdict or a mutation turned into the AdmissionResponse the API server
//! expects, within the budgets it imposes, and written in the wire format it decodes.

use std::collections::{BTreeMap, HashMap};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use kube::core::{admission::AdmissionResponse, response::Status};
use serde::Serialize;

use super::{
    Decision, Summary,
    wire::{API_VERSION, KIND},
};
use crate::{
    evaluate::{Outcome, Verdict, Violation},
    mutate::Mutation,
    subject::Subject,
};

/// The response plus what the log line and metrics need.
#[derive(Debug)]
pub struct Answer {
    pub response: AdmissionResponse,
    pub summary: Summary,
}

impl Answer {
    /// The AdmissionReview the API server gets back.
    ///
    /// Serialized through [`WireReview`] rather than kube's `AdmissionReview`, whose `patch`
    /// (`Vec<u8>`) serializes as an array of numbers; the API server decodes a Go `[]byte`
    /// from a base64 string and rejects anything else (kube-rs/kube#1781).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let r = &self.response;
        let wire = WireReview {
            api_version: API_VERSION,
            kind: KIND,
            response: WireResponse {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch: r.patch.as_deref().map(|p| BASE64.encode(p)),
                patch_type: r.patch.as_ref().map(|_| "JSONPatch"),
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_deref(),
            },
        };
        serde_json::to_vec(&wire)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

/// An allowing response for the review with this uid.
pub(super) fn allowed(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::success();
    response
}

/// A review whose object cannot be read as the kind it claims: denied with status 400.
pub(super) fn invalid(response: &mut AdmissionResponse, summary: &mut Summary, message: String) {
    tracing::warn!(
        uid = summary.uid.as_str(),
        kind = summary.kind.as_str(),
        namespace = summary.namespace.as_str(),
        object = summary.name.as_str(),
        error = %message,
        "invalid review"
    );
    response.allowed = false;
    response.result = Status::failure(&message, "BadRequest").with_code(400);
    summary.decision = Decision::Invalid;
}

/// Puts a mutation into the response as a JSON Patch; an empty one leaves the response as is.
pub(super) fn patch(response: &mut AdmissionResponse, summary: &mut Summary, mutation: Mutation) {
    if mutation.is_empty() {
        summary.decision = Decision::Allowed;
        return;
    }
    summary.rules = mutation.applied;
    let patch = json_patch::Patch(mutation.patch);
    match std::mem::replace(response, allowed("")).with_patch(patch) {
        Ok(patched) => {
            *response = patched;
            summary.decision = Decision::Mutated;
        }
        Err(e) => {
            *response = allowed(&summary.uid);
            tracing::error!(
                uid = summary.uid.as_str(),
                error = %e,
                "cannot serialize patch; object left unchanged"
            );
            summary.decision = Decision::Allowed;
        }
    }
}

/// Turns a verdict into the response: denial message, warnings and audit annotations.
pub(super) fn judge(
    subject: &Subject,
    verdict: &Verdict,
    response: &mut AdmissionResponse,
    summary: &mut Summary,
) {
    summary.rules = verdict.rule_ids();
    summary.violations = verdict
        .violations
        .iter()
        .map(|v| (v.rule.id, v.action))
        .collect();
    summary.skipped = verdict.skipped.clone();
    for (rule, panic) in &verdict.failed {
        tracing::error!(uid = summary.uid.as_str(), rule, panic, "rule failed");
    }

    let mut annotations: HashMap<String, String> = HashMap::new();
    for v in verdict
        .violations
        .iter()
        .filter(|v| v.outcome == Outcome::Audited)
    {
        annotations
            .entry(format!("stsguard.io/{}", v.rule.id))
            .and_modify(|m| {
                m.push_str("; ");
                m.push_str(&v.finding.message);
            })
            .or_insert_with(|| format!("{}: {}", v.finding.path, v.finding.message));
    }
    response.audit_annotations = annotations;

    if !verdict.allowed() {
        summary.decision = Decision::Denied;
        response.allowed = false;
        response.result =
            Status::failure(&denial_message(subject, verdict), "Forbidden").with_code(403);
    } else if verdict.violations.is_empty() && verdict.notes.is_empty() {
        summary.decision = Decision::Allowed;
    } else {
        summary.decision = Decision::Warned;
    }
    let warnings = warnings(verdict);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
}

/// Starts the warning that says which cross-object rules could not run.
pub const SKIPPED_NOTE: &str = "cluster lookups unavailable, not checked";

/// The API server keeps 4,096 characters of warnings per response (its own included); past that
/// it cuts every warning to 256 characters and drops the rest (apiserver's
/// `filters.WithWarningRecorder`). Each warning is kept within 256 characters and all of them
/// within a total that leaves room for the API server's own, so none is cut or dropped there.
pub const WARNING_BUDGET: usize = 3_584;
pub const MAX_WARNING_CHARS: usize = 256;
/// At most this many violations are spelled out in a denial.
const MAX_DENIALS_LISTED: usize = 50;

/// What a violation's warning says first, by how it was treated; also the order of importance
/// in which warnings are given.
fn rank(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Audited => 0,
        Outcome::Grandfathered => 1,
        Outcome::Denied | Outcome::Warned => 3,
        Outcome::Exempted { .. } => 4,
    }
}

/// The warnings of a verdict, one per rule and treatment (however many places it was found in),
/// the most important first, within [`WARNING_BUDGET`].
pub fn warnings(verdict: &Verdict) -> Vec<String> {
    // Grouped by rank, then rule order, then the treatment's wording (exemption reasons).
    let mut groups: BTreeMap<(u8, usize, String), Vec<&Violation>> = BTreeMap::new();
    for (order, v) in verdict
        .violations
        .iter()
        .filter(|v| v.outcome != Outcome::Denied)
        .enumerate()
    {
        let first = verdict
            .violations
            .iter()
            .position(|w| w.rule.id == v.rule.id)
            .unwrap_or(order);
        groups
            .entry((rank(&v.outcome), first, prefix(&v.outcome)))
            .or_default()
            .push(v);
    }
    let mut ranked: Vec<(u8, String)> = groups
        .into_iter()
        .map(|((rank, _, prefix), group)| (rank, aggregate(&prefix, &group)))
        .collect();
    // Notes say an exemption does not hold or a rule failed: as important as what is grandfathered.
    ranked.extend(verdict.notes.iter().map(|n| (2, n.clone())));
    if !verdict.skipped.is_empty() {
        ranked.push((5, format!("{SKIPPED_NOTE}: {}", verdict.skipped.join(", "))));
    }
    ranked.sort_by_key(|(rank, _)| *rank);
    fit(ranked.into_iter().map(|(_, w)| w).collect())
}

fn prefix(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Audited => "[audit] would deny: ".to_owned(),
        Outcome::Exempted { reason } => format!("exempted ({reason}): "),
        Outcome::Grandfathered => "already present before this update: ".to_owned(),
        Outcome::Denied | Outcome::Warned => String::new(),
    }
}

/// One warning for every finding of a rule: the first in full, then where else it was found.
fn aggregate(prefix: &str, group: &[&Violation]) -> String {
    let first = group[0];
    let mut warning = format!(
        "{prefix}{} {}: {}",
        first.rule.id, first.finding.path, first.finding.message
    );
    if group.len() > 1 {
        let mut also = String::new();
        let mut listed = 1;
        for v in &group[1..] {
            let next = if also.is_empty() {
                format!("; also at {}", v.finding.path)
            } else {
                format!(", {}", v.finding.path)
            };
            // Leave room for the count of the rest.
            if chars(&warning) + chars(&also) + chars(&next) + 24 > MAX_WARNING_CHARS {
                break;
            }
            also.push_str(&next);
            listed += 1;
        }
        warning.push_str(&also);
        if listed < group.len() {
            warning.push_str(&format!(" and {} more", group.len() - listed));
        }
    }
    warning
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Keeps every warning on one line (the API server drops a warning it cannot put in a header)
/// and within [`MAX_WARNING_CHARS`], and the whole within [`WARNING_BUDGET`]: the rest is
/// counted in a last warning that says where to see it.
fn fit(warnings: Vec<String>) -> Vec<String> {
    const TAIL: usize = 64;
    let total = warnings.len();
    let mut kept = Vec::new();
    let mut used = 0;
    for mut warning in warnings {
        warning = warning.replace(['\n', '\r', '\t'], " ");
        truncate(&mut warning, MAX_WARNING_CHARS);
        let len = chars(&warning);
        if used + len + TAIL > WARNING_BUDGET && kept.len() + 1 < total {
            break;
        }
        used += len;
        kept.push(warning);
    }
    if kept.len() < total {
        kept.push(format!(
            "…and {} more (run `stsguard audit` or see the stsguard log for all)",
            total - kept.len()
        ));
    }
    kept
}

fn truncate(text: &mut String, max_chars: usize) {
    if let Some((at, _)) = text.char_indices().nth(max_chars - 1) {
        text.truncate(at);
        text.push('…');
    }
}

/// The status message of a denial: every deny-level violation with its path and fix.
fn denial_message(subject: &Subject, verdict: &Verdict) -> String {
    let denied: Vec<_> = verdict.denied().collect();
    let mut message = format!(
        "stsguard denied {} {:?}: {} violation{}",
        subject.target().kind(),
        subject.display_name(),
        denied.len(),
        if denied.len() == 1 { "" } else { "s" }
    );
    let count = denied.len();
    for v in denied.into_iter().take(MAX_DENIALS_LISTED) {
        let mut line = format!(
            "\n- {} at {}: {}. Fix: {}",
            v.rule.id,
            v.finding.path,
            v.finding.message,
            v.fix()
        );
        truncate(&mut line, 8 * MAX_WARNING_CHARS);
        message.push_str(&line);
    }
    if count > MAX_DENIALS_LISTED {
        message.push_str(&format!(
            "\n- … and {} more (stsguard audit lists them all)",
            count - MAX_DENIALS_LISTED
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        rules::Action,
        rules::{self, Finding},
    };

    fn violation(id: &str, path: &str, outcome: Outcome) -> Violation {
        Violation {
            rule: rules::find(id).unwrap(),
            finding: Finding::new(
                path,
                "has no readinessProbe, so it is Ready as soon as it starts",
            ),
            action: Action::Warn,
            outcome,
        }
    }

    #[test]
    fn findings_of_one_rule_are_one_warning() {
        let verdict = Verdict {
            violations: (0..100)
                .map(|i| {
                    violation(
                        "sts-readiness-probe",
                        &format!("spec.template.spec.containers[{i}].readinessProbe"),
                        Outcome::Warned,
                    )
                })
                .chain([violation(
                    "sts-update-strategy",
                    "spec.updateStrategy.type",
                    Outcome::Warned,
                )])
                .collect(),
            ..Verdict::default()
        };
        let warnings = warnings(&verdict);
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings[0].starts_with("sts-readiness-probe spec.template.spec.containers[0]"));
        assert!(warnings[0].contains("; also at spec.template.spec.containers[1].readinessProbe"));
        assert!(warnings[0].ends_with(" more"), "{}", warnings[0]);
        assert!(chars(&warnings[0]) <= MAX_WARNING_CHARS);
        assert!(warnings[1].starts_with("sts-update-strategy"));
    }

    #[test]
    fn the_most_important_come_first_and_the_budget_holds() {
        let mut violations: Vec<Violation> = (0..40)
            .map(|i| {
                violation(
                    "sts-readiness-probe",
                    "x",
                    Outcome::Exempted {
                        reason: format!("reason {i} {}", "padding ".repeat(20)),
                    },
                )
            })
            .collect();
        violations.push(violation(
            "sts-update-strategy",
            "spec.updateStrategy.type",
            Outcome::Warned,
        ));
        violations.push(violation(
            "sts-service-name",
            "spec.serviceName",
            Outcome::Audited,
        ));
        let verdict = Verdict {
            violations,
            notes: vec!["stsguard.io/exempt: \"x\" is not a rule".into()],
            skipped: vec!["sts-governing-service-exists"],
            ..Verdict::default()
        };
        let warnings = warnings(&verdict);
        assert!(warnings[0].starts_with("[audit] would deny: sts-service-name"));
        assert!(warnings[1].starts_with("stsguard.io/exempt"));
        assert!(warnings[2].starts_with("sts-update-strategy"));
        let total: usize = warnings.iter().map(|w| chars(w)).sum();
        assert!(total <= WARNING_BUDGET, "{total}");
        let last = warnings.last().unwrap();
        assert!(
            last.starts_with("…and ") && last.contains("run `stsguard audit`"),
            "{last}"
        );
        assert!(
            warnings
                .iter()
                .all(|w| !w.contains('\n') && chars(w) <= MAX_WARNING_CHARS)
        );
    }
}
