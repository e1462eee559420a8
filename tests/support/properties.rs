//! What the property tests share: each case on its own thread with the server's stack and a
//! deadline (so a hang fails the case instead of the whole run), the proptest configuration
//! (no failure files), and the inputs they start from: the captured reviews and the manifest
//! corpus.

use std::{
    path::{Path, PathBuf},
    sync::{OnceLock, mpsc},
    thread,
    time::Duration,
};

use proptest::test_runner::Config;
use serde_json::Value;
use stsguard::review::Endpoint;

/// Longest any one case may take (debug build, busy machine) before it counts as a hang.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The stack of a tokio worker or blocking thread, where the server parses reviews.
pub const SERVER_STACK: usize = 2 * 1024 * 1024;

/// Runs `f` on a fresh thread with the server's stack size; panics (with the thread's panic)
/// if it panics, and fails if it has not returned within [`DEADLINE`].
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(what.to_owned())
        .stack_size(SERVER_STACK)
        .spawn(move || {
            let _ = done.send(f());
        })
        .unwrap();
    match result.recv_timeout(DEADLINE) {
        Ok(value) => {
            worker.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker returned without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result within {DEADLINE:?}"),
    }
}

pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The captured reviews, as bytes and as JSON, in name order.
pub fn fixtures() -> &'static [(String, Vec<u8>, Value)] {
    static FIXTURES: OnceLock<Vec<(String, Vec<u8>, Value)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(repo("tests/fixtures/admission"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 19, "{paths:?}");
        paths
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let value = serde_json::from_slice(&bytes).unwrap();
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, bytes, value)
            })
            .collect()
    })
}

pub fn endpoint_of(name: &str) -> Endpoint {
    if name.starts_with("mutate-") {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    }
}

/// The manifest corpus, as (path, text).
pub fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let files = stsguard::manifest::manifest_files(&repo("tests/fixtures/corpus"), &[])
            .unwrap()
            .files;
        assert!(files.len() >= 40, "{files:?}");
        files
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    })
}
