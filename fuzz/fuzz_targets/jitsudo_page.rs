#![no_main]
//! Fuzz target: see secprov::fuzzing::jitsudo_page.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov::fuzzing::jitsudo_page(data));
