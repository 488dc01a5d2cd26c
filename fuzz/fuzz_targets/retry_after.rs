#![no_main]
//! Fuzz target: see secprov::fuzzing::retry_after.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov::fuzzing::retry_after(data));
