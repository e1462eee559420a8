//! The binary installed as `kubectl-stsguard` is the kubectl plugin: kubectl runs it under that
//! name, it answers as `stsguard` does, and its usage lines name `kubectl stsguard`.

#![cfg(unix)]

use std::{path::Path, process::Command};

fn plugin(dir: &Path) -> Command {
    let path = dir.join("kubectl-stsguard");
    if !path.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_stsguard"), &path).unwrap();
    }
    let mut command = Command::new(path);
    command.env("NO_COLOR", "1");
    command
}

fn root(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_plugin_audits_as_stsguard_does() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = root("docs/src/examples/no-service-name.yaml");
    let as_plugin = plugin(dir.path())
        .args(["audit", "-f", &manifest])
        .output()
        .unwrap();
    let as_binary = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .env("NO_COLOR", "1")
        .args(["audit", "-f", &manifest])
        .output()
        .unwrap();
    assert_eq!(as_plugin.status.code(), Some(1));
    assert_eq!(as_plugin.stdout, as_binary.stdout);
    assert!(String::from_utf8_lossy(&as_plugin.stdout).contains("deny  sts-service-name"));
}

#[test]
fn the_plugin_names_itself_as_kubectl_does() {
    let dir = tempfile::tempdir().unwrap();
    let help = plugin(dir.path())
        .args(["audit", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: kubectl stsguard audit"), "{text}");
    let wrong = plugin(dir.path()).arg("adit").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let text = String::from_utf8_lossy(&wrong.stderr);
    assert!(text.contains("Usage: kubectl stsguard"), "{text}");
    // Under its own name it stays `stsguard`.
    let help = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args(["audit", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: stsguard audit"));
}
