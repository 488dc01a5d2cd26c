#![no_main]
//! Fuzz target: see secprov_fuzz::jitsudo_error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov_fuzz::jitsudo_error(data));
