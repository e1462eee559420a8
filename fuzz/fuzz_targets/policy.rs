//! Bytes as policy text: `Policy::from_yaml`. See `stsguard_fuzz::check_policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| stsguard_fuzz::policy(data));
