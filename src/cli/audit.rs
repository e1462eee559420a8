//! `stsguard audit`: the webhook's admission chain over manifests, as a report.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};

use super::{ColorArg, InputOptions, ModeArg, RuleArg, load_policy, nothing_in};

mod live;
use crate::{
    audit::{audit, audit_inputs},
    manifest,
    report::{self, Format},
    rules::Action,
    time::today,
};

#[derive(Clone, Debug, Args)]
pub struct AuditArgs {
    /// Manifest file or directory (searched for *.yaml, *.yml, *.json); `-` reads stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "cluster",
        conflicts_with = "cluster"
    )]
    pub files: Vec<PathBuf>,
    /// Audit the StatefulSets and Services of the live cluster (read-only: list).
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig for --cluster; without it, in-cluster configuration or KUBECONFIG/~/.kube/config.
    #[arg(long, env = "STSGUARD_KUBECONFIG", requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Policy file; the built-in policy when not given.
    #[arg(long, env = "STSGUARD_POLICY")]
    pub policy: Option<PathBuf>,
    /// Overrides the policy's mode.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Overrides a rule's action, e.g. `--rule sts-pod-anti-affinity=warn`, or one case of it,
    /// e.g. `--rule sts-volume-claim-templates.missing=deny` (repeatable).
    #[arg(long = "rule", value_name = "ID[.CASE]=ACTION")]
    pub rules: Vec<RuleArg>,
    /// Namespace of objects that name none (default `default`); with --cluster, the only
    /// namespace audited (default: all).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Report format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub format: Format,
    /// Lowest level that makes the exit code 1.
    #[arg(long, value_enum, default_value = "deny")]
    pub fail_on: FailOn,
    /// With --format policy-report: emit openreports.io/v1alpha1 Report objects.
    #[arg(long)]
    pub openreports: bool,
    #[command(flatten)]
    pub input: InputOptions,
    /// List only the objects with findings (text and JSON); the summary still counts all.
    #[arg(short = 'q', long, visible_alias = "only-failed")]
    pub quiet: bool,
    /// Colour in the text output.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub color: ColorArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Violations the webhook would reject.
    Deny,
    /// Any violation, warnings included.
    Warn,
    /// Never; only input errors change the exit code.
    Never,
}

impl From<FailOn> for Action {
    fn from(f: FailOn) -> Action {
        match f {
            FailOn::Deny => Action::Deny,
            FailOn::Warn => Action::Warn,
            FailOn::Never => Action::Off,
        }
    }
}

/// Exit code 0 when nothing is at or above `--fail-on`, 1 when something is, 2 on input or
/// usage errors (reported alongside every document that could be read).
pub(super) fn run(args: &AuditArgs) -> ExitCode {
    if args.openreports && args.format != Format::PolicyReport {
        eprintln!("stsguard: --openreports goes with --format policy-report");
        return ExitCode::from(2);
    }
    let policy = match load_policy(args.policy.as_deref(), args.mode, &args.rules) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("stsguard: {e}");
            return ExitCode::from(2);
        }
    };
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let report = if args.cluster {
        match live::load(args.kubeconfig.as_deref(), args.namespace.as_deref()) {
            Ok(loaded) => audit(&loaded, &policy, namespace, today()),
            Err(e) => {
                eprintln!("stsguard: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        // Read as a stream: no parsed document is held for the whole run.
        let (mut errors, mut notes) = (Vec::new(), Vec::new());
        let inputs = manifest::read_inputs(
            &args.files,
            &args.input.exclude,
            &mut std::io::stdin().lock(),
            &mut errors,
            &mut notes,
        );
        let (report, documents) = audit_inputs(inputs, errors, notes, &policy, namespace, today());
        if documents == 0 && report.errors.is_empty() && !args.input.allow_empty {
            eprintln!("stsguard: {}", nothing_in(&args.files));
            return ExitCode::from(2);
        }
        report
    };
    let options = report::Options {
        policy: &policy,
        fail_on: args.fail_on.into(),
        color: args.format == Format::Text && args.color.enabled(),
        only_failed: args.quiet,
        openreports: args.openreports,
    };
    print!("{}", report::render(&report, args.format, &options));
    if args.format != Format::Text {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
    }
    if !report.errors.is_empty() {
        ExitCode::from(2)
    } else if report.fails(args.fail_on.into()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
