//! A certificate's validity period (`notBefore`, `notAfter`), read with x509-parser: a serving
//! certificate outside it fails every TLS handshake, so the webhook must not report ready then.

use jiff::Timestamp;
use x509_parser::prelude::{FromDer, X509Certificate};

/// When a certificate is valid, as Unix timestamps in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The validity of a DER-encoded certificate; `None` when it does not parse.
    pub fn of(der: &[u8]) -> Option<Validity> {
        let (_, certificate) = X509Certificate::from_der(der).ok()?;
        let validity = certificate.validity();
        Some(Validity {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Why a TLS client refuses the certificate at `now` (Unix seconds), if it does.
    pub fn problem(&self, now: i64) -> Option<String> {
        let at =
            |t: i64| Timestamp::from_second(t).map_or_else(|_| t.to_string(), |t| t.to_string());
        if now < self.not_before {
            Some(format!(
                "the serving certificate is not valid before {}",
                at(self.not_before)
            ))
        } else if now > self.not_after {
            Some(format!(
                "the serving certificate expired at {}",
                at(self.not_after)
            ))
        } else {
            None
        }
    }
}

/// The certificate's `notAfter`, as a Unix timestamp in seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    Validity::of(der).map(|v| v.not_after)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;
    use crate::tls::{generate, generate_between};

    fn validity(pem: &str) -> Validity {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        Validity::of(&der).unwrap()
    }

    #[test]
    fn reads_both_dates_of_generated_certificates() {
        let generated = generate(&["a.test".into()], &[], 30).unwrap();
        let v = validity(&generated.cert);
        let now = Timestamp::now().as_second();
        // rcgen writes whole days (midnight UTC), from yesterday.
        assert!((v.not_after - (now + 30 * 86_400)).abs() <= 86_400, "{v:?}");
        assert!(
            v.not_before <= now && now - v.not_before <= 2 * 86_400,
            "{v:?}"
        );
        assert_eq!(v.problem(now), None);
    }

    #[test]
    fn a_certificate_outside_its_dates_says_which_side() {
        let future = generate_between(
            &["a.test".into()],
            &[],
            "2099-01-01".parse().unwrap(),
            "2100-01-01".parse().unwrap(),
        )
        .unwrap();
        let v = validity(&future.cert);
        let now = Timestamp::now().as_second();
        assert_eq!(
            v.problem(now).unwrap(),
            "the serving certificate is not valid before 2099-01-01T00:00:00Z"
        );
        let past = generate_between(
            &["a.test".into()],
            &[],
            "2020-01-01".parse().unwrap(),
            "2021-01-01".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            validity(&past.cert).problem(now).unwrap(),
            "the serving certificate expired at 2021-01-01T00:00:00Z"
        );
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
