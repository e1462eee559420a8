//! `stsguard policy export` prints the backstop as `backstop::yaml` writes it, validating and
//! mutating, with the command line's overrides, and says what is wrong with a bad argument.

use std::path::{Path, PathBuf};

use stsguard::{
    backstop::{self, Kinds},
    policy::Policy,
};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `stsguard policy export --format vap` prints what `backstop::yaml` writes, for the built-in
/// policy and with the command line's overrides.
#[test]
fn the_command_prints_the_backstop() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stsguard"))
            .args(["policy", "export"])
            .args(args)
            .env_remove("STSGUARD_POLICY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, stdout, _) = run(&["--format", "vap"]);
    assert_eq!(code, Some(0));
    let target = backstop::Target::excluding(
        backstop::DEFAULT_NAME,
        "stsguard/stsguard".parse().unwrap(),
        &[],
    );
    let expected = backstop::generate(&Policy::builtin(), &target);
    assert_eq!(
        stdout,
        backstop::yaml(&expected, Kinds::Validating, "the built-in policy").unwrap()
    );
    let (code, stdout, _) = run(&["--format", "map", "--webhook-service", "guard/hook"]);
    assert_eq!(code, Some(0));
    let target =
        backstop::Target::excluding(backstop::DEFAULT_NAME, "guard/hook".parse().unwrap(), &[]);
    let expected = backstop::generate(&Policy::builtin(), &target);
    assert_eq!(
        stdout,
        backstop::yaml(&expected, Kinds::Mutating, "the built-in policy").unwrap()
    );
    assert!(
        stdout.contains("kind: MutatingAdmissionPolicy\n"),
        "{stdout}"
    );
    assert!(stdout.contains("namespace: guard\n"), "{stdout}");
    let (code, _, stderr) = run(&["--webhook-service", "nope"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("NAMESPACE/NAME"), "{stderr}");

    let policy = repo("policies/strict.yaml");
    let (code, stdout, _) = run(&[
        "--policy",
        policy.to_str().unwrap(),
        "--mode",
        "audit",
        "--name",
        "guard",
        "--rule",
        "sts-readiness-probe=off",
        "--exclude-namespace",
        "kube-system",
        "--exclude-namespace",
        "stsguard",
    ]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("name: guard-deny"), "{stdout}");
    assert!(stdout.contains("- Audit\n  - Warn"), "{stdout}");
    assert!(
        stdout.contains("sts-service-name at spec.serviceName: "),
        "{stdout}"
    );
    assert!(!stdout.contains("sts-readiness-probe at"), "{stdout}");
    assert!(
        !stdout.contains("guard-warn"),
        "strict has no warn-level case: {stdout}"
    );

    let (code, _, stderr) = run(&["--rule", "sts-nope=deny"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("sts-nope"), "{stderr}");
}
