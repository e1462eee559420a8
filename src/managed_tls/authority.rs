//! The self-managed CA and serving certificate as they are kept in a Secret, and the one
//! decision the leader takes on each look at it: what, if anything, to change now.
//!
//! Every step is derived from the certificates' own dates, so the Secret holds no other state
//! and any replica that becomes leader continues where the last one stopped:
//! - the serving certificate is reissued at two thirds of its life (or when the names change);
//! - at two thirds of the CA's life a next CA is made and joins the bundle (`ca.crt`) beside
//!   the current one, so the webhook configurations trust both before anything is signed by it;
//! - `overlap` after that, the next CA becomes the current one and signs a new serving
//!   certificate; the old CA stays in the bundle;
//! - `overlap` after that serving certificate was issued (every replica has loaded it), the old
//!   CA leaves the bundle.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::tls::{TlsError, Validity};

/// Certificates start this long before they are made, for clocks that lag behind ours.
pub const BACKDATE_SECONDS: i64 = 300;

/// Lifetimes, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ca_validity: i64,
    pub cert_validity: i64,
    /// How long a CA is in the bundle before it signs, and stays after it stopped: time for the
    /// webhook configurations and every replica to follow.
    pub overlap: i64,
}

impl Timing {
    /// Lifetimes that leave each step room: the serving certificate fits in the CA's life and
    /// the overlap in the last third of either.
    pub fn check(&self) -> Result<(), String> {
        if self.overlap <= 0 || self.cert_validity <= 0 {
            return Err("--cert-validity and --ca-roll-overlap must be above 0".into());
        }
        if self.cert_validity > self.ca_validity {
            return Err(format!(
                "--cert-validity ({}s) must not exceed --ca-validity ({}s)",
                self.cert_validity, self.ca_validity
            ));
        }
        if 3 * self.overlap >= self.cert_validity {
            return Err(format!(
                "--ca-roll-overlap ({}s) must be under a third of --cert-validity ({}s)",
                self.overlap, self.cert_validity
            ));
        }
        Ok(())
    }
}

/// A certificate and its key, as PEM, with its dates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub cert: String,
    pub key: String,
    pub validity: Validity,
}

impl Pair {
    fn parse(cert: String, key: String) -> Option<Pair> {
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).ok()?;
        let validity = Validity::of(&der)?;
        Some(Pair {
            cert,
            key,
            validity,
        })
    }

    /// Two thirds into its life (counted from when it was made, not from its backdated start).
    fn renewal_due(&self) -> i64 {
        let made = self.issued_at();
        made + (self.validity.not_after - made) * 2 / 3
    }

    fn issued_at(&self) -> i64 {
        self.validity.not_before + BACKDATE_SECONDS
    }
}

/// What the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The CA that signs now.
    pub authority: Pair,
    /// A CA already trusted that will sign after the overlap.
    pub next: Option<Pair>,
    /// A CA that signed until lately, still trusted (certificate only).
    pub previous: Option<String>,
    pub serving: Pair,
}

const KEYS: [&str; 8] = [
    "ca.crt",
    "tls.crt",
    "tls.key",
    "authority.crt",
    "authority.key",
    "next-authority.crt",
    "next-authority.key",
    "previous-authority.crt",
];

impl Material {
    /// Reads the Secret's data; `None` when a required key is missing or does not parse (the
    /// leader then starts afresh).
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<Material> {
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let pair = |cert: &str, key: &str| Pair::parse(text(cert)?, text(key)?);
        let next = match (text("next-authority.crt"), text("next-authority.key")) {
            (Some(cert), Some(key)) => Some(Pair::parse(cert, key)?),
            _ => None,
        };
        Some(Material {
            authority: pair("authority.crt", "authority.key")?,
            next,
            previous: text("previous-authority.crt"),
            serving: pair("tls.crt", "tls.key")?,
        })
    }

    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
        };
        put("ca.crt", &self.bundle());
        put("tls.crt", &self.serving.cert);
        put("tls.key", &self.serving.key);
        put("authority.crt", &self.authority.cert);
        put("authority.key", &self.authority.key);
        if let Some(next) = &self.next {
            put("next-authority.crt", &next.cert);
            put("next-authority.key", &next.key);
        }
        if let Some(previous) = &self.previous {
            put("previous-authority.crt", previous);
        }
        debug_assert!(data.keys().all(|k| KEYS.contains(&k.as_str())));
        data
    }

    /// Every CA a client must trust now, PEM: the current one, then the next or previous one.
    pub fn bundle(&self) -> String {
        let mut bundle = self.authority.cert.trim_end().to_owned();
        for other in [self.next.as_ref().map(|p| &p.cert), self.previous.as_ref()]
            .into_iter()
            .flatten()
        {
            bundle.push('\n');
            bundle.push_str(other.trim_end());
        }
        bundle.push('\n');
        bundle
    }
}

