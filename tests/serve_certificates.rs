//! `stsguard serve`'s certificates as a process: rotation the way kubelet swaps a Secret without
//! dropping connections, a client CA that admits only its clients, and a serving certificate
//! outside its validity making `/readyz` not ready.

mod support;

use std::{path::Path, time::Duration};

use support::{
    Http, client_trusting, fixture,
    process::{probe_metrics, serve_logged, start_with},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Lays out a certificate pair the way kubelet mounts a Secret: files behind a `..data`
/// symlink to a timestamped directory, swapped atomically by renaming a new symlink over it.
fn kubelet_swap(dir: &Path, version: &str, cert: &str, key: &str) {
    let target = dir.join(format!("..{version}"));
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("tls.crt"), cert).unwrap();
    std::fs::write(target.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// The certificate a new TLS connection to `addr` is served.
async fn served_certificate(addr: &str, ca_pem: &str) -> Vec<u8> {
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(support::client_config(ca_pem)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn rotated_certificates_are_served_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("secret");
    std::fs::create_dir(&volume).unwrap();
    let names = ["localhost".to_owned()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let first = stsguard::tls::generate(&names, &ips, 30).unwrap();
    let second = stsguard::tls::generate(&names, &ips, 30).unwrap();
    kubelet_swap(&volume, "2026_11_24_a", &first.cert, &first.key);
    let trust = format!("{}{}", first.ca_cert, second.ca_cert);

    let cert = volume.join("tls.crt");
    let key = volume.join("tls.key");
    let running = start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--cert-reload-interval",
            "100ms",
        ],
    );
    assert_eq!(
        served_certificate(&running.addr, &trust).await,
        der(&first.cert)
    );

    // A client holding an HTTP/2 connection across the rotation.
    let held = client_trusting(&trust, Http::Two);
    let url = format!("https://{}/validate", running.addr);
    let before = held
        .post(&url, fixture("validate-StatefulSet-CREATE-cap-web-1"))
        .await;
    assert_eq!(before.status, 200);

    kubelet_swap(&volume, "2026_11_24_b", &second.cert, &second.key);
    let mut rotated = false;
    for _ in 0..100 {
        if served_certificate(&running.addr, &trust).await == der(&second.cert) {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new certificate is served to new connections");
    let after = held
        .post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
        .await;
    assert_eq!(after.status, 200, "the held connection keeps working");
    assert_eq!(after.json()["response"]["allowed"], false);

    // A broken pair (certificate without its key) is ignored: the good one keeps serving.
    let third = stsguard::tls::generate(&names, &ips, 30).unwrap();
    kubelet_swap(&volume, "2026_11_24_c", &third.cert, &first.key);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_certificate(&running.addr, &trust).await,
        der(&second.cert)
    );

    let metrics = probe_metrics(&running.probe).await;
    assert!(
        metrics.contains(r#"stsguard_certificate_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_certificate_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
    let expiry = stsguard::tls::not_after(&der(&second.cert)).unwrap();
    assert!(
        metrics.contains(&format!(
            "stsguard_certificate_expiry_timestamp_seconds {expiry}"
        )),
        "{metrics}"
    );
}

/// A CA and a client certificate (clientAuth) it signed.
fn client_identity(name: &str) -> stsguard::tls::Generated {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    stsguard::tls::Generated {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test]
async fn client_ca_admits_only_clients_with_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["localhost".to_owned()];
    let ips = ["127.0.0.1".parse().unwrap()];
    let serving = stsguard::tls::generate(&names, &ips, 30).unwrap();
    let files = stsguard::tls::write(&dir.path().join("serving"), &serving).unwrap();
    // The API server's client certificate, and a stranger's, from two different CAs.
    let apiserver = client_identity("kube-apiserver");
    let stranger = client_identity("stranger");
    let client_ca = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca, &apiserver.ca_cert).unwrap();

    let running = start_with(
        dir.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
            "--client-ca",
            client_ca.to_str().unwrap(),
        ],
    );

    let connect = |identity: Option<&stsguard::tls::Generated>| {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        roots
            .add(CertificateDer::from_pem_slice(serving.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(stsguard::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let addr = running.addr.clone();
        async move {
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut tls = connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await?;
            let body = fixture("validate-StatefulSet-CREATE-cap-nosvc-1");
            tls.write_all(format!("POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes()).await?;
            tls.write_all(&body).await?;
            let mut response = Vec::new();
            tls.read_to_end(&mut response).await?;
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
        }
    };
    let admitted = connect(Some(&apiserver))
        .await
        .expect("the API server's certificate is accepted");
    assert!(
        admitted.starts_with("HTTP/1.1 200") && admitted.contains("\"allowed\":false"),
        "{admitted}"
    );
    // With TLS 1.3 the server's refusal may arrive after the client thinks the handshake is done;
    // either way no answer comes back.
    for refused in [connect(Some(&stranger)).await, connect(None).await] {
        assert!(
            refused.as_deref().map_or(true, |r| !r.contains("HTTP/1.1")),
            "{refused:?}"
        );
    }
}

/// A serving certificate outside its validity fails every handshake: `/readyz` says not ready and
/// why, for an expired certificate and for one not valid yet.
#[tokio::test]
async fn a_certificate_outside_its_validity_is_not_ready() {
    for (from, until, says) in [
        (
            "2020-01-01",
            "2021-01-01",
            "the serving certificate expired at 2021-01-01T00:00:00Z",
        ),
        (
            "2099-01-01",
            "2100-01-01",
            "the serving certificate is not valid before 2099-01-01T00:00:00Z",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let generated = stsguard::tls::generate_between(
            &["localhost".into()],
            &[],
            from.parse().unwrap(),
            until.parse().unwrap(),
        )
        .unwrap();
        let files = stsguard::tls::write(dir.path(), &generated).unwrap();
        let log_path = dir.path().join("stderr.log");
        let args = [
            "--no-cluster".as_ref(),
            "--tls-cert".as_ref(),
            files.cert.as_os_str(),
            "--tls-key".as_ref(),
            files.key.as_os_str(),
        ];
        let (mut child, serving) = serve_logged(dir.path(), &args, &log_path).await;
        let probe = serving["probe_addr"].as_str().unwrap().to_owned();
        let answer = support::process::probe_get(&probe, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(says), "{answer}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains(says)),
            "{log}"
        );
        child.kill().unwrap();
        let _ = child.wait();
    }
}
