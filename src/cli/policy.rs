//! `stsguard policy export`: the policy as something other than stsguard enforces it; today the
//! backstop, ValidatingAdmissionPolicies the API server evaluates itself.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand, ValueEnum};

use super::{ModeArg, RuleArg, load_policy};
use crate::backstop;

#[derive(Clone, Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy's in-object rules as ValidatingAdmissionPolicies and bindings (YAML),
    /// which the API server enforces even while the webhook is down.
    Export(ExportArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// `vap`: admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy + binding, one pair per
    /// action level (deny, warn).
    #[arg(long, value_enum, default_value = "vap")]
    pub format: ExportFormat,
    /// Policy file; without it, the built-in policy.
    #[arg(long, env = "STSGUARD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Overrides the policy's mode (audit: the deny-level binding audits and warns).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Overrides the action of every case of a rule, e.g. sts-readiness-probe=deny (repeatable).
    #[arg(long = "rule", value_name = "ID=ACTION")]
    pub rules: Vec<RuleArg>,
    /// Name of the generated objects: NAME-deny and NAME-warn.
    #[arg(long, default_value = backstop::DEFAULT_NAME)]
    pub name: String,
    /// Namespaces the bindings leave alone (repeatable), e.g. the webhook's own and kube-system,
    /// which the webhook does not judge either.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Vap,
}

pub(super) fn run(args: &PolicyArgs) -> ExitCode {
    let PolicyCommand::Export(args) = &args.command;
    let policy = match load_policy(args.policy.as_deref(), args.mode, &args.rules) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let origin = args.policy.as_ref().map_or_else(
        || "the built-in policy".to_owned(),
        |p| p.display().to_string(),
    );
    match args.format {
        ExportFormat::Vap => {
            let mut generated = backstop::generate(&policy, &args.name);
            generated.exclude_namespaces(&args.exclude_namespaces);
            match backstop::yaml(&generated, &origin) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot write the backstop as YAML: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
