#![no_main]
//! Fuzz target: see secprov::fuzzing::keystone_error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov::fuzzing::keystone_error(data));
