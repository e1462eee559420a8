//! When a certificate expires: `notAfter` read from its DER encoding. Only the path to the
//! validity field is walked (RFC 5280 §4.1), with every length checked against what is left.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

/// One DER element: its tag, and its contents and the bytes after it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The certificate's `notAfter`, as a Unix timestamp in seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == EXPLICIT_VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, then validity.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    parse_time(tag, std::str::from_utf8(time).ok()?)
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    let full = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let year: i32 = digits[..2].parse().ok()?;
            format!("{}{}", if year >= 50 { 19 } else { 20 }, digits)
        }
        (GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return None,
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| full[range].parse::<i16>().ok();
    let datetime = DateTime::new(
        field(0..4)?,
        i8::try_from(field(4..6)?).ok()?,
        i8::try_from(field(6..8)?).ok()?,
        i8::try_from(field(8..10)?).ok()?,
        i8::try_from(field(10..12)?).ok()?,
        i8::try_from(field(12..14)?).ok()?,
        0,
    )
    .ok()?;
    let timestamp: Timestamp = datetime.to_zoned(TimeZone::UTC).ok()?.timestamp();
    Some(timestamp.as_second())
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;
    use crate::tls::generate;

    #[test]
    fn reads_not_after_of_generated_certificates() {
        let generated = generate(&["a.test".into()], &[], 30).unwrap();
        let der = CertificateDer::from_pem_slice(generated.cert.as_bytes()).unwrap();
        let expires = not_after(&der).unwrap();
        let in_30_days = Timestamp::now().as_second() + 30 * 86_400;
        // rcgen writes whole days (midnight UTC).
        assert!(
            (expires - in_30_days).abs() <= 86_400,
            "{expires} vs {in_30_days}"
        );
    }

    #[test]
    fn parses_both_time_forms_and_rejects_garbage() {
        assert_eq!(parse_time(UTC_TIME, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(UTC_TIME, "500101000000Z"), Some(-631_152_000));
        assert_eq!(
            parse_time(GENERALIZED_TIME, "20500101000000Z"),
            Some(2_524_608_000)
        );
        for (tag, bad) in [
            (UTC_TIME, "4912312359Z"),
            (UTC_TIME, "49123123595aZ"),
            (GENERALIZED_TIME, "20501301000000Z"),
        ] {
            assert_eq!(parse_time(tag, bad), None, "{bad}");
        }
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }
}
