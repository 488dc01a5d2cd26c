#![no_main]
//! Fuzz target: see secprov_fuzz::keystone_identity_provider.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| secprov_fuzz::keystone_identity_provider(data));
