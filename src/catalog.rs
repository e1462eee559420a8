//! The rule and mutator catalogue as text, for the book (docs/src/rules.md) and the command line.

use serde_json::{Value, json};

use crate::{
    mutate::{MUTATORS, Mutator},
    rules::{Action, RULES, Rule},
};

mod examples;

pub use examples::example;

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

/// The book's rule table: id, default, what it checks, why, how to fix.
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

/// The book's mutator table.
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

/// The shipped policies, generated from the rule and mutator tables so that a new rule reaches
/// every one of them (and the chart's copy) without editing them by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// `policies/default.yaml`, the built-in policy: every rule at its default.
    Default,
    /// `policies/strict.yaml`: every rule denies.
    Strict,
    /// `policies/audit.yaml`: the defaults in audit mode.
    Audit,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Default, Preset::Strict, Preset::Audit];

    /// The file under `policies/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Preset::Default => "default.yaml",
            Preset::Strict => "strict.yaml",
            Preset::Audit => "audit.yaml",
        }
    }
}

/// The policy file of a preset, with comments.
pub fn policy_yaml(preset: Preset) -> String {
    let mut out = String::from(match preset {
        Preset::Default => {
            "# stsguard built-in policy. `stsguard serve` without --policy uses exactly this text.\n"
        }
        Preset::Strict => {
            "# stsguard strict policy: every rule denies. For clusters whose StatefulSets already pass.\n"
        }
        Preset::Audit => {
            "# stsguard audit policy: the default rules in dry-run audit mode. Nothing is rejected; what\n\
             # would be denied comes back as warnings and as audit annotations (stsguard.io/<rule-id>).\n"
        }
    });
    out.push_str(
        "# Generated from the rule table (`stsguard rules --format policy`); every field is described\n\
         # in docs/src/policy.md, the book's \"Policy reference\".\n\
         apiVersion: stsguard.io/v1alpha1\n\
         kind: Policy\n\n\
         # enforce: deny-level violations reject the object.\n\
         # audit:   everything is admitted; would-be denials become warnings and audit annotations.\n",
    );
    out.push_str(if preset == Preset::Audit {
        "mode: audit\n"
    } else {
        "mode: enforce\n"
    });
    out.push_str(
        "\n# The answer when a rule fails internally: deny (like failurePolicy: Fail) or allow.\n\
         failureAction: deny\n\n\
         # Cluster lookups for the cross-object rules: auto (when a cluster is reachable) or off.\n\
         lookups: auto\n\n\
         # Rule id -> deny | warn | off, or rule id -> {case: action} for rules with several cases.\n\
         rules:\n",
    );
    let action = |default: Action| match preset {
        Preset::Strict => Action::Deny,
        Preset::Default | Preset::Audit => default,
    };
    for rule in RULES {
        match rule.cases {
            [only] => out.push_str(&format!("  {}: {}\n", rule.id, action(only.default))),
            cases => {
                out.push_str(&format!("  {}:\n", rule.id));
                for case in cases {
                    out.push_str(&format!("    {}: {}\n", case.name, action(case.default)));
                }
            }
        }
    }
    out.push_str(
        "\n# Mutator id -> true | false. Mutators run on /mutate on CREATE; on UPDATE only those that\n\
         # touch mutable fields run.\n\
         mutators:\n",
    );
    for m in MUTATORS {
        out.push_str(&format!("  {}: {}\n", m.id, m.default_enabled));
    }
    out.push_str(
        "\n# What the mutators inject.\n\
         defaults:\n\
         \x20 volumeClaimTemplate:\n\
         \x20   accessModes: [ReadWriteOnce]\n\
         \x20   storage: 1Gi\n\
         \x20   # storageClassName: fast-ssd   # unset: the cluster's default StorageClass\n\
         \x20   # volumeMode: Filesystem\n\n\
         # Namespaces exempt from some or all rules, with the reason shown in every warning. \"*\"\n\
         # exempts from every rule; a mutator is exempted only when named.\n\
         exemptions: []\n\
         #  - namespaces: [legacy-db]\n\
         #    rules: [\"*\"]\n\
         #    reason: migrating off the old chart, ticket OPS-123\n\n\
         settings:\n\
         \x20 # Labels that change with every chart release; on volumeClaimTemplates they break upgrades.\n\
         \x20 volatileLabels:\n",
    );
    for label in crate::rules::Settings::default().volatile_labels {
        out.push_str(&format!("    - {label}\n"));
    }
    out
}

