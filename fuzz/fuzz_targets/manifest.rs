//! Bytes as a manifest file (YAML and JSON): `manifest::parse_into` then `audit::audit`. See
//! `stsguard_fuzz::check_audit`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| stsguard_fuzz::manifest(data));
