//! Serving certificates: loading and checking PEM files before the server binds, the rustls
//! server configuration, reloading rotated files, and generating a CA and serving certificate.

use std::{
    fs,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

mod reload;
mod validity;

pub use reload::{CertWatcher, Watched, validity};
pub use validity::{Validity, not_after};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate file: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the private key {key} does not belong to the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate date out of range: {0}")]
    Date(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every TLS configuration of stsguard uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its private key, and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = fs::read(cert).map_err(|source| TlsError::Read {
        what: "certificate",
        path: cert.to_owned(),
        source,
    })?;
    let key_pem = fs::read(key).map_err(|source| TlsError::Read {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    certified_key_from_pem(&cert_pem, &key_pem, cert, key)
}

/// Like [`load_certified_key`], from PEM bytes; the paths only name them in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let bad_key = |message: String| TlsError::BadKey {
        path: key.to_owned(),
        message,
    };
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad_key(e.to_string()))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad_key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        // Keys whose public half cannot be derived cannot be compared; the handshake will tell.
        Err(_) => Ok(certified),
    }
}

/// Hands rustls the current serving certificate; [`CertResolver::replace`] swaps it without
/// touching established connections.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The CAs whose client certificates `--client-ca` accepts.
pub fn load_client_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        what: "client CA",
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The webhook's TLS configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1; with
/// `client_ca`, only clients with a certificate it signed complete the handshake.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<RootCertStore>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A CA and a serving certificate it signed, as PEM.
pub struct Generated {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
}

/// Generates a CA and a serving certificate for these DNS names and IP addresses, valid from
/// yesterday for `days`.
pub fn generate(dns: &[String], ips: &[IpAddr], days: i64) -> Result<Generated, TlsError> {
    let today = crate::time::today();
    let from = today.yesterday().unwrap_or(today);
    let until = today.saturating_add(jiff::Span::new().days(days));
    generate_between(dns, ips, from, until)
}

/// [`generate`] with chosen validity dates (midnight UTC), for tests of certificates that have
/// expired or are not valid yet.
pub fn generate_between(
    dns: &[String],
    ips: &[IpAddr],
    from: jiff::civil::Date,
    until: jiff::civil::Date,
) -> Result<Generated, TlsError> {
    let validity = |params: &mut CertificateParams| {
        params.not_before = rcgen::date_time_ymd(
            i32::from(from.year()),
            from.month().unsigned_abs(),
            from.day().unsigned_abs(),
        );
        params.not_after = rcgen::date_time_ymd(
            i32::from(until.year()),
            until.month().unsigned_abs(),
            until.day().unsigned_abs(),
        );
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "stsguard CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names: Vec<String> = dns.to_vec();
    names.extend(ips.iter().map(ToString::to_string));
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns.first().map_or("stsguard", String::as_str),
    );
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    validity(&mut leaf);
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Generated {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// Where a set of generated files lives.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }
}

/// Writes generated certificates into `dir` (the key readable by its owner only).
pub fn write(dir: &Path, generated: &Generated) -> Result<CertFiles, TlsError> {
    let files = CertFiles::in_dir(dir);
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_file(&files.ca, generated.ca_cert.as_bytes(), 0o644)?;
    write_file(&files.cert, generated.cert.as_bytes(), 0o644)?;
    write_file(&files.key, generated.key.as_bytes(), 0o600)?;
    Ok(files)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // Write beside the target and rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// The development certificates in `dir`: reused when a loadable pair is there, generated
/// (for localhost, 127.0.0.1 and ::1) otherwise. Returns the files and whether they are new.
pub fn ensure_dev_certs(dir: &Path) -> Result<(CertFiles, bool), TlsError> {
    let files = CertFiles::in_dir(dir);
    if files.ca.exists() && load_certified_key(&files.cert, &files.key).is_ok() {
        return Ok((files, false));
    }
    let generated = generate(
        &["localhost".to_owned()],
        &[
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ],
        825,
    )?;
    Ok((write(dir, &generated)?, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_mismatched_pair_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            &dir.path().join("a"),
            &generate(&["a.test".into()], &[], 30).unwrap(),
        )
        .unwrap();
        let b = write(
            &dir.path().join("b"),
            &generate(&["b.test".into()], &[], 30).unwrap(),
        )
        .unwrap();
        load_certified_key(&a.cert, &a.key).unwrap();
        let err = load_certified_key(&a.cert, &b.key).unwrap_err().to_string();
        assert!(
            err.contains("does not belong") && err.contains("b/tls.key"),
            "{err}"
        );
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &generate(&["a.test".into()], &[], 30).unwrap()).unwrap();
        let missing = load_certified_key(&dir.path().join("nope.crt"), &files.key).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read certificate"),
            "{missing}"
        );
        let not_cert = load_certified_key(&files.key, &files.key).unwrap_err();
        assert!(
            not_cert.to_string().contains("no PEM certificate"),
            "{not_cert}"
        );
        let not_key = load_certified_key(&files.cert, &files.cert).unwrap_err();
        assert!(
            not_key.to_string().contains("no usable PEM private key"),
            "{not_key}"
        );
    }

    #[test]
    fn dev_certs_are_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (files, fresh) = ensure_dev_certs(dir.path()).unwrap();
        assert!(fresh);
        let first = fs::read(&files.cert).unwrap();
        let (_, fresh) = ensure_dev_certs(dir.path()).unwrap();
        assert!(!fresh);
        assert_eq!(fs::read(&files.cert).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&files.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
