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

/// `stsguard serve` with JSON logs in `log`, once it says it is serving; the child and that line.
async fn serve_logged(
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
    probe: String,
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
    start_with(dir, &[])
}

fn start_with(dir: &Path, extra: &[&str]) -> Running {
    let mut running = Running {
        child: stsguard()
            .args(serve_args(dir))
            .args(extra)
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

    sigterm(&running.child);
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

/// Log lines are written by a background thread in bursts: none is lost, neither under a burst
/// of reviews nor at shutdown, and each review has its line.
#[tokio::test]
async fn every_review_is_logged_through_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let (mut child, serving) = serve_logged(dir.path(), &[], &log_path).await;
    let addr = serving["addr"].as_str().unwrap().to_owned();
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let url = format!("https://{addr}/validate?timeout=5s");

    const REVIEWS: usize = 400;
    let client = client_trusting(&ca, Http::Two);
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("validate-StatefulSet-CREATE-cap-web-1")).unwrap();
    let mut answers = tokio::task::JoinSet::new();
    for i in 0..REVIEWS {
        review["request"]["uid"] = serde_json::json!(format!("burst-{i}"));
        let (client, url, body) = (
            client.clone(),
            url.clone(),
            serde_json::to_vec(&review).unwrap(),
        );
        answers.spawn(async move { client.post(&url, body).await.status });
    }
    while let Some(status) = answers.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    // A review whose object does not read: the warning logged inside the review carries its uid.
    review["request"]["uid"] = serde_json::json!("broken");
    review["request"]["object"]["spec"]["replicas"] = serde_json::json!("three");
    let broken = client
        .post(&url, serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(broken.status, 200);
    sigterm(&child);
    assert_eq!(
        wait(&mut child, Duration::from_secs(25)).await.code(),
        Some(0)
    );

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let mut uids: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "review" && l["span"]["uid"] != "broken")
        .map(|l| {
            assert_eq!(l["span"]["verdict"], "allowed", "{l}");
            l["span"]["uid"].as_str().unwrap()
        })
        .collect();
    uids.sort_unstable();
    let mut expected: Vec<String> = (0..REVIEWS).map(|i| format!("burst-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(uids, expected);
    let of_broken: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["uid"] == "broken")
        .collect();
    assert!(
        of_broken.iter().any(|l| l["message"] == "invalid review"
            && l["level"] == "WARN"
            && l["span"]["object"] == "web"),
        "{of_broken:?}"
    );
    assert!(
        of_broken
            .iter()
            .any(|l| l["message"] == "review" && l["span"]["verdict"] == "invalid"),
        "{of_broken:?}"
    );
    assert_eq!(
        lines.last().unwrap()["message"],
        "all connections closed",
        "the last line before exit is written too: {log}"
    );
}

fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
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

/// Lays out a certificate pair the way kubelet mounts a Secret: files behind a `..data`
/// symlink to a timestamped directory, swapped atomically by renaming a new symlink over it.
fn kubelet_swap(dir: &Path, version: &str, cert: &str, key: &str) {
    let target = dir.join(format!("..{version}"));
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("tls.crt"), cert).unwrap();
    std::fs::write(target.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// The certificate a new TLS connection to `addr` is served.
async fn served_certificate(addr: &str, ca_pem: &str) -> Vec<u8> {
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(support::client_config(ca_pem)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn rotated_certificates_are_served_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("secret");
    std::fs::create_dir(&volume).unwrap();
    let names = ["localhost".to_owned()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let first = stsguard::tls::generate(&names, &ips, 30).unwrap();
    let second = stsguard::tls::generate(&names, &ips, 30).unwrap();
    kubelet_swap(&volume, "2026_11_24_a", &first.cert, &first.key);
    let trust = format!("{}{}", first.ca_cert, second.ca_cert);

    let cert = volume.join("tls.crt");
    let key = volume.join("tls.key");
    let running = start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--cert-reload-interval",
            "100ms",
        ],
    );
    assert_eq!(
        served_certificate(&running.addr, &trust).await,
        der(&first.cert)
    );

    // A client holding an HTTP/2 connection across the rotation.
    let held = client_trusting(&trust, Http::Two);
    let url = format!("https://{}/validate", running.addr);
    let before = held
        .post(&url, fixture("validate-StatefulSet-CREATE-cap-web-1"))
        .await;
    assert_eq!(before.status, 200);

    kubelet_swap(&volume, "2026_11_24_b", &second.cert, &second.key);
    let mut rotated = false;
    for _ in 0..100 {
        if served_certificate(&running.addr, &trust).await == der(&second.cert) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new certificate is served to new connections");
    let after = held
        .post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
        .await;
    assert_eq!(after.status, 200, "the held connection keeps working");
    assert_eq!(after.json()["response"]["allowed"], false);

    // A broken pair (certificate without its key) is ignored: the good one keeps serving.
    let third = stsguard::tls::generate(&names, &ips, 30).unwrap();
    kubelet_swap(&volume, "2026_11_24_c", &third.cert, &first.key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_certificate(&running.addr, &trust).await,
        der(&second.cert)
    );

    let metrics = probe_metrics(&running.probe).await;
    assert!(
        metrics.contains(r#"stsguard_certificate_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_certificate_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
    let expiry = stsguard::tls::not_after(&der(&second.cert)).unwrap();
    assert!(
        metrics.contains(&format!(
            "stsguard_certificate_expiry_timestamp_seconds {expiry}"
        )),
        "{metrics}"
    );
}

async fn probe_metrics(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[test]
fn certs_generate_writes_a_pair_that_serves_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prod");
    let run = |extra: &[&str]| {
        stsguard()
            .args([
                "certs",
                "generate",
                "--out",
                out.to_str().unwrap(),
                "--dns",
                "stsguard.stsguard.svc",
                "--ip",
                "10.0.0.5",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let certified =
        stsguard::tls::load_certified_key(&out.join("tls.crt"), &out.join("tls.key")).unwrap();
    let days = (stsguard::tls::not_after(&certified.cert[0]).unwrap()
        - jiff::Timestamp::now().as_second())
        / 86_400;
    assert!((3648..=3650).contains(&days), "{days}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let again = run(&[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(&["--force"]).status.success());
    let none = stsguard()
        .args(["certs", "generate", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
}

/// A CA and a client certificate (clientAuth) it signed.
fn client_identity(name: &str) -> stsguard::tls::Generated {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    stsguard::tls::Generated {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test]
async fn client_ca_admits_only_clients_with_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_owned()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let serving = stsguard::tls::generate(&names, &ips, 30).unwrap();
    let files = stsguard::tls::write(&dir.path().join("serving"), &serving).unwrap();
    // The API server's client certificate, and a stranger's, from two different CAs.
    let apiserver = client_identity("kube-apiserver");
    let stranger = client_identity("stranger");
    let client_ca = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca, &apiserver.ca_cert).unwrap();

    let running = start_with(
        dir.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
            "--client-ca",
            client_ca.to_str().unwrap(),
        ],
    );

    let connect = |identity: Option<&stsguard::tls::Generated>| {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        roots
            .add(CertificateDer::from_pem_slice(serving.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(stsguard::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let addr = running.addr.clone();
        async move {
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut tls = connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await?;
            let body = fixture("validate-StatefulSet-CREATE-cap-nosvc-1");
            tls.write_all(format!("POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes()).await?;
            tls.write_all(&body).await?;
            let mut response = Vec::new();
            tls.read_to_end(&mut response).await?;
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        }
    };
    let admitted = connect(Some(&apiserver))
        .await
        .expect("the API server's certificate is accepted");
    assert!(
        admitted.starts_with("HTTP/1.1 200") && admitted.contains("\"allowed\":false"),
        "{admitted}"
    );
    // With TLS 1.3 the server's refusal may arrive after the client thinks the handshake is done;
    // either way no answer comes back.
    for refused in [connect(Some(&stranger)).await, connect(None).await] {
        assert!(
            refused.as_deref().map_or(true, |r| !r.contains("HTTP/1.1")),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn a_watched_policy_is_reloaded_and_a_bad_one_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: {sts-service-name: deny}\n").unwrap();
    let running = start_with(
        dir.path(),
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--watch-policy",
            "--policy-reload-interval",
            "100ms",
        ],
    );
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let client = client_trusting(&ca, Http::One);
    let url = format!("https://{}/validate", running.addr);
    let allowed = || async {
        client
            .post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
            .await
            .json()["response"]["allowed"]
            .as_bool()
            .unwrap()
    };
    assert!(!allowed().await);

    std::fs::write(&policy, "rules: {sts-service-name: warn}\n").unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        if allowed().await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the changed policy is in force");

    // A broken policy is rejected: the last good one stays, and the metric says so.
    std::fs::write(&policy, "rules: {sts-service-name: maybe}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(allowed().await, "the last good policy stays in force");
    let metrics = probe_metrics(&running.probe).await;
    assert!(
        metrics.contains(r#"stsguard_policy_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_policy_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
}

/// SIGTERM under load: `/readyz` turns 503 at once, yet for the drain delay every review is
/// still answered, on old connections and new ones (the API server keeps calling until the
/// EndpointSlice drops the pod); then new connections are refused, what was accepted is
/// answered, and the process exits within the drain delay and the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_then_answers_what_was_accepted_and_exits_in_time() {
    const DRAIN: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_with(
        dir.path(),
        &["--shutdown-grace", "5s", "--drain-delay", "1500ms"],
    );
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let url = format!("https://{}/validate", running.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signalled = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());

    // Eight clients on their own connections, sending reviews back to back; each refusal is
    // timed against the signal.
    let mut load = Vec::new();
    for i in 0..8 {
        let (ca, url, stop, signalled) = (ca.clone(), url.clone(), stop.clone(), signalled.clone());
        load.push(tokio::spawn(async move {
            let client = client_trusting(&ca, if i % 2 == 0 { Http::One } else { Http::Two });
            let (mut answered, mut refused_in_drain) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client
                    .try_post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
                    .await
                {
                    Ok(reply) => {
                        // Whatever was answered was answered completely and correctly.
                        assert_eq!(reply.status, 200);
                        assert_eq!(reply.json()["response"]["allowed"], false);
                        answered += 1;
                    }
                    // Not accepted: the connection was closing or the listener gone.
                    Err(_) => {
                        if signalled
                            .get()
                            .is_some_and(|at| at.elapsed() < DRAIN - Duration::from_millis(200))
                        {
                            refused_in_drain += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (answered, refused_in_drain)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    signalled.set(std::time::Instant::now()).unwrap();
    sigterm(&running.child);
    // Not ready at once...
    let mut readyz = String::new();
    for _ in 0..40 {
        readyz = probe_get(&running.probe, "/readyz").await;
        if readyz.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    // ...while a new connection is still answered.
    let fresh = client_trusting(&ca, Http::Two)
        .try_post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
        .await
        .expect("a new connection during the drain delay is answered");
    assert_eq!(fresh.status, 200);
    assert!(signalled.get().unwrap().elapsed() < DRAIN);

    let status = wait(&mut running.child, Duration::from_secs(10)).await;
    let took = signalled.get().unwrap().elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut answered, mut refused_in_drain) = (0, 0);
    for task in load {
        let (a, r) = task.await.unwrap();
        answered += a;
        refused_in_drain += r;
    }
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= DRAIN,
        "exited {took:?} after SIGTERM, before the drain delay"
    );
    assert!(
        took < DRAIN + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, beyond the drain delay and the grace period"
    );
    assert_eq!(refused_in_drain, 0, "nothing is refused while draining");
    assert!(answered > 50, "the load was running: {answered} answers");
    assert!(
        tokio::net::TcpStream::connect(&running.addr).await.is_err(),
        "new connections are refused"
    );
}

/// A GET on the plain probe listener, as raw HTTP/1.1.
async fn probe_get(addr: &str, path: &str) -> String {
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

/// A serving certificate outside its validity fails every handshake: `/readyz` says not ready and
/// why, for an expired certificate and for one not valid yet.
#[tokio::test]
async fn a_certificate_outside_its_validity_is_not_ready() {
    for (from, until, says) in [
        (
            "2020-01-01",
            "2021-01-01",
            "the serving certificate expired at 2021-01-01T00:00:00Z",
        ),
        (
            "2099-01-01",
            "2100-01-01",
            "the serving certificate is not valid before 2099-01-01T00:00:00Z",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let generated = stsguard::tls::generate_between(
            &["localhost".into()],
            &[],
            from.parse().unwrap(),
            until.parse().unwrap(),
        )
        .unwrap();
        let files = stsguard::tls::write(dir.path(), &generated).unwrap();
        let log_path = dir.path().join("stderr.log");
        let args = [
            "--no-cluster".as_ref(),
            "--tls-cert".as_ref(),
            files.cert.as_os_str(),
            "--tls-key".as_ref(),
            files.key.as_os_str(),
        ];
        let (mut child, serving) = serve_logged(dir.path(), &args, &log_path).await;
        let probe = serving["probe_addr"].as_str().unwrap().to_owned();
        let answer = probe_get(&probe, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(says), "{answer}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains(says)),
            "{log}"
        );
        child.kill().unwrap();
        let _ = child.wait();
    }
}
