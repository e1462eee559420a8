//! Following certificate rotation. The files are read on an interval and compared with what is
//! serving, so any way of replacing them is seen, kubelet's atomic `..data` symlink swap for
//! Secret volumes included. A complete pair whose key matches replaces the certificate for new
//! handshakes (established connections keep theirs); a missing, half-written or mismatched pair
//! is logged and counted once and ignored until a good pair appears.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;

use super::{CertResolver, TlsError, Validity, certified_key_from_pem};
use crate::metrics::Metrics;

/// Expiry closer than this is warned about (at start, on reload, and daily).
const WARN_BEFORE_SECONDS: i64 = 30 * 86_400;

/// The certificate and key files a server was started with.
#[derive(Clone, Debug)]
pub struct Watched {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Polls the files and swaps in new pairs.
pub struct CertWatcher {
    files: Watched,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    /// The contents now serving, and the last contents that failed to load.
    serving: (Vec<u8>, Vec<u8>),
    rejected: Option<(Vec<u8>, Vec<u8>)>,
    last_warning: Option<Instant>,
    /// The validity problem last logged, so each is logged once when it starts.
    invalid: Option<String>,
}

impl CertWatcher {
    /// Starts from the files as they are now (they were loaded and checked at start-up).
    pub fn new(files: Watched, resolver: Arc<CertResolver>, metrics: Arc<Metrics>) -> Self {
        let serving = (
            std::fs::read(&files.cert).unwrap_or_default(),
            std::fs::read(&files.key).unwrap_or_default(),
        );
        let mut watcher = CertWatcher {
            files,
            resolver,
            metrics,
            serving,
            rejected: None,
            last_warning: None,
            invalid: None,
        };
        watcher.record_expiry(false);
        watcher.report_validity();
        watcher
    }

    /// Checks the files once: `None` when unchanged (or already rejected), `Some(Ok)` after a
    /// reload, `Some(Err)` for a new pair that cannot serve.
    pub fn check(&mut self) -> Option<Result<(), TlsError>> {
        self.warn_if_expiring();
        let read = |path: &PathBuf| std::fs::read(path);
        let current = match (read(&self.files.cert), read(&self.files.key)) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(source), _) | (_, Err(source)) => {
                let missing = (Vec::new(), Vec::new());
                if self.rejected.as_ref() == Some(&missing) {
                    return None;
                }
                self.rejected = Some(missing);
                let path = if self.files.cert.exists() {
                    &self.files.key
                } else {
                    &self.files.cert
                };
                return Some(Err(self.failed(TlsError::Read {
                    what: "certificate or key",
                    path: path.clone(),
                    source,
                })));
            }
        };
        if current == self.serving || self.rejected.as_ref() == Some(&current) {
            return None;
        }
        match certified_key_from_pem(&current.0, &current.1, &self.files.cert, &self.files.key) {
            Ok(certified) => {
                self.resolver.replace(certified);
                self.serving = current;
                self.rejected = None;
                self.last_warning = None;
                self.record_expiry(true);
                tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                Some(Ok(()))
            }
            Err(e) => {
                self.rejected = Some(current);
                Some(Err(self.failed(e)))
            }
        }
    }

    fn failed(&self, error: TlsError) -> TlsError {
        tracing::error!(error = %error, "certificate reload failed; the current certificate keeps serving");
        self.metrics.certificate_reload_failed();
        error
    }

    fn record_expiry(&mut self, reload: bool) {
        if let Some(validity) = validity(&self.resolver) {
            self.metrics
                .certificate_loaded(validity.not_before, validity.not_after, reload);
        }
        self.warn_if_expiring();
    }

    fn warn_if_expiring(&mut self) {
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < Duration::from_secs(86_400))
        {
            return;
        }
        let Some(expires) = validity(&self.resolver).map(|v| v.not_after) else {
            return;
        };
        let left = expires - Timestamp::now().as_second();
        if left < WARN_BEFORE_SECONDS {
            tracing::warn!(
                cert = %self.files.cert.display(),
                days_left = left / 86_400,
                "the serving certificate expires soon; rotate it (the server reloads it by itself)"
            );
            self.last_warning = Some(Instant::now());
        }
    }

    /// Logs an error when the serving certificate falls outside its validity (and when it is
    /// back inside): `/readyz` then says not ready, and every handshake fails.
    pub fn report_validity(&mut self) -> Option<&str> {
        let now = Timestamp::now().as_second();
        let problem = validity(&self.resolver).and_then(|v| v.problem(now));
        if problem != self.invalid {
            match &problem {
                Some(problem) => tracing::error!(
                    cert = %self.files.cert.display(),
                    "{problem}: TLS handshakes fail and /readyz reports not ready until it is replaced"
                ),
                None => {
                    tracing::info!(cert = %self.files.cert.display(), "the serving certificate is valid again")
                }
            }
            self.invalid = problem;
        }
        self.invalid.as_deref()
    }

    /// Checks every `interval` for the life of the process.
    pub async fn run(mut self, interval: Duration) {
        crate::periodic::every(interval, || {
            let _ = self.check();
            self.report_validity();
        })
        .await;
    }
}

