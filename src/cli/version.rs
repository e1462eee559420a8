//! `stsguard version` and `--version`: the version, the commit it was built from and the
//! Kubernetes API it was built against.

use std::{process::ExitCode, sync::LazyLock};

/// The Kubernetes API version of the k8s-openapi feature in Cargo.toml (`v1_36`); a test keeps
/// the two together.
pub const KUBERNETES_API: &str = "1.36";

/// The commit, from `STSGUARD_GIT_COMMIT` at build time (the Dockerfile and the release workflow
/// set it); `unknown` for a plain `cargo build`.
pub const GIT_COMMIT: &str = match option_env!("STSGUARD_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

static LONG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (commit {GIT_COMMIT}, Kubernetes API {KUBERNETES_API})",
        env!("CARGO_PKG_VERSION")
    )
});

/// `0.1.0 (commit 1a2b3c4, Kubernetes API 1.36)`, for `--version` and `stsguard version`.
pub fn long() -> &'static str {
    LONG.as_str()
}

pub(super) fn run() -> ExitCode {
    println!("stsguard {}", long());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_is_the_k8s_openapi_feature() {
        let manifest = include_str!("../../Cargo.toml");
        let feature = format!("\"v{}\"", KUBERNETES_API.replace('.', "_"));
        let line = manifest
            .lines()
            .find(|l| l.starts_with("k8s-openapi"))
            .unwrap();
        assert!(line.contains(&feature), "{line} does not enable {feature}");
        assert!(long().starts_with(env!("CARGO_PKG_VERSION")));
        assert!(long().ends_with(&format!("Kubernetes API {KUBERNETES_API})")));
    }
}