/// A rule as data, for `stsguard rules -o json|yaml`.
pub fn rule_value(rule: &Rule) -> Value {
    json!({
        "id": rule.id,
        "kind": rule.target.kind(),
        "cases": rule.cases.iter().map(|c| json!({"name": c.name, "default": c.default.as_str()})).collect::<Vec<_>>(),
        "needsLookups": rule.needs_lookup,
        "checks": flat(rule.summary),
        "why": flat(rule.why),
        "fix": flat(rule.fix),
    })
}

/// A mutator as data, for `stsguard rules -o json|yaml`.
pub fn mutator_value(m: &Mutator) -> Value {
    json!({
        "id": m.id,
        "kind": m.target().kind(),
        "default": if m.default_enabled { "on" } else { "off" },
        "onUpdate": m.mutable_fields_only,
        "changes": flat(m.summary),
        "why": flat(m.why),
    })
}

/// Text written across source lines, as one line.
pub fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(text: &str) -> String {
    // Markdown renderers pass HTML through: a placeholder such as `<name>` would be taken for a
    // tag and vanish.
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The shipped policies and the chart's copy are what the tables generate; with
    /// `STSGUARD_BLESS=1` this test writes them instead.
    #[test]
    fn shipped_policies_are_generated_from_the_tables() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bless = std::env::var_os("STSGUARD_BLESS").is_some();
        let mut stale = Vec::new();
        for preset in Preset::ALL {
            let text = policy_yaml(preset);
            crate::policy::Policy::from_yaml(&text, preset.file_name())
                .unwrap_or_else(|e| panic!("generated {preset:?} policy does not load: {e}"));
            let mut files = vec![root.join("policies").join(preset.file_name())];
            if preset == Preset::Default {
                files.push(root.join("charts/stsguard/files/default-policy.yaml"));
            }
            for file in files {
                if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                    if bless {
                        std::fs::write(&file, &text).unwrap();
                    } else {
                        stale.push(file.display().to_string());
                    }
                }
            }
        }
        assert!(
            stale.is_empty(),
            "stale: {stale:?}; run `STSGUARD_BLESS=1 cargo test --lib catalog` to regenerate"
        );
    }

    /// The book's rules page holds what the tables generate; with `STSGUARD_BLESS=1` this test
    /// writes them instead.
    #[test]
    fn book_tables_match_the_registries() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/rules.md");
        let mut readme = std::fs::read_to_string(&path).unwrap();
        let mut stale = Vec::new();
        for (name, table) in [
            ("rules", rules_markdown()),
            ("mutators", mutators_markdown()),
        ] {
            let begin = format!("<!-- {name}:begin -->\n");
            let end = format!("<!-- {name}:end -->");
            let start = readme
                .find(&begin)
                .unwrap_or_else(|| panic!("docs/src/rules.md lacks {begin}"))
                + begin.len();
            let stop = start
                + readme[start..]
                    .find(&end)
                    .unwrap_or_else(|| panic!("docs/src/rules.md lacks {end}"));
            if readme[start..stop] != table {
                stale.push(name);
                readme.replace_range(start..stop, &table);
            }
        }
        if std::env::var_os("STSGUARD_BLESS").is_some() {
            std::fs::write(&path, readme).unwrap();
        } else {
            assert!(
                stale.is_empty(),
                "docs/src/rules.md: the {stale:?} tables are out of date; run \
                 `STSGUARD_BLESS=1 cargo test --lib catalog` (or paste `stsguard rules --format markdown`)"
            );
        }
    }
}
