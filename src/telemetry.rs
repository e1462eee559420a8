//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Lines are formatted where they are logged and written to stderr by a background thread,
//! which writes all lines waiting at once: one write per burst instead of one per review under
//! load. The caller keeps the returned guard; dropping it writes out what is left.

use std::io::{BufWriter, IsTerminal};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber, with `RUST_LOG` or else `default` as the filter. Safe to call
/// once; later calls are ignored.
#[must_use = "lines still queued are lost when the guard is not kept until exit"]
pub fn init(format: LogFormat, default: &str) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Not lossy: when the queue is full, logging waits for the writer rather than dropping
    // lines (the review log is the audit trail).
    // The queue's slots are allocated up front: the default 128,000 cost 4 MB of idle memory,
    // while a few thousand are bursts enough for a writer that drains them in one write.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(4096)
        .thread_name("stsguard-log")
        .finish(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        // A review's uid, kind, namespace, name, operation and verdict are its span's fields:
        // under `span` in JSON, in the `review{…}` prefix in text.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (only `main` installs it, once): keep the first.
    let _ = installed;
    guard
}
