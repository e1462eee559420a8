//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Lines are formatted where they are logged and gathered in memory; a background thread writes
//! them to stderr in batches (`batch`). The caller keeps the returned guard; dropping it writes
//! out what is left.

mod batch;
#[cfg(test)]
pub(crate) mod capture;
mod json;

pub use batch::Guard;

use std::io::{IsTerminal, Stderr};

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt::format::JsonFields};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The Kubernetes libraries' own lines, off unless `RUST_LOG` asks for them: they name no
/// component ("failed with error client error (Connect)" from kube's HTTP trace layer, at
/// ERROR, on every retry of every watch), and stsguard logs each failure they report once per
/// outage with what failed, against which server, and when it is back.
const LIBRARIES: &str = "kube_client=off,kube_runtime=off,kube_lease_manager=off";

/// Installs the global subscriber, with `RUST_LOG` or else `default` (and [`LIBRARIES`]) as the
/// filter. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat, default: &str) -> Guard<Stderr> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},{LIBRARIES}")));
    // Not lossy: the review log is the audit trail.
    let (writer, guard) = batch::batched(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        // The lines of tracing-subscriber's `.json().flatten_event(true)`, written for less.
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .try_init(),
    };
    // Already installed (only `main` installs it, once): keep the first.
    let _ = installed;
    guard
}
