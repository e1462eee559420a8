use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

const T0: i64 = 1_800_000_000;
const TIMING: Timing = Timing {
    ca_validity: 300,
    cert_validity: 90,
    overlap: 10,
};

fn names() -> Vec<String> {
    vec!["stsguard.ns.svc".into(), "stsguard.ns".into()]
}

fn parsed(pem: &str) -> (String, String) {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    (cert.subject().to_string(), cert.issuer().to_string())
}

fn bundle_subjects(m: &Material) -> Vec<String> {
    CertificateDer::pem_slice_iter(m.bundle().as_bytes())
        .map(|der| {
            let der = der.unwrap();
            X509Certificate::from_der(&der)
                .unwrap()
                .1
                .subject()
                .to_string()
        })
        .collect()
}

fn step(m: &Material, now: i64) -> Option<(Material, &'static str)> {
    next_step(Some(m), &names(), now, TIMING).unwrap()
}

#[test]
fn timing_leaves_each_step_room() {
    assert!(TIMING.check().is_ok());
    let long_cert = Timing {
        cert_validity: 400,
        ..TIMING
    };
    assert!(long_cert.check().unwrap_err().contains("must not exceed"));
    let long_overlap = Timing {
        overlap: 30,
        ..TIMING
    };
    assert!(long_overlap.check().unwrap_err().contains("under a third"));
}

#[test]
fn a_first_look_makes_a_ca_and_a_serving_certificate_it_signed() {
    let (m, why) = next_step(None, &names(), T0, TIMING).unwrap().unwrap();
    assert_eq!(why, "no certificate yet");
    let (ca_subject, ca_issuer) = parsed(&m.authority.cert);
    assert_eq!(ca_subject, ca_issuer, "the CA is self-signed");
    assert_eq!(parsed(&m.serving.cert).1, ca_subject);
    assert_eq!(bundle_subjects(&m), vec![ca_subject]);
    assert!(covers(&m.serving, &names()));
    assert_eq!(m.serving.validity.not_after, T0 + 90);
    assert_eq!(m.serving.validity.not_before, T0 - BACKDATE_SECONDS);
    assert_eq!(step(&m, T0 + 10), None, "nothing to do a moment later");
    // The Secret's data reads back as the same material.
    assert_eq!(Material::from_data(&m.to_data()), Some(m));
}

#[test]
fn the_serving_certificate_is_renewed_at_two_thirds_by_the_same_ca() {
    let (m, _) = next_step(None, &names(), T0, TIMING).unwrap().unwrap();
    assert_eq!(step(&m, T0 + 59), None);
    let (renewed, why) = step(&m, T0 + 60).unwrap();
    assert!(why.contains("two thirds"), "{why}");
    assert_ne!(renewed.serving, m.serving);
    assert_eq!(renewed.authority, m.authority);
    assert_eq!(renewed.bundle(), m.bundle(), "trust does not change");
    assert_eq!(renewed.serving.validity.not_after, T0 + 60 + 90);
}

#[test]
fn the_ca_rolls_with_both_cas_trusted_across_the_switch() {
    let (m, _) = next_step(None, &names(), T0, TIMING).unwrap().unwrap();
    let old_ca = parsed(&m.authority.cert).0;
    // Keep the serving certificate fresh up to the CA's two-thirds point (200 s).
    let mut m = m;
    let mut now = T0;
    while now < T0 + 195 {
        now += 5;
        if let Some((next, _)) = step(&m, now) {
            m = next;
        }
        assert_eq!(
            bundle_subjects(&m).len(),
            1,
            "one CA until the roll, at {now}"
        );
    }
    assert!(m.next.is_none());
    // A look later than the two-thirds point adds the next CA; nothing else changes.
    let (added, why) = step(&m, T0 + 201).unwrap();
    assert!(why.contains("next CA joins"), "{why}");
    let new_ca = parsed(&added.next.as_ref().unwrap().cert).0;
    assert_ne!(new_ca, old_ca);
    assert_eq!(
        bundle_subjects(&added),
        vec![old_ca.clone(), new_ca.clone()]
    );
    assert_eq!(added.serving, m.serving, "still signed by the old CA");
    // The switch waits for the overlap.
    assert_eq!(step(&added, T0 + 210), None);
    let (switched, why) = step(&added, T0 + 211).unwrap();
    assert!(why.contains("signs from now on"), "{why}");
    assert_eq!(parsed(&switched.serving.cert).1, new_ca);
    assert_eq!(bundle_subjects(&switched), vec![new_ca.clone(), old_ca]);
    // The old CA goes once the new serving certificate has been out for the overlap.
    assert_eq!(step(&switched, T0 + 220), None);
    let (dropped, why) = step(&switched, T0 + 221).unwrap();
    assert!(why.contains("leaves the bundle"), "{why}");
    assert_eq!(bundle_subjects(&dropped), vec![new_ca]);
    assert_eq!(dropped.serving, switched.serving);
}

#[test]
fn new_names_or_an_expired_ca_are_taken_care_of() {
    let (m, _) = next_step(None, &names(), T0, TIMING).unwrap().unwrap();
    let other = vec!["other.ns.svc".to_owned()];
    let (renamed, why) = next_step(Some(&m), &other, T0 + 1, TIMING)
        .unwrap()
        .unwrap();
    assert_eq!(why, "the DNS names changed");
    assert!(covers(&renamed.serving, &other));
    assert_eq!(renamed.authority, m.authority);
    let (fresh, why) = step(&m, T0 + 301).unwrap();
    assert_eq!(why, "the CA expired");
    assert_ne!(fresh.authority, m.authority);
}

#[test]
fn data_missing_a_key_or_holding_garbage_is_no_material() {
    let (m, _) = next_step(None, &names(), T0, TIMING).unwrap().unwrap();
    let mut data = m.to_data();
    data.remove("authority.key");
    assert_eq!(Material::from_data(&data), None);
    let mut data = m.to_data();
    data.insert("tls.crt".into(), ByteString(b"not a certificate".to_vec()));
    assert_eq!(Material::from_data(&data), None);
}
