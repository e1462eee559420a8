//! Start-up only: crypto provider, arguments, telemetry, then the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use stsguard::{cli, telemetry};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let _log = telemetry::init(cli.log_format);
    // Every TLS configuration names its provider; installing it as the process default as well
    // keeps any library that asks for the default on the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    cli::run(cli)
}
