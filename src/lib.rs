//! secprov-operator: declares security identity providers of SaaS systems as Kubernetes
//! resources and reconciles them against the remote APIs.
#![forbid(unsafe_code)]
// Remote errors carry the remote code, message and request id on purpose; they are built on
// the cold path only, so their size costs nothing worth boxing for.
#![allow(clippy::result_large_err)]
// kube-derive's `printcolumn(...)` repeats `type_` once per column by design.
#![allow(clippy::duplicated_attributes)]
// A function should read at once: at most `too-many-lines-threshold` (clippy.toml) lines of
// code. Tests are exempt (a scenario reads top to bottom).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod api;
pub mod app;
pub mod backend;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod error;
pub mod fingerprint_key;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod shard;
pub mod telemetry;

pub use error::{Error, Result};
