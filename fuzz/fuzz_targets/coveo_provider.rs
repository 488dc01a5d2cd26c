#![no_main]
//! Fuzz target: see secprov_fuzz::coveo_provider.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov_fuzz::coveo_provider(data));
