//! Bytes as an AdmissionReview body to /validate and /mutate: `Reviewer::parse` then
//! `Reviewer::answer`. See `stsguard_fuzz::check_answer` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| stsguard_fuzz::review(data));
