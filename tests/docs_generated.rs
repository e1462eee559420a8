//! Book tables whose source is the code: each sits between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->` in a page under docs/src, and this test fails when one is stale.
//! `STSGUARD_BLESS=1 cargo test --test docs_generated` rewrites them.
//!
//! The rules, mutators and backstop tables are checked beside their registries
//! (src/catalog.rs, src/backstop/tests.rs), the chart values table by tests/chart/test_docs.py.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use stsguard::cli::{Cli, KUBERNETES_API};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Puts `table` between the page's markers, or with `STSGUARD_BLESS` set writes it there.
fn check_generated(page: &str, name: &str, table: &str) {
    let path = repo(page);
    let text = std::fs::read_to_string(&path).unwrap();
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{page} lacks {begin}"))
        + begin.len();
    let stop = start
        + text[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("{page} lacks {end}"));
    if text[start..stop] == *table {
        return;
    }
    if std::env::var_os("STSGUARD_BLESS").is_some() {
        let mut text = text;
        text.replace_range(start..stop, table);
        std::fs::write(&path, text).unwrap();
    } else {
        panic!(
            "{page}: the {name} table is stale; run `STSGUARD_BLESS=1 cargo test --test \
             docs_generated`\n--- expected ---\n{table}"
        );
    }
}

/// A Markdown table cell: one line, and no `|` that would end the cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// `stsguard serve`'s flags as clap knows them, global ones (`--log-format`) included.
fn serve_flags_markdown() -> String {
    let mut cli = Cli::command();
    cli.build();
    let serve = cli
        .find_subcommand("serve")
        .expect("stsguard has a serve command");
    let mut table = String::from("| flag | env | default | |\n|---|---|---|---|\n");
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || matches!(long, "help" | "version") {
            continue;
        }
        let flag = if arg.get_action().takes_values() {
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map(|name| name.as_str().to_owned())
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            format!("`--{long} <{value}>`")
        } else {
            format!("`--{long}`")
        };
        let env = arg
            .get_env()
            .map(|env| format!("`{}`", env.to_string_lossy()))
            .unwrap_or_else(|| "—".to_owned());
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| format!("`{}`", value.to_string_lossy()))
            .collect();
        let default = if !arg.get_action().takes_values() {
            "off".to_owned()
        } else if defaults.is_empty() {
            "—".to_owned()
        } else {
            defaults.join(", ")
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|help| help.to_string())
            .unwrap_or_default();
        let mut about = cell(&help);
        // clap drops the full stop that ends a one-line help; the table reads as sentences.
        if !about.is_empty() && !about.ends_with('.') {
            about.push('.');
        }
        let possible = arg.get_possible_values();
        let values: Vec<&str> = possible
            .iter()
            .filter(|value| !value.is_hide_set())
            .map(|value| value.get_name())
            .collect();
        if !values.is_empty() && !matches!(values.as_slice(), ["true", "false"]) {
            about.push_str(&format!(" One of: `{}`.", values.join("`, `")));
        }
        table.push_str(&format!("| {flag} | {env} | {default} | {about} |\n"));
    }
    table
}

#[test]
fn serve_flags_table_is_what_clap_says() {
    check_generated("docs/src/serve.md", "serve-flags", &serve_flags_markdown());
}

/// One top-level `key: value` of Chart.yaml, quotes removed.
fn chart_field(chart: &str, key: &str) -> String {
    chart
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("Chart.yaml has no {key}"))
        .split(" #")
        .next()
        .unwrap_or_default()
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// The versions: the chart's and the crate's, the lowest Kubernetes they accept (Chart.yaml's
/// kubeVersion) and the API the binary is built against (the k8s-openapi feature).
fn compatibility_markdown() -> String {
    let chart = std::fs::read_to_string(repo("charts/stsguard/Chart.yaml")).unwrap();
    let chart_version = chart_field(&chart, "version");
    let kube_version = chart_field(&chart, "kubeVersion");
    let minimum = kube_version
        .strip_prefix(">=")
        .and_then(|v| v.strip_suffix(".0-0"))
        .unwrap_or_else(|| panic!("kubeVersion {kube_version:?} is not >=X.Y.0-0"));
    let crate_version = env!("CARGO_PKG_VERSION");
    let feature = format!("v{}", KUBERNETES_API.replace('.', "_"));
    format!(
        "| stsguard | Kubernetes | |\n\
         |---|---|---|\n\
         | chart {chart_version} | {minimum} and newer | `kubeVersion: \"{kube_version}\"` in `Chart.yaml`: Helm refuses to install it on an older cluster |\n\
         | binary and image {crate_version} | {minimum} and newer | built against the Kubernetes {KUBERNETES_API} API (k8s-openapi feature `{feature}`); `stsguard version` and the image label `io.stsguard.kubernetes-api-version` say so |\n"
    )
}

#[test]
fn compatibility_versions_are_those_of_the_chart_and_the_build() {
    check_generated(
        "docs/src/compatibility.md",
        "compatibility",
        &compatibility_markdown(),
    );
}
