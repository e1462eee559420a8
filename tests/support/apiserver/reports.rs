//! What the fake API server adds for policy reports, as a cluster with the report CRDs
//! installed: bodies checked against the CRD's schema (422 Invalid otherwise, as the real API
//! server answers), and a log of report writes with who made them (the bearer token of the
//! kubeconfig) and who held the leader Lease at that moment.

use std::sync::Arc;

use axum::extract::Request;
use serde_json::Value;

use super::{FakeApiServer, Inner, Kind, route, status};

/// A report write as the fake saw it.
#[derive(Clone, Debug)]
pub struct ReportWrite {
    /// `PATCH`, `PUT`, `POST` or `DELETE`.
    pub method: String,
    pub path: String,
    /// The writer's bearer token.
    pub token: Option<String>,
    /// The holder of the Lease `default/stsguard` when the write arrived.
    pub holder: Option<String>,
    pub at: std::time::Instant,
}

/// A CRD's schema, compiled.
pub(super) type Schema = Arc<jsonschema::Validator>;

impl FakeApiServer {
    /// Checks the bodies of `kind` against `crd_file` (in tests/schemas) at `version`, as the
    /// API server does once the CRD is installed.
    pub fn install_crd(&self, kind: Kind, crd_file: &str, version: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/schemas")
            .join(crd_file);
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let schema = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == version)
            .unwrap_or_else(|| panic!("{crd_file} has no version {version}"))["schema"]
            ["openAPIV3Schema"]
            .clone();
        let validator = jsonschema::validator_for(&schema).unwrap();
        self.inner
            .lock()
            .unwrap()
            .schemas
            .insert(kind, Arc::new(validator));
    }

    /// The writes of policy reports (and OpenReports) so far, oldest first.
    pub fn report_writes(&self) -> Vec<ReportWrite> {
        self.inner.lock().unwrap().report_writes.clone()
    }

    /// A kubeconfig whose requests carry `token`, to tell replicas apart.
    pub fn kubeconfig_as(&self, dir: &std::path::Path, token: &str) -> std::path::PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
                 users:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: u}}\n\
                 current-context: fake\n",
                self.url()
            ),
        )
        .unwrap();
        path
    }
}

/// Logs a request when it writes a report.
pub(super) fn note(server: &FakeApiServer, request: &Request) {
    let Some((kind, _, _)) = route(request.uri().path()) else {
        return;
    };
    if !matches!(kind, Kind::PolicyReport | Kind::OpenReport) || request.method() == "GET" {
        return;
    }
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut inner = server.inner.lock().unwrap();
    let holder = inner
        .objects
        .get(&(Kind::Lease, "default".to_owned(), "stsguard".to_owned()))
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str())
        .map(str::to_owned);
    inner.report_writes.push(ReportWrite {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        token,
        holder,
        at: std::time::Instant::now(),
    });
}

/// The CRD's verdict on an object about to be stored.
pub(super) fn check(inner: &Inner, kind: Kind, object: &Value) -> Result<(), Value> {
    let Some(validator) = inner.schemas.get(&kind) else {
        return Ok(());
    };
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(status(
        422,
        "Invalid",
        &format!(
            "{} {:?} is invalid: {}",
            kind.resource(),
            object["metadata"]["name"].as_str().unwrap_or_default(),
            errors.join("; ")
        ),
    ))
}
