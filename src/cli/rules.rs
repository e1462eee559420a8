//! `stsguard rules [ID]`: every rule and mutator, or everything about one, with its default,
//! rationale, fix and an example violation.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::{
    catalog::{self, Preset, flat},
    mutate::{self, MUTATORS},
    policy::file_unknown_id,
    rules::{self, RULES, Rule},
};

#[derive(Clone, Debug, Args)]
pub struct RulesArgs {
    /// One rule or mutator to show in full (checks, why, fix, cases, defaults, an example).
    pub id: Option<String>,
    /// `text` for reading, `json` or `yaml` for tools, `markdown` for the book's tables,
    /// `policy` for a policy file that lists every rule and mutator.
    #[arg(
        short = 'o',
        long,
        visible_alias = "output",
        value_enum,
        default_value = "text"
    )]
    pub format: RulesFormat,
    /// With `--format policy`: which of the shipped policies to print.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Preset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    Text,
    Json,
    Yaml,
    Markdown,
    Policy,
}

pub(super) fn run(args: &RulesArgs) -> ExitCode {
    if let Some(id) = &args.id {
        return one(id, args.format);
    }
    match args.format {
        RulesFormat::Policy => print!("{}", catalog::policy_yaml(args.preset)),
        RulesFormat::Markdown => {
            print!(
                "{}\n{}",
                catalog::rules_markdown(),
                catalog::mutators_markdown()
            );
        }
        RulesFormat::Json | RulesFormat::Yaml => print!(
            "{}",
            data(
                &json!({
                    "rules": RULES.iter().map(catalog::rule_value).collect::<Vec<_>>(),
                    "mutators": MUTATORS.iter().map(catalog::mutator_value).collect::<Vec<_>>(),
                }),
                args.format
            )
        ),
        RulesFormat::Text => {
            for rule in RULES {
                print!("{}", summary(rule));
                println!();
            }
            for m in MUTATORS {
                let on = if m.default_enabled { "on" } else { "off" };
                println!("{}  [mutator, {on}]", m.id);
                println!("  changes: {}", flat(m.summary));
                println!("  why:     {}", flat(m.why));
                println!();
            }
        }
    }
    ExitCode::SUCCESS
}

fn summary(rule: &Rule) -> String {
    let mut out = format!(
        "{}  [{}]  {}\n  checks: {}\n  why:    {}\n  fix:    {}\n",
        rule.id,
        catalog::default_actions(rule),
        rule.target.kind(),
        flat(rule.summary),
        flat(rule.why),
        flat(rule.fix)
    );
    if rule.needs_lookup {
        out.push_str(
            "  needs:  cluster lookups (the live cluster, or the manifests audited together)\n",
        );
    }
    out
}

/// Everything about one rule or mutator.
fn one(id: &str, format: RulesFormat) -> ExitCode {
    if let Some(m) = mutate::find(id) {
        let value = catalog::mutator_value(m);
        match format {
            RulesFormat::Json | RulesFormat::Yaml => print!("{}", data(&value, format)),
            _ => {
                let on = if m.default_enabled { "on" } else { "off" };
                println!("{}  [mutator, {on}]  {}", m.id, m.target().kind());
                println!("  changes: {}", flat(m.summary));
                println!("  why:     {}", flat(m.why));
                let update = if m.mutable_fields_only {
                    "yes"
                } else {
                    "no (immutable fields)"
                };
                println!("  on UPDATE: {update}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let Some(rule) = rules::find(id) else {
        let known = RULES
            .iter()
            .map(|r| r.id)
            .chain(MUTATORS.iter().map(|m| m.id));
        eprintln!(
            "stsguard: {id:?}: {}",
            file_unknown_id("rule or mutator", id, known)
        );
        return ExitCode::from(2);
    };
    let example = catalog::example(rule.id);
    match format {
        RulesFormat::Json | RulesFormat::Yaml => {
            let mut value = catalog::rule_value(rule);
            if let Some((manifest, found)) = &example {
                value["example"] = json!({
                    "manifest": manifest,
                    "violations": found.iter().map(|v| json!({
                        "case": v.finding.case,
                        "path": v.finding.path,
                        "message": v.finding.message,
                        "fix": v.fix(),
                    })).collect::<Vec<_>>(),
                });
            }
            print!("{}", data(&value, format));
        }
        _ => {
            print!("{}", summary(rule));
            println!("  cases:");
            for case in rule.cases {
                println!("    {}: {} by default", case.name, case.default);
            }
            if let Some((manifest, found)) = example {
                println!("  example that violates it:");
                for line in manifest.lines() {
                    println!("    {line}");
                }
                for v in found {
                    println!(
                        "  gets: {} {}: {}",
                        rule.id, v.finding.path, v.finding.message
                    );
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn data(value: &Value, format: RulesFormat) -> String {
    match format {
        RulesFormat::Yaml => serde_saphyr::to_string(value).unwrap_or_default(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    }
}
