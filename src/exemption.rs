//! Per-object exemptions from annotations: `stsguard.io/exempt`, `stsguard.io/exempt-reason`
//! and `stsguard.io/exempt-until`.
//!
//! `"*"` exempts from every rule, not from the mutators: a mutator fixes what the API server would
//! otherwise reject (an incomplete volumeClaimTemplate), so it is switched off only when named.

use jiff::civil::Date;

use crate::{mutate, rules, subject::Subject};

pub const EXEMPT: &str = "stsguard.io/exempt";
pub const EXEMPT_REASON: &str = "stsguard.io/exempt-reason";
pub const EXEMPT_UNTIL: &str = "stsguard.io/exempt-until";

/// What an object's annotations exempt it from.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ObjectExemption {
    ids: Vec<String>,
    all: bool,
    reason: Option<String>,
    /// Problems with the annotations themselves, reported as warnings so nobody believes an
    /// exemption holds when it does not.
    pub notes: Vec<String>,
}

impl ObjectExemption {
    /// Reads the annotations of `subject` as of `today` (UTC).
    pub fn of(subject: &Subject, today: Date) -> ObjectExemption {
        let Some(list) = subject.annotation(EXEMPT) else {
            return ObjectExemption::default();
        };
        let mut exemption = ObjectExemption {
            reason: subject
                .annotation(EXEMPT_REASON)
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            ..ObjectExemption::default()
        };
        if let Some(until) = subject.annotation(EXEMPT_UNTIL) {
            match until.trim().parse::<Date>() {
                Ok(date) if date < today => {
                    exemption.notes.push(format!(
                        "{EXEMPT} expired on {date} ({EXEMPT_UNTIL}) and no longer applies"
                    ));
                    return exemption;
                }
                Ok(_) => {}
                Err(_) => {
                    exemption.notes.push(format!(
                        "{EXEMPT_UNTIL}: {until:?} is not a date (YYYY-MM-DD), so {EXEMPT} does \
                         not apply"
                    ));
                    return exemption;
                }
            }
        }
        let mut unknown: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            if id == "*" {
                exemption.all = true;
            } else if rules::is_known(id) || mutate::find(id).is_some() {
                if !exemption.ids.iter().any(|known| known == id) {
                    exemption.ids.push(id.to_owned());
                }
            } else if seen.insert(id) {
                unknown.push(id);
            }
        }
        // One note however many there are: the annotation is the user's to make huge. A typo
        // next to valid ids must not leave the user believing the rest holds as they meant it,
        // so the whole annotation does not apply.
        if !unknown.is_empty() {
            const SHOWN: usize = 5;
            let mut listed: Vec<String> = unknown
                .iter()
                .take(SHOWN)
                .map(|id| format!("{:?}", rules::clip(id)))
                .collect();
            if unknown.len() > SHOWN {
                listed.push(format!("and {} more", unknown.len() - SHOWN));
            }
            exemption.notes.push(format!(
                "{EXEMPT}: {} {} not a rule or mutator id, so the exemption does not apply \
                 (stsguard rules lists the ids)",
                listed.join(", "),
                if unknown.len() == 1 { "is" } else { "are" }
            ));
            exemption.ids.clear();
            exemption.all = false;
        }
        if let Some(reason) = exemption.reason.as_mut() {
            *reason = rules::clip(reason).into_owned();
        }
        exemption
    }

    /// The reason shown when this object is exempt from rule `id`, if it is.
    pub fn covers_rule(&self, id: &str) -> Option<&str> {
        (self.all || self.names(id)).then(|| self.reason())
    }

    /// The reason this object is exempt from mutator `id`, if the annotation names it.
    pub fn covers_mutator(&self, id: &str) -> Option<&str> {
        self.names(id).then(|| self.reason())
    }

    fn names(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or("no reason given")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::testing::sts;

    fn today() -> Date {
        "2026-06-15".parse().unwrap()
    }

    fn exemption(annotations: serde_json::Value) -> ObjectExemption {
        let built = sts().set("/metadata/annotations", annotations).build();
        ObjectExemption::of(&Subject::StatefulSet(&built), today())
    }

    #[test]
    fn listed_rules_are_exempt_with_their_reason() {
        let e = exemption(json!({EXEMPT: "sts-service-name, sts-readiness-probe",
                                 EXEMPT_REASON: "singleton"}));
        assert_eq!(e.covers_rule("sts-service-name"), Some("singleton"));
        assert_eq!(e.covers_rule("sts-readiness-probe"), Some("singleton"));
        assert_eq!(e.covers_rule("sts-update-strategy"), None);
        assert!(e.notes.is_empty());
    }

    #[test]
    fn star_exempts_every_rule_until_the_date_passes() {
        let e = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "2026-06-15"}));
        assert_eq!(
            e.covers_rule("sts-update-strategy"),
            Some("no reason given")
        );
        assert_eq!(
            e.covers_mutator("sts-complete-volume-claim-templates"),
            None
        );
        let named = exemption(json!({EXEMPT: "sts-complete-volume-claim-templates"}));
        assert_eq!(
            named.covers_mutator("sts-complete-volume-claim-templates"),
            Some("no reason given")
        );
        let expired = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "2026-06-14"}));
        assert_eq!(expired.covers_rule("sts-update-strategy"), None);
        assert!(expired.notes[0].contains("expired on 2026-06-14"));
    }

    #[test]
    fn bad_dates_and_unknown_ids_are_noted_not_trusted() {
        let bad_date = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "next year"}));
        assert_eq!(bad_date.covers_rule("sts-service-name"), None);
        assert!(bad_date.notes[0].contains("not a date"));
        let unknown = exemption(json!({EXEMPT: "sts-nope"}));
        assert_eq!(unknown.covers_rule("sts-nope"), None);
        assert!(unknown.notes[0].contains("\"sts-nope\" is not a rule"));
        // A typo next to a valid id: nothing is exempt, and the note says so.
        let typo = exemption(json!({EXEMPT: "sts-service-name,sts-readines-probe"}));
        assert_eq!(typo.covers_rule("sts-service-name"), None);
        assert!(
            typo.notes[0].contains(
                "\"sts-readines-probe\" is not a rule or mutator id, so the \
                                    exemption does not apply"
            ),
            "{}",
            typo.notes[0]
        );
        let many: String = (0..1000).map(|i| format!("x{i},x{i},")).collect();
        let many = exemption(json!({EXEMPT: many}));
        assert_eq!(many.notes.len(), 1);
        assert!(
            many.notes[0].contains("\"x4\", and 995 more are not a rule or mutator id"),
            "{}",
            many.notes[0]
        );
    }
}
