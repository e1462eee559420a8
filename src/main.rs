//! Start-up only: crypto provider, arguments, telemetry, then the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use stsguard::{cli, telemetry};

/// A review is a few hundred small allocations (the parsed objects, the answer, the log line),
/// and an audit parses every document into them: glibc's allocator took about a sixth of the
/// webhook's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The webhook logs every review; the one-shot commands speak through their output and exit
    // code, and the libraries' own error lines (a failed connection) would only repeat them.
    let default = match cli.command {
        cli::Command::Serve(_) => "info",
        _ => "off",
    };
    let _log = telemetry::init(cli.log_format, default);
    // Every TLS configuration names its provider; installing it as the process default as well
    // keeps any library that asks for the default on the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    cli::run(cli)
}
