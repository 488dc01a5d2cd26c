//! End-to-end harness: the workspace crate secprov-harness (harness/), which the benchmark and
//! the demo use too. A real control plane (tests/controlplane/up.sh, once per test run), real
//! `kubectl`, the real `secprov-operator run` binary as a subprocess, and in-process
//! simulators. Each test gets its own namespace and its own operator scoped to it.
pub use secprov_harness::*;
