//! Object + context + policy → verdict: runs the rules, then applies exemptions, UPDATE
//! grandfathering and the mode in one place. The webhook and the CLI both call [`evaluate`].

use std::{
    collections::HashSet,
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
};

use jiff::civil::Date;

use crate::{
    exemption::ObjectExemption,
    lookup::Lookup,
    policy::{FailureAction, Mode, Policy},
    rules::{Action, Check, Context, Finding, RULES, Rule},
    subject::{Operation, Subject},
};

/// What to judge: the object (on DELETE, the object being deleted), the object it replaces
/// (UPDATE), its namespace, and what the request does to it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub subject: Subject<'a>,
    pub old: Option<Subject<'a>>,
    pub namespace: &'a str,
    pub operation: Operation,
}

/// What became of a violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Rejects the object.
    Denied,
    /// A warn-level violation.
    Warned,
    /// Exempted by an annotation or a namespace exemption; reported as a warning.
    Exempted { reason: String },
    /// Deny-level, but already present before this UPDATE; reported as a warning.
    Grandfathered,
    /// Deny-level in audit mode: admitted, reported as a warning and an audit annotation.
    Audited,
}

/// One violation with its rule, action and outcome.
#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: &'static Rule,
    pub finding: Finding,
    pub action: Action,
    pub outcome: Outcome,
}

impl Violation {
    /// The fix for this violation: its own, or its rule's.
    pub fn fix(&self) -> &str {
        self.finding.fix.as_deref().unwrap_or(self.rule.fix)
    }
}

/// Renders a violation as one warning line, saying how it was treated.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Violation {
            rule,
            finding,
            outcome,
            ..
        } = self;
        match outcome {
            Outcome::Audited => write!(f, "[audit] would deny: ")?,
            Outcome::Exempted { reason } => write!(f, "exempted ({reason}): ")?,
            Outcome::Grandfathered => write!(f, "already present before this update: ")?,
            Outcome::Denied | Outcome::Warned => {}
        }
        write!(f, "{} {}: {}", rule.id, finding.path, finding.message)
    }
}

/// The result of evaluating one object.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Things people should know that are not violations (exemption annotations that do not
    /// apply, rules that failed with `failureAction: allow`).
    pub notes: Vec<String>,
    /// Enabled rules that were skipped because no cluster facts were available.
    pub skipped: Vec<&'static str>,
    /// Rules that panicked, with what they said: a bug, for the caller to log where it knows
    /// which object (the webhook with the review's uid). The violation or note above says it
    /// to the user.
    pub failed: Vec<(&'static str, String)>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        !self.violations.iter().any(|v| v.outcome == Outcome::Denied)
    }

    pub fn denied(&self) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(|v| v.outcome == Outcome::Denied)
    }

    /// The violations of one rule.
    pub fn of_rule(&self, id: &str) -> Vec<&Violation> {
        self.violations.iter().filter(|v| v.rule.id == id).collect()
    }

    /// The ids of every rule with a violation, in order, without repeats.
    pub fn rule_ids(&self) -> Vec<&'static str> {
        let mut seen = HashSet::new();
        self.violations
            .iter()
            .map(|v| v.rule.id)
            .filter(|id| seen.insert(*id))
            .collect()
    }
}

/// Evaluates every rule the policy enables against `input`. `today` (UTC) decides whether an
/// `exempt-until` date has passed.
pub fn evaluate(input: &Input, lookup: &dyn Lookup, policy: &Policy, today: Date) -> Verdict {
    evaluate_rules(RULES, input, lookup, policy, today)
}

