//! A real Prometheus (Debian's `prometheus` package) on a free loopback port, with its own
//! config and storage in a temporary directory, scraping one target every second; and instant
//! queries through its HTTP API.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

/// The `prometheus` binary: $PROMETHEUS, else the one on PATH. `None` when there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    })
}

pub struct Prometheus {
    child: Child,
    pub url: String,
}

/// Prometheus never outlives its test.
impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago: Prometheus cannot be told to pick one and say which.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port, /metrics) every second as `job`, with
    /// `labels` on every series (what service discovery would add), evaluating `rules` every
    /// second; returns once it answers /-/ready.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        target: &str,
        job: &str,
        labels: &[(&str, &str)],
        rules: &Path,
    ) -> Prometheus {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             - job_name: {job:?}\n  \
               static_configs:\n  \
               - targets: [{target:?}]\n    \
                 labels: {{{}}}\n",
            labels.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        let mut prometheus = Prometheus {
            child,
            url: format!("http://{address}"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = get(&format!("{}/-/ready", prometheus.url)).await {
                return prometheus;
            }
            let exited = prometheus.child.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "prometheus did not become ready ({exited:?}): {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query: Ok(result vector), or Err(the error Prometheus gave).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let (status, body) = get(&url).await?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// GET on the HTTP API, parsed as JSON.
    pub async fn api(&self, path: &str) -> Value {
        let (status, body) = get(&format!("{}{path}", self.url)).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

async fn get(url: &str) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().map_err(|e| format!("{url}: {e}"))?)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Percent-encoding of a query parameter: everything but the unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a query result holds at least one sample with a finite value.
pub fn has_data(result: &[Value]) -> bool {
    result.iter().any(|sample| {
        sample["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}
