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

/// Installs the global subscriber, with `RUST_LOG` or else `default` as the filter. Safe to call
/// once; later calls are ignored.
pub fn init(format: LogFormat, default: &str) -> Guard<Stderr> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
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