fn evaluate_rules(
    rules: &'static [Rule],
    input: &Input,
    lookup: &dyn Lookup,
    policy: &Policy,
    today: Date,
) -> Verdict {
    let mut verdict = Verdict::default();
    let exemption = ObjectExemption::of(&input.subject, today);
    verdict.notes.extend(exemption.notes.iter().cloned());

    let ctx = Context {
        namespace: input.namespace,
        lookup,
        settings: &policy.settings,
    };
    let found = run_rules(rules, input, input.subject, &ctx, policy, &mut verdict);
    if found.is_empty() {
        return verdict;
    }

    // A deny-level violation already present in the old object is not the update's doing;
    // denying it would block scaling and restarts of every existing StatefulSet.
    let before: HashSet<(&str, String)> = match input.old {
        Some(old) if found.iter().any(|(_, _, a)| *a == Action::Deny) => {
            let mut ignored = Verdict::default();
            run_rules(rules, input, old, &ctx, policy, &mut ignored)
                .into_iter()
                .map(|(rule, finding, _)| (rule.id, finding.path))
                .collect()
        }
        _ => HashSet::new(),
    };

    for (rule, finding, action) in found {
        let exempted = exemption
            .covers_rule(rule.id)
            .or_else(|| policy.namespace_exemption(input.namespace, rule.id));
        let outcome = match (exempted, action) {
            (Some(reason), _) => Outcome::Exempted {
                reason: reason.to_owned(),
            },
            (None, Action::Deny) if before.contains(&(rule.id, finding.path.clone())) => {
                Outcome::Grandfathered
            }
            (None, Action::Deny) if policy.mode == Mode::Audit => Outcome::Audited,
            (None, Action::Deny) => Outcome::Denied,
            (None, _) => Outcome::Warned,
        };
        verdict.violations.push(Violation {
            rule,
            finding,
            action,
            outcome,
        });
    }
    verdict
}

/// Runs the enabled rules for the subject's kind and the input's operation, returning each
/// finding with its action.
fn run_rules(
    rules: &'static [Rule],
    input: &Input,
    subject: Subject,
    ctx: &Context,
    policy: &Policy,
    verdict: &mut Verdict,
) -> Vec<(&'static Rule, Finding, Action)> {
    let mut found = Vec::new();
    let judged = rules
        .iter()
        .filter(|r| r.target == subject.target() && r.check.judges(input.operation));
    for rule in judged {
        if policy.strongest_action(rule) == Action::Off {
            continue;
        }
        if rule.needs_lookup && !ctx.lookup.available(ctx.namespace) {
            verdict.skipped.push(rule.id);
            continue;
        }
        match run_rule(rule, subject, ctx) {
            Ok(findings) => {
                for finding in findings {
                    let action = policy.action(rule, finding.case);
                    if action != Action::Off {
                        found.push((rule, finding, action));
                    }
                }
            }
            Err(panic) => {
                let message = format!("rule failed internally ({panic}); please report this");
                match policy.failure_action {
                    FailureAction::Deny => {
                        found.push((rule, Finding::new("", message), Action::Deny));
                    }
                    FailureAction::Allow => {
                        verdict.notes.push(format!("{}: {message}", rule.id));
                    }
                }
                verdict.failed.push((rule.id, panic));
            }
        }
    }
    found
}

