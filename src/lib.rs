//! secprov-operator: declares security identity providers of SaaS systems as Kubernetes
//! resources and reconciles them against the remote APIs.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod error;
pub mod fuzzing;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod simulator;
pub mod telemetry;

pub use error::{Error, Result};
