#![no_main]
//! Fuzz target: see secprov_fuzz::retry_after.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov_fuzz::retry_after(data));