/// Runs one rule, turning a panic into an error so that one faulty rule cannot take the
/// webhook down.
fn run_rule(rule: &Rule, subject: Subject, ctx: &Context) -> Result<Vec<Finding>, String> {
    let result = catch_unwind(AssertUnwindSafe(|| match (&rule.check, subject) {
        (Check::StatefulSet(check), Subject::StatefulSet(sts)) => check(sts, ctx),
        (Check::Service(check) | Check::ServiceDelete(check), Subject::Service(svc)) => {
            check(svc, ctx)
        }
        _ => Vec::new(),
    }));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        lookup::NoLookup,
        rules::testing::sts,
        rules::{Case, Target},
    };

    fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    fn judge(new: &k8s_openapi::api::apps::v1::StatefulSet, policy: &Policy) -> Verdict {
        let input = Input {
            subject: Subject::StatefulSet(new),
            old: None,
            namespace: "ns",
            operation: Operation::Create,
        };
        evaluate(&input, &NoLookup, policy, today())
    }

    #[test]
    fn a_clean_statefulset_has_no_violations() {
        let verdict = judge(&sts().build(), &Policy::builtin());
        assert!(verdict.allowed());
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert!(verdict.skipped.contains(&"sts-governing-service-headless"));
    }

    #[test]
    fn every_violation_is_reported_together() {
        let bad = sts()
            .remove("/spec/serviceName")
            .remove("/spec/template/spec/containers/0/readinessProbe")
            .remove("/spec/volumeClaimTemplates/0/spec/accessModes")
            .build();
        let verdict = judge(&bad, &Policy::builtin());
        assert!(!verdict.allowed());
        assert_eq!(
            verdict.rule_ids(),
            [
                "sts-service-name",
                "sts-volume-claim-templates",
                "sts-readiness-probe"
            ]
        );
        assert_eq!(verdict.denied().count(), 2);
    }

    #[test]
    fn audit_mode_admits_and_marks_would_be_denials() {
        let bad = sts().remove("/spec/serviceName").build();
        let verdict = judge(&bad, &Policy::builtin().with_mode(Mode::Audit));
        assert!(verdict.allowed());
        assert_eq!(verdict.violations[0].outcome, Outcome::Audited);
        assert!(
            verdict.violations[0]
                .to_string()
                .starts_with("[audit] would deny: sts-service-name")
        );
    }

    #[test]
    fn updates_deny_only_what_they_introduce() {
        let old = sts().remove("/spec/serviceName").build();
        let new = sts()
            .remove("/spec/serviceName")
            .remove("/spec/volumeClaimTemplates/0/spec/resources")
            .build();
        let input = Input {
            subject: Subject::StatefulSet(&new),
            old: Some(Subject::StatefulSet(&old)),
            namespace: "ns",
            operation: Operation::Update,
        };
        let verdict = evaluate(&input, &NoLookup, &Policy::builtin(), today());
        let outcomes: Vec<_> = verdict
            .violations
            .iter()
            .map(|v| (v.rule.id, &v.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("sts-service-name", &Outcome::Grandfathered),
                ("sts-volume-claim-templates", &Outcome::Denied)
            ]
        );
    }

    #[test]
    fn exemptions_turn_violations_into_explained_warnings() {
        let annotated = sts()
            .remove("/spec/serviceName")
            .set(
                "/metadata/annotations",
                json!({"stsguard.io/exempt": "sts-service-name",
                                                 "stsguard.io/exempt-reason": "singleton"}),
            )
            .build();
        let verdict = judge(&annotated, &Policy::builtin());
        assert!(verdict.allowed());
        assert_eq!(
            verdict.violations[0].outcome,
            Outcome::Exempted {
                reason: "singleton".into()
            }
        );

        let policy = Policy::from_yaml(
            "exemptions: [{namespaces: [ns], rules: [sts-service-name], reason: legacy}]",
            "t",
        )
        .unwrap();
        let verdict = judge(&sts().remove("/spec/serviceName").build(), &policy);
        assert!(verdict.allowed());
        assert!(
            verdict.violations[0]
                .to_string()
                .contains("exempted (legacy)")
        );
    }

    #[test]
    fn policy_actions_change_outcomes() {
        let policy = Policy::from_yaml(
            "rules: {sts-readiness-probe: deny, sts-service-name: off}",
            "t",
        )
        .unwrap();
        let bad = sts()
            .remove("/spec/serviceName")
            .remove("/spec/template/spec/containers/0/readinessProbe")
            .build();
        let verdict = judge(&bad, &policy);
        assert_eq!(verdict.rule_ids(), ["sts-readiness-probe"]);
        assert!(!verdict.allowed());
    }

    fn panicking(_: &k8s_openapi::api::apps::v1::StatefulSet, _: &Context) -> Vec<Finding> {
        panic!("boom")
    }

    static PANICKING: [Rule; 1] = [Rule {
        id: "sts-panics",
        target: Target::StatefulSet,
        cases: &[Case {
            name: "default",
            default: Action::Warn,
        }],
        needs_lookup: false,
        summary: "test",
        why: "test",
        fix: "test",
        check: Check::StatefulSet(panicking),
    }];

    #[test]
    fn a_panicking_rule_is_answered_by_the_failure_action() {
        let built = sts().build();
        let input = Input {
            subject: Subject::StatefulSet(&built),
            old: None,
            namespace: "ns",
            operation: Operation::Create,
        };
        let deny = evaluate_rules(&PANICKING, &input, &NoLookup, &Policy::builtin(), today());
        assert!(!deny.allowed());
        assert!(deny.violations[0].finding.message.contains("boom"));
        assert_eq!(deny.failed.len(), 1);
        assert_eq!(deny.failed[0].0, "sts-panics");
        assert!(deny.failed[0].1.contains("boom"), "{:?}", deny.failed);

        let allow = Policy::from_yaml("failureAction: allow", "t").unwrap();
        let verdict = evaluate_rules(&PANICKING, &input, &NoLookup, &allow, today());
        assert!(verdict.allowed());
        assert!(verdict.notes[0].contains("sts-panics") && verdict.notes[0].contains("boom"));
        assert_eq!(verdict.failed.len(), 1);
    }
}
