//! Per-object exemptions from annotations: `stsguard.io/exempt`, `stsguard.io/exempt-reason`
//! and `stsguard.io/exempt-until`.

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
        for id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            if id == "*" {
                exemption.all = true;
            } else if rules::is_known(id) || mutate::find(id).is_some() {
                exemption.ids.push(id.to_owned());
            } else {
                exemption.notes.push(format!(
                    "{EXEMPT}: {id:?} is not a rule or mutator id, ignored"
                ));
            }
        }
        exemption
    }

    /// The reason shown when this object is exempt from `id`, if it is.
    pub fn covers(&self, id: &str) -> Option<&str> {
        if self.all || self.ids.iter().any(|i| i == id) {
            Some(self.reason.as_deref().unwrap_or("no reason given"))
        } else {
            None
        }
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
        assert_eq!(e.covers("sts-service-name"), Some("singleton"));
        assert_eq!(e.covers("sts-readiness-probe"), Some("singleton"));
        assert_eq!(e.covers("sts-update-strategy"), None);
        assert!(e.notes.is_empty());
    }

    #[test]
    fn star_exempts_everything_until_the_date_passes() {
        let e = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "2026-06-15"}));
        assert_eq!(e.covers("sts-update-strategy"), Some("no reason given"));
        let expired = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "2026-06-14"}));
        assert_eq!(expired.covers("sts-update-strategy"), None);
        assert!(expired.notes[0].contains("expired on 2026-06-14"));
    }

    #[test]
    fn bad_dates_and_unknown_ids_are_noted_not_trusted() {
        let bad_date = exemption(json!({EXEMPT: "*", EXEMPT_UNTIL: "next year"}));
        assert_eq!(bad_date.covers("sts-service-name"), None);
        assert!(bad_date.notes[0].contains("not a date"));
        let unknown = exemption(json!({EXEMPT: "sts-nope"}));
        assert_eq!(unknown.covers("sts-nope"), None);
        assert!(unknown.notes[0].contains("sts-nope"));
    }
}
