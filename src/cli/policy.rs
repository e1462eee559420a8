//! `stsguard policy export`: the policy as something other than stsguard enforces it: the
//! backstop, admission policies the API server evaluates itself. The leader applies the same
//! objects from the policy in force; this prints them for those who keep them in git.

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
    /// Print the backstop (YAML): the in-object rules as ValidatingAdmissionPolicies, or the
    /// injection mutators as a MutatingAdmissionPolicy, with their bindings; the API server
    /// enforces them while the webhook's Service has no ready endpoint. Or the mutating
    /// webhook's matchCondition for the policy.
    Export(ExportArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// `vap`: ValidatingAdmissionPolicy + binding, one pair per action level (deny, warn);
    /// `map`: MutatingAdmissionPolicy + binding (Kubernetes 1.36+); `match-condition`: the
    /// mutating webhook's matchCondition (a YAML list item) that calls it only when an enabled
    /// mutator could act.
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
    /// Name of the generated objects: NAME-deny, NAME-warn, NAME-mutate.
    #[arg(long, default_value = backstop::DEFAULT_NAME)]
    pub name: String,
    /// The webhook's Service (NAMESPACE/NAME): the policies stay silent while one of its
    /// endpoints is ready.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "stsguard/stsguard"
    )]
    pub webhook_service: backstop::ServiceRef,
    /// Namespaces the bindings leave alone (repeatable), e.g. the webhook's own and kube-system,
    /// which the webhook does not judge either.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Vap,
    Map,
    MatchCondition,
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
    let target = backstop::Target::excluding(
        &args.name,
        args.webhook_service.clone(),
        &args.exclude_namespaces,
    );
    let kinds = match args.format {
        ExportFormat::Vap => backstop::Kinds::Validating,
        ExportFormat::Map => backstop::Kinds::Mutating,
        ExportFormat::MatchCondition => {
            print!("{}", backstop::match_condition_yaml(&policy, &origin));
            return ExitCode::SUCCESS;
        }
    };
    match backstop::yaml(&backstop::generate(&policy, &target), kinds, &origin) {
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
