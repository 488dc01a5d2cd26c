//! Compiles the fuzz target bodies (fuzz/src/lib.rs, built by `cargo +nightly fuzz`) with the
//! ordinary test suite and runs them on a few nasty inputs, so a parser change that breaks them
//! or makes them panic is caught without a nightly toolchain.
#[path = "../fuzz/src/lib.rs"]
mod bodies;
