//! The rule and mutator catalogue as text, for README.md and the command line.

use crate::{
    mutate::MUTATORS,
    rules::{RULES, Rule},
};

/// A rule's default, e.g. `deny` or `missing: warn, incomplete: deny`.
pub fn default_actions(rule: &Rule) -> String {
    match rule.cases {
        [only] => only.default.to_string(),
        cases => cases
            .iter()
            .map(|c| format!("{}: {}", c.name, c.default))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The README's rule table: id, default, what it checks, why, how to fix.
pub fn rules_markdown() -> String {
    let mut out = String::from("| rule | default | checks | why | fix |\n|---|---|---|---|---|\n");
    for rule in RULES {
        let lookup = if rule.needs_lookup {
            " (needs cluster lookups)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}` | {} | {}{} | {} | {} |\n",
            rule.id,
            default_actions(rule),
            cell(rule.summary),
            lookup,
            cell(rule.why),
            cell(rule.fix)
        ));
    }
    out
}

/// The README's mutator table.
pub fn mutators_markdown() -> String {
    let mut out =
        String::from("| mutator | default | changes | why | on UPDATE |\n|---|---|---|---|---|\n");
    for m in MUTATORS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.id,
            if m.default_enabled { "on" } else { "off" },
            cell(m.summary),
            cell(m.why),
            if m.mutable_fields_only {
                "yes"
            } else {
                "no (immutable fields)"
            }
        ));
    }
    out
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section<'a>(readme: &'a str, name: &str) -> &'a str {
        let begin = format!("<!-- {name}:begin -->\n");
        let end = format!("<!-- {name}:end -->");
        let start = readme
            .find(&begin)
            .unwrap_or_else(|| panic!("README lacks {begin}"))
            + begin.len();
        let stop = readme[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("README lacks {end}"));
        &readme[start..start + stop]
    }

    #[test]
    fn readme_tables_match_the_registries() {
        let readme = include_str!("../README.md");
        assert_eq!(
            section(readme, "rules"),
            rules_markdown(),
            "README's rule table is out of date; paste `stsguard rules --format markdown`"
        );
        assert_eq!(section(readme, "mutators"), mutators_markdown());
    }
}
