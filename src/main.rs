//! Start-up only: crypto provider, arguments, telemetry, then the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use stsguard::{
    cli::{self, Cli, Command},
    telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // Every TLS configuration names its provider; installing it as the process default as well
    // keeps any library that asks for the default on the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stsguard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cli::serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stsguard could not start");
            eprintln!("stsguard: {e}");
            ExitCode::FAILURE
        }
    }
}