/// The change due at `now`, with why; `None` when the Secret is as it should be.
pub fn next_step(
    current: Option<&Material>,
    names: &[String],
    now: i64,
    timing: Timing,
) -> Result<Option<(Material, &'static str)>, TlsError> {
    let Some(m) = current else {
        return fresh(names, now, timing, "no certificate yet").map(Some);
    };
    if m.authority.validity.not_after <= now {
        return fresh(names, now, timing, "the CA expired").map(Some);
    }
    if !covers(&m.serving, names) {
        let serving = issue_serving(&m.authority, names, now, timing)?;
        return Ok(Some((
            Material {
                serving,
                ..m.clone()
            },
            "the DNS names changed",
        )));
    }
    if let Some(next) = &m.next
        && now >= next.issued_at() + timing.overlap
    {
        let serving = issue_serving(next, names, now, timing)?;
        let switched = Material {
            authority: next.clone(),
            next: None,
            previous: Some(m.authority.cert.clone()),
            serving,
        };
        return Ok(Some((switched, "the next CA signs from now on")));
    }
    if m.next.is_none() && now >= m.authority.renewal_due() {
        let next = issue_authority(now, timing)?;
        let added = Material {
            next: Some(next),
            previous: None,
            ..m.clone()
        };
        return Ok(Some((
            added,
            "the CA nears its end: the next CA joins the bundle",
        )));
    }
    if m.previous.is_some() && now >= m.serving.issued_at() + timing.overlap {
        let dropped = Material {
            previous: None,
            ..m.clone()
        };
        return Ok(Some((dropped, "the previous CA leaves the bundle")));
    }
    if now >= m.serving.renewal_due() || m.serving.validity.not_after <= now {
        let serving = issue_serving(&m.authority, names, now, timing)?;
        return Ok(Some((
            Material {
                serving,
                ..m.clone()
            },
            "the serving certificate is two thirds through its life",
        )));
    }
    Ok(None)
}

fn fresh(
    names: &[String],
    now: i64,
    timing: Timing,
    why: &'static str,
) -> Result<(Material, &'static str), TlsError> {
    let authority = issue_authority(now, timing)?;
    let serving = issue_serving(&authority, names, now, timing)?;
    Ok((
        Material {
            authority,
            next: None,
            previous: None,
            serving,
        },
        why,
    ))
}

fn at(seconds: i64) -> Result<::time::OffsetDateTime, TlsError> {
    ::time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| TlsError::Date(format!("{seconds}: {e}")))
}

/// A new CA valid from now (less the backdate) for `ca_validity`.
pub fn issue_authority(now: i64, timing: Timing) -> Result<Pair, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = DistinguishedName::new();
    // Unique per CA, so the two CAs of a roll are told apart by name too.
    let made =
        jiff::Timestamp::from_second(now).map_or_else(|_| now.to_string(), |t| t.to_string());
    params
        .distinguished_name
        .push(DnType::CommonName, format!("stsguard CA {made}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - BACKDATE_SECONDS)?;
    params.not_after = at(now + timing.ca_validity)?;
    let cert = params.self_signed(&key)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        validity: Validity {
            not_before: now - BACKDATE_SECONDS,
            not_after: now + timing.ca_validity,
        },
    })
}

/// A serving certificate for `names` signed by `authority`, ending with it at the latest.
pub fn issue_serving(
    authority: &Pair,
    names: &[String],
    now: i64,
    timing: Timing,
) -> Result<Pair, TlsError> {
    let ca_key = KeyPair::from_pem(&authority.key)?;
    let issuer = Issuer::from_ca_cert_pem(&authority.cert, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("stsguard", String::as_str),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = (now + timing.cert_validity).min(authority.validity.not_after);
    params.not_before = at(now - BACKDATE_SECONDS)?;
    params.not_after = at(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        validity: Validity {
            not_before: now - BACKDATE_SECONDS,
            not_after,
        },
    })
}

/// Whether the certificate names exactly these DNS names.
fn covers(pair: &Pair, names: &[String]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pair.cert.as_bytes()) else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let mut named: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut wanted = names.to_vec();
    named.sort();
    wanted.sort();
    named == wanted
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
