//! `stsguard serve` starting as a process: start-up errors for a bad policy and bad
//! certificates, the README quick start with development certificates (stopped by SIGTERM), and
//! `stsguard certs generate`.

mod support;

use std::time::Duration;

use support::{
    Http, client_trusting, fixture,
    process::{fails, serve_args, sigterm, start, stsguard, wait},
};

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
