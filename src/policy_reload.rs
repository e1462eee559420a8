//! Policy hot reload (`--watch-policy`): the policy file is read on an interval; a changed file
//! that loads replaces the policy in force as a whole, and one that does not is rejected with an
//! error and a metric while the old policy stays in force.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{
    metrics::Metrics,
    policy::{Policy, PolicyError, PolicySlot},
};

/// Turns the file's text into the policy to serve (command-line overrides included).
pub type Load = Box<dyn Fn(&str) -> Result<Policy, PolicyError> + Send + Sync>;

pub struct PolicyWatcher {
    path: PathBuf,
    load: Load,
    slot: Arc<PolicySlot>,
    metrics: Arc<Metrics>,
    /// The text in force, and the last text that was rejected.
    serving: Vec<u8>,
    rejected: Option<Vec<u8>>,
}

impl PolicyWatcher {
    /// Starts from the file as it is now (it was loaded at start-up).
    pub fn new(path: PathBuf, load: Load, slot: Arc<PolicySlot>, metrics: Arc<Metrics>) -> Self {
        let serving = std::fs::read(&path).unwrap_or_default();
        PolicyWatcher {
            path,
            load,
            slot,
            metrics,
            serving,
            rejected: None,
        }
    }

    /// Checks the file once: `None` when unchanged (or already rejected), `Some(Ok)` after a
    /// reload, `Some(Err)` for a new text that does not load.
    pub fn check(&mut self) -> Option<Result<(), String>> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) => {
                return self.reject(
                    Vec::new(),
                    format!("cannot read policy file {}: {e}", self.path.display()),
                );
            }
        };
        if text == self.serving || self.rejected.as_ref() == Some(&text) {
            return None;
        }
        let loaded = std::str::from_utf8(&text)
            .map_err(|_| format!("policy {} is not UTF-8 text", self.path.display()))
            .and_then(|s| (self.load)(s).map_err(|e| e.to_string()));
        match loaded {
            Ok(policy) => {
                tracing::info!(policy = %self.path.display(), mode = %policy.mode, "policy reloaded");
                self.slot.set(policy);
                self.metrics.policy_reloaded(true);
                self.serving = text;
                self.rejected = None;
                Some(Ok(()))
            }
            Err(message) => self.reject(text, message),
        }
    }

    fn reject(&mut self, text: Vec<u8>, message: String) -> Option<Result<(), String>> {
        if self.rejected.as_ref() == Some(&text) {
            return None;
        }
        tracing::error!(error = %message, "policy reload rejected; the current policy stays in force");
        self.metrics.policy_reloaded(false);
        self.rejected = Some(text);
        Some(Err(message))
    }

    pub async fn run(mut self, interval: Duration) {
        crate::periodic::every(interval, || {
            let _ = self.check();
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Mode;

    #[test]
    fn a_good_change_is_served_and_a_bad_one_rejected_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "mode: enforce\n").unwrap();
        let slot = Arc::new(PolicySlot::new(
            Policy::from_yaml("mode: enforce", "t").unwrap(),
        ));
        let metrics = Arc::new(Metrics::new());
        let origin = path.display().to_string();
        let load: Load = Box::new(move |text| Policy::from_yaml(text, &origin));
        let mut watcher = PolicyWatcher::new(path.clone(), load, slot.clone(), metrics.clone());
        assert!(watcher.check().is_none());

        std::fs::write(&path, "mode: audit\n").unwrap();
        assert_eq!(watcher.check(), Some(Ok(())));
        assert_eq!(slot.get().mode, Mode::Audit);

        std::fs::write(&path, "mode: loud\n").unwrap();
        let error = watcher.check().unwrap().unwrap_err();
        assert!(
            error.contains("policy.yaml") && error.contains("loud"),
            "{error}"
        );
        assert!(watcher.check().is_none(), "reported once");
        assert_eq!(
            slot.get().mode,
            Mode::Audit,
            "the old policy stays in force"
        );

        std::fs::remove_file(&path).unwrap();
        assert!(
            watcher
                .check()
                .unwrap()
                .unwrap_err()
                .contains("cannot read")
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"stsguard_policy_reloads_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stsguard_policy_reloads_total{result="failure"} 2"#),
            "{text}"
        );
    }
}