/// When the serving certificate is valid, from its end-entity certificate.
pub fn validity(resolver: &CertResolver) -> Option<Validity> {
    resolver
        .current()
        .cert
        .first()
        .and_then(|der| Validity::of(der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{generate, load_certified_key, write};

    fn watcher(dir: &std::path::Path) -> (CertWatcher, Arc<CertResolver>, Arc<Metrics>) {
        let files = write(dir, &generate(&["a.test".into()], &[], 3).unwrap()).unwrap();
        let resolver = Arc::new(CertResolver::new(
            load_certified_key(&files.cert, &files.key).unwrap(),
        ));
        let metrics = Arc::new(Metrics::new());
        let watched = Watched {
            cert: files.cert,
            key: files.key,
        };
        (
            CertWatcher::new(watched, resolver.clone(), metrics.clone()),
            resolver,
            metrics,
        )
    }

    #[test]
    fn a_new_pair_is_served_and_a_broken_one_ignored_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut watcher, resolver, metrics) = watcher(dir.path());
        assert!(watcher.check().is_none(), "unchanged files");
        let first = resolver.current();

        // Half-written: a new certificate with the old key.
        let next = generate(&["b.test".into()], &[], 400).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &next.cert).unwrap();
        assert!(matches!(
            watcher.check(),
            Some(Err(TlsError::Mismatch { .. }))
        ));
        assert!(
            watcher.check().is_none(),
            "the same broken pair is reported once"
        );
        assert!(
            Arc::ptr_eq(&resolver.current(), &first),
            "the old certificate keeps serving"
        );

        std::fs::write(dir.path().join("tls.key"), &next.key).unwrap();
        assert!(matches!(watcher.check(), Some(Ok(()))));
        assert!(!Arc::ptr_eq(&resolver.current(), &first));
        let text = metrics.render();
        assert!(
            text.contains(r#"stsguard_certificate_reloads_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"stsguard_certificate_reloads_total{result="failure"} 1"#),
            "{text}"
        );
        let validity = validity(&resolver).unwrap();
        assert!(text.contains(&format!(
            "stsguard_certificate_expiry_timestamp_seconds {}",
            validity.not_after
        )));
        assert!(text.contains(&format!(
            "stsguard_certificate_not_before_timestamp_seconds {}",
            validity.not_before
        )));
    }

    #[test]
    fn a_certificate_outside_its_validity_is_reported_until_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let expired = crate::tls::generate_between(
            &["a.test".into()],
            &[],
            "2020-01-01".parse().unwrap(),
            "2021-01-01".parse().unwrap(),
        )
        .unwrap();
        let files = write(dir.path(), &expired).unwrap();
        let resolver = Arc::new(CertResolver::new(
            load_certified_key(&files.cert, &files.key).unwrap(),
        ));
        let watched = Watched {
            cert: files.cert,
            key: files.key,
        };
        let metrics = Arc::new(Metrics::new());
        let mut watcher = CertWatcher::new(watched, resolver, metrics.clone());
        assert!(
            watcher
                .report_validity()
                .is_some_and(|p| p.contains("expired at 2021-01-01")),
        );
        assert!(
            metrics
                .render()
                .contains("stsguard_certificate_not_before_timestamp_seconds 1577836800")
        );
        let fresh = generate(&["a.test".into()], &[], 30).unwrap();
        write(dir.path(), &fresh).unwrap();
        assert!(matches!(watcher.check(), Some(Ok(()))));
        assert_eq!(watcher.report_validity(), None);
    }

    #[test]
    fn removed_files_keep_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut watcher, resolver, _) = watcher(dir.path());
        let first = resolver.current();
        std::fs::remove_file(dir.path().join("tls.key")).unwrap();
        assert!(matches!(watcher.check(), Some(Err(TlsError::Read { .. }))));
        assert!(watcher.check().is_none());
        assert!(Arc::ptr_eq(&resolver.current(), &first));
    }
}
