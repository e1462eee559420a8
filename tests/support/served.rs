//! What a webhook serves: the certificate a TLS handshake presents, checked against a CA
//! bundle (PEM) as the API server checks it against a caBundle.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject};

/// The served end-entity certificate (DER), when a handshake trusting only `bundle` succeeds.
pub async fn certificate(addr: &str, bundle: &str) -> Option<Vec<u8>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.ok()?).ok()?;
    }
    let config = ClientConfig::builder_with_provider(stsguard::tls::provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = connector
        .connect("localhost".try_into().ok()?, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

/// The first certificate of a PEM text, as DER.
pub fn der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// How many certificates a PEM text holds.
pub fn count(pem: &str) -> usize {
    CertificateDer::pem_slice_iter(pem.as_bytes()).count()
}
