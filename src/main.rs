//! Start-up only: crypto provider, arguments, telemetry, then the command.
#![deny(unsafe_code)]

use std::process::ExitCode;

use stsguard::{cli, telemetry};

/// A review is a few hundred small allocations (the parsed objects, the answer, the log line),
/// and an audit parses every document into them: glibc's allocator took about a sixth of the
/// webhook's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option, by its place in `mi_option_e` (mimalloc.h): the Rust bindings
/// do not name it. The test below checks that this place holds it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives memory a thread freed back to the system a second later, but only when that
/// thread next calls the allocator. A webhook fills its caches from hundreds of list pages and
/// then may wait for its next review with the pages' garbage still resident (the cache
/// benchmark's 12,000 objects: 39 MB; returned at once, 28). Returning it at once costs nothing
/// that shows under review load: a few dozen `madvise` calls in 20,000 reviews either way.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // SAFETY: sets one of mimalloc's process-wide integer options; any value is valid for it.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
    let cli = cli::parse();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is `purge_delay`: it still has mimalloc's default for it, one second, until
    /// set, and reads back as set.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_where_it_is_set() {
        // SAFETY: reads and sets a process-wide integer option of mimalloc.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            return_freed_memory_at_once();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 0);
        }
    }
}
