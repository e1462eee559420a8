//! The command line: `serve`, `audit`, `mutate`, `rules` and `policy`, with the options they share.

use std::{path::Path, process::ExitCode, str::FromStr};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    policy::{Mode, Policy, PolicyError},
    rules::Action,
    telemetry::LogFormat,
};

mod audit;
mod certs;
mod mutate;
mod policy;
mod rules;
mod serve;
mod version;

pub use audit::AuditArgs;
pub use certs::CertsArgs;
pub use mutate::MutateArgs;
pub use policy::PolicyArgs;
pub use rules::RulesArgs;
pub use serve::{ServeArgs, StartError, prepare_serve};
pub use version::{GIT_COMMIT, KUBERNETES_API};

#[derive(Debug, Parser)]
#[command(
    name = "stsguard",
    version = version::long(),
    about = "Kubernetes admission webhook for StatefulSet best practices"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "STSGUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the validating and mutating admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Check manifests with the webhook's rules (exit 0 clean, 1 violations, 2 input errors).
    Audit(AuditArgs),
    /// Print manifests with the mutating webhook's changes applied (a Helm post-renderer).
    Mutate(MutateArgs),
    /// List every rule and mutator with its default, rationale and fix.
    Rules(RulesArgs),
    /// Export the policy: its in-object rules as ValidatingAdmissionPolicies (the backstop).
    Policy(PolicyArgs),
    /// Certificate tooling.
    Certs(CertsArgs),
    /// Print the version, the commit it was built from and the Kubernetes API it targets.
    Version,
}

/// Runs the command; the exit code follows each command's contract.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Audit(args) => audit::run(&args),
        Command::Mutate(args) => mutate::run(&args),
        Command::Rules(args) => rules::run(&args),
        Command::Policy(args) => policy::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Version => version::run(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

/// `--rule ID=ACTION`: overrides every case of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleArg {
    pub id: String,
    pub action: Action,
}

impl FromStr for RuleArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, action) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ID=ACTION (e.g. sts-readiness-probe=deny)"))?;
        let action = match action {
            "deny" => Action::Deny,
            "warn" => Action::Warn,
            "off" => Action::Off,
            other => return Err(format!("{other:?} is not one of deny, warn, off")),
        };
        Ok(RuleArg {
            id: id.to_owned(),
            action,
        })
    }
}

/// Loads the policy named by `--policy` (or the built-in one), then applies `--mode` and `--rule`.
pub fn load_policy(
    path: Option<&Path>,
    mode: Option<ModeArg>,
    rules: &[RuleArg],
) -> Result<Policy, PolicyError> {
    let policy = match path {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    with_overrides(policy, mode, rules)
}

/// Applies `--mode` and `--rule` to a loaded policy.
pub fn with_overrides(
    mut policy: Policy,
    mode: Option<ModeArg>,
    rules: &[RuleArg],
) -> Result<Policy, PolicyError> {
    if let Some(mode) = mode {
        policy = policy.with_mode(mode.into());
    }
    for rule in rules {
        policy = policy.with_rule(&rule.id, rule.action)?;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_arguments_parse_or_say_why_not() {
        assert_eq!(
            "sts-readiness-probe=deny".parse::<RuleArg>(),
            Ok(RuleArg {
                id: "sts-readiness-probe".into(),
                action: Action::Deny
            })
        );
        assert!(
            "sts-readiness-probe"
                .parse::<RuleArg>()
                .unwrap_err()
                .contains("ID=ACTION")
        );
        assert!(
            "x=loud"
                .parse::<RuleArg>()
                .unwrap_err()
                .contains("deny, warn, off")
        );
        let e = load_policy(None, None, &["sts-nope=deny".parse().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("--rule") && e.to_string().contains("sts-nope"),
            "{e}"
        );
    }
}
