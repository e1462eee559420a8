//! `stsguard serve` as a process: start-up errors, the README quick start with development
//! certificates, and graceful shutdown with a review in flight.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use stsguard::policy::Policy;
use support::{Http, TestServer, client_trusting, fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn stsguard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stsguard"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

fn serve_args(dir: &Path) -> Vec<String> {
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

/// Runs a command expected to fail at start-up; returns its exit code and stderr.
fn fails(cmd: &mut Command) -> (i32, String) {
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

#[test]
fn a_bad_policy_stops_start_up_naming_file_field_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  sts-service-name: maybe\n").unwrap();
    let (code, stderr) = fails(
        stsguard()
            .args(serve_args(dir.path()))
            .arg("--policy")
            .arg(&policy),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains(&policy.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("rules.sts-service-name") && stderr.contains("deny, warn, off"),
        "{stderr}"
    );

    std::fs::write(&policy, "mode: enforce\nrulez: {}\n").unwrap();
    let (_, stderr) = fails(
        stsguard()
            .args(serve_args(dir.path()))
            .arg("--policy")
            .arg(&policy),
    );
    assert!(stderr.contains("rulez"), "{stderr}");
}

#[test]
fn bad_certificates_stop_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = stsguard::tls::write(
        &dir.path().join("a"),
        &stsguard::tls::generate(&["a".into()], &[], 1).unwrap(),
    )
    .unwrap();
    let b = stsguard::tls::write(
        &dir.path().join("b"),
        &stsguard::tls::generate(&["b".into()], &[], 1).unwrap(),
    )
    .unwrap();
    let (_, stderr) = fails(
        stsguard()
            .args(serve_args(dir.path()))
            .arg("--tls-cert")
            .arg(&a.cert)
            .arg("--tls-key")
            .arg(&b.key),
    );
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    let (_, stderr) = fails(
        stsguard()
            .args(serve_args(dir.path()))
            .arg("--tls-cert")
            .arg(dir.path().join("none.crt"))
            .arg("--tls-key")
            .arg(&a.key),
    );
    assert!(
        stderr.contains("cannot read certificate") && stderr.contains("none.crt"),
        "{stderr}"
    );
    let (code, stderr) = fails(
        stsguard()
            .args(serve_args(dir.path()))
            .arg("--tls-cert")
            .arg(&a.cert),
    );
    assert_eq!(code, 2, "clap usage error");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

struct Running {
    child: Child,
    addr: String,
}

/// A server process never outlives its test, whatever the test's outcome.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `stsguard serve` and waits for the line that says where it listens.
fn start(dir: &Path) -> Running {
    let mut running = Running {
        child: stsguard()
            .args(serve_args(dir))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        addr: String::new(),
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
            running.addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .expect("addr field")
                .to_owned();
            return running;
        }
        seen.push(line);
    }
}

#[tokio::test]
async fn quick_start_serves_with_development_certificates_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path());
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).expect("CA written");
    assert!(dir.path().join("dev/tls.key").exists());

    // The certificate names 127.0.0.1, so the curl example's URL verifies.
    let url = format!("https://{}/validate?timeout=5s", running.addr);
    // Kept alive across the shutdown, like the API server's pooled keep-alive connections.
    let clients = [
        client_trusting(&ca, Http::One),
        client_trusting(&ca, Http::Two),
    ];
    for client in &clients {
        let denied = client
            .post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
            .await;
        assert_eq!(denied.status, 200);
        assert_eq!(denied.json()["response"]["allowed"], false);
    }

    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait(&mut running.child, Duration::from_secs(25)).await;
    drop(clients);
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");

    // A second start reuses the same CA, so a client that trusted it keeps working.
    let mut again = start(dir.path());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap(),
        ca
    );
    again.child.kill().unwrap();
    let _ = again.child.wait();
}

async fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_finishes_the_review_in_flight_and_refuses_new_connections() {
    let mut server = TestServer::start(Policy::builtin()).await;
    let body = fixture("validate-StatefulSet-CREATE-cap-web-1");
    let (head, tail) = body.split_at(body.len() / 2);

    let mut tls = support::raw_tls(&server).await;
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.signal_stop();
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "new connections should be refused after the shutdown signal"
    );

    // The review already in flight still gets its answer.
    tls.write_all(tail).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("answered within the grace period")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"allowed\":true"), "{response}");
    server.stop().await;
}
