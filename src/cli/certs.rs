//! `stsguard certs generate`: a CA and a serving certificate signed by it, for development and
//! for the chart's `existingSecret` mode.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use crate::tls::{self, CertFiles};

#[derive(Clone, Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum CertsCommand {
    /// Write ca.crt, tls.crt and tls.key (key readable by its owner only) into a directory.
    Generate(GenerateArgs),
}

#[derive(Clone, Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name for the serving certificate (repeatable), e.g. stsguard.stsguard.svc.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP address for the serving certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Validity in days, of both the CA and the certificate.
    #[arg(long, default_value_t = 3650)]
    pub days: i64,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(args: &CertsArgs) -> ExitCode {
    let CertsCommand::Generate(args) = &args.command;
    if args.dns.is_empty() && args.ips.is_empty() {
        eprintln!("stsguard: give at least one --dns NAME or --ip IP for the serving certificate");
        return ExitCode::from(2);
    }
    if args.days < 1 {
        eprintln!("stsguard: --days must be at least 1");
        return ExitCode::from(2);
    }
    let files = CertFiles::in_dir(&args.out);
    let existing: Vec<String> = [&files.ca, &files.cert, &files.key]
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        eprintln!(
            "stsguard: {} already exist{}; use --force to replace",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" }
        );
        return ExitCode::from(2);
    }
    let written =
        tls::generate(&args.dns, &args.ips, args.days).and_then(|g| tls::write(&args.out, &g));
    match written {
        Ok(files) => {
            println!(
                "{}\n{}\n{}",
                files.ca.display(),
                files.cert.display(),
                files.key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stsguard: {e}");
            ExitCode::from(2)
        }
    }
}
