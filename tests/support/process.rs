//! `stsguard serve` as a child process: the command and its arguments, starting it and waiting
//! for the line that says where it listens (plain or JSON logs), expecting a start-up failure,
//! SIGTERM and waiting for the exit, and reading `/metrics` from the probe port.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn stsguard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stsguard"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

pub fn serve_args(dir: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--probe-addr".into(),
        "127.0.0.1:0".into(),
        "--dev-cert-dir".into(),
        dir.join("dev").display().to_string(),
    ]
}

/// `stsguard serve` with JSON logs in `log`, once it says it is serving; the child and that line.
pub async fn serve_logged(
    dir: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> (Child, serde_json::Value) {
    let mut child = stsguard()
        .args(serve_args(dir))
        .args(["--log-format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("stsguard is serving")) {
            return (child, serde_json::from_str(line).unwrap());
        }
        assert!(child.try_wait().unwrap().is_none(), "exited: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a command expected to fail at start-up; returns its exit code and stderr.
pub fn fails(cmd: &mut Command) -> (i32, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Running {
    pub child: Child,
    pub addr: String,
    pub probe: String,
}

/// A server process never outlives its test, whatever the test's outcome.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stsguard serve` and waits for the line that says where it listens.
pub fn start(dir: &Path) -> Running {
    start_with(dir, &[])
}

pub fn start_with(dir: &Path, extra: &[&str]) -> Running {
    start_with_env(dir, extra, &[])
}

/// Starts `stsguard serve` with `extra` arguments and `env` variables set.
pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Running {
    let mut running = Running {
        child: stsguard()
            .args(serve_args(dir))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        addr: String::new(),
        probe: String::new(),
    };
    let stderr = running.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no serving line; saw {seen:#?}"));
        if line.contains("stsguard is serving") {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .expect("address fields")
                    .to_owned()
            };
            running.addr = field("addr=");
            running.probe = field("probe_addr=");
            return running;
        }
        seen.push(line);
    }
}

pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

pub async fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn probe_metrics(addr: &str) -> String {
    probe_get(addr, "/metrics").await
}

/// The value of the first line of `metrics` that starts with `prefix` (a metric's name and
/// labels, and the space after them).
pub fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// A GET on the plain probe listener, as raw HTTP/1.1.
pub async fn probe_get(addr: &str, path: &str) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
}
