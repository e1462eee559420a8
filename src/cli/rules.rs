//! `stsguard rules`: every rule and mutator, with its default, rationale and fix.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::{
    catalog::{self, Preset},
    mutate::MUTATORS,
    rules::RULES,
};

#[derive(Clone, Debug, Args)]
pub struct RulesArgs {
    /// `text` for reading, `markdown` for the README's tables, `policy` for a policy file that
    /// lists every rule and mutator.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub format: RulesFormat,
    /// With `--format policy`: which of the shipped policies to print.
    #[arg(long, value_enum, default_value = "default")]
    pub preset: Preset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    Text,
    Markdown,
    Policy,
}

pub(super) fn run(args: &RulesArgs) -> ExitCode {
    match args.format {
        RulesFormat::Policy => print!("{}", catalog::policy_yaml(args.preset)),
        RulesFormat::Markdown => {
            print!(
                "{}\n{}",
                catalog::rules_markdown(),
                catalog::mutators_markdown()
            );
        }
        RulesFormat::Text => {
            for rule in RULES {
                println!(
                    "{}  [{}]  {}",
                    rule.id,
                    catalog::default_actions(rule),
                    rule.target.kind()
                );
                println!("  checks: {}", flat(rule.summary));
                println!("  why:    {}", flat(rule.why));
                println!("  fix:    {}", flat(rule.fix));
                if rule.needs_lookup {
                    println!(
                        "  needs:  cluster lookups (the live cluster, or the manifests audited together)"
                    );
                }
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

fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
