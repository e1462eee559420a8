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
mod review;
mod rules;
mod serve;
mod serve_lifecycle;
mod version;
mod webhooks;

pub use audit::AuditArgs;
pub use certs::CertsArgs;
pub use mutate::MutateArgs;
pub use policy::PolicyArgs;
pub use review::ReviewArgs;
pub use rules::RulesArgs;
pub use serve::{Prepared, ServeArgs, StartError, prepare_serve};
pub use version::{GIT_COMMIT, KUBERNETES_API};
pub use webhooks::WebhooksArgs;

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
    /// The webhook configurations stsguard registers: remove them (the chart's pre-delete hook).
    Webhooks(WebhooksArgs),
    /// Wrap a manifest into the AdmissionReview the API server would send (to try a webhook with
    /// curl).
    Review(ReviewArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the version, the commit it was built from and the Kubernetes API it targets.
    Version,
}

/// The file name under which kubectl finds stsguard as a plugin (`kubectl stsguard …`).
pub const KUBECTL_PLUGIN: &str = "kubectl-stsguard";

/// The command line, as `stsguard` or as the kubectl plugin: kubectl runs `kubectl-stsguard`
/// with that name as argv[0], and usage lines and errors then name what the user typed,
/// `kubectl stsguard`.
pub fn parse() -> Cli {
    let argv0 = std::env::args_os().next();
    let as_plugin = argv0
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_stem)
        .is_some_and(|name| name == KUBECTL_PLUGIN);
    let command = <Cli as clap::CommandFactory>::command();
    let command = if as_plugin {
        command.bin_name("kubectl stsguard")
    } else {
        command
    };
    let matches = command.get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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
        Command::Review(args) => review::run(&args),
        Command::Webhooks(args) => webhooks::run(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "stsguard", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
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

/// `--rule ID=ACTION` overrides every case of one rule, `--rule ID.CASE=ACTION` one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleArg {
    pub id: String,
    pub case: Option<String>,
    pub action: Action,
}

impl FromStr for RuleArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (target, action) = s.split_once('=').ok_or_else(|| {
            format!(
                "{s:?} is not ID=ACTION or ID.CASE=ACTION (e.g. sts-readiness-probe=deny, \
                 sts-volume-claim-templates.missing=deny)"
            )
        })?;
        let (id, case) = match target.split_once('.') {
            Some((id, case)) => (id, Some(case.to_owned())),
            None => (target, None),
        };
        let action = match action {
            "deny" => Action::Deny,
            "warn" => Action::Warn,
            "off" => Action::Off,
            other => return Err(format!("{other:?} is not one of deny, warn, off")),
        };
        Ok(RuleArg {
            id: id.to_owned(),
            case,
            action,
        })
    }
}

/// Input options `audit` and `mutate` share.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct InputOptions {
    /// Leave out paths under a given directory that match this gitignore-style glob (relative to
    /// the directory; repeatable). `.gitignore` files are honoured too.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Accept input with no Kubernetes objects in it (by default an error, so that a failed
    /// `helm template` piped in cannot pass).
    #[arg(long)]
    pub allow_empty: bool,
}

/// The error for input with nothing in it.
/// The async runtime a command runs on: several threads for `serve`, one for the short-lived
/// commands that only talk to the API server.
pub(crate) fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

pub(crate) fn nothing_in(files: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            if f.as_os_str() == "-" {
                "stdin".to_owned()
            } else {
                f.display().to_string()
            }
        })
        .collect();
    format!(
        "no Kubernetes objects in {} (use --allow-empty if that is expected)",
        names.join(", ")
    )
}

/// `--color`: colour in the text output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// Colour on a terminal, unless `NO_COLOR` is set; `CLICOLOR_FORCE` forces it.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorArg {
    /// Whether to colour output going to stdout, by the conventions of `NO_COLOR`
    /// (no-color.org) and `CLICOLOR_FORCE`.
    pub fn enabled(self) -> bool {
        let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0");
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto if set("CLICOLOR_FORCE") => true,
            ColorArg::Auto => {
                std::io::IsTerminal::is_terminal(&std::io::stdout()) && !set("NO_COLOR")
            }
        }
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
        policy = policy.with_rule(&rule.id, rule.case.as_deref(), rule.action)?;
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
                case: None,
                action: Action::Deny
            })
        );
        let one = load_policy(
            None,
            None,
            &["sts-volume-claim-templates.missing=deny".parse().unwrap()],
        )
        .unwrap();
        let rule = crate::rules::find("sts-volume-claim-templates").unwrap();
        assert_eq!(one.action(rule, "missing"), Action::Deny);
        assert_eq!(one.action(rule, "incomplete"), Action::Deny);
        let warn = load_policy(
            None,
            None,
            &["sts-volume-claim-templates.incomplete=warn"
                .parse()
                .unwrap()],
        )
        .unwrap();
        assert_eq!(warn.action(rule, "missing"), Action::Warn);
        assert_eq!(warn.action(rule, "incomplete"), Action::Warn);
        let e = load_policy(
            None,
            None,
            &["sts-volume-claim-templates.absent=deny".parse().unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown case") && e.contains("missing, incomplete"),
            "{e}"
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
