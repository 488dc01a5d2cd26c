//! The one harness of everything that drives secprov-operator from outside: the end-to-end
//! tests (tests/support re-exports it), the benchmark (benches/operator.rs) and the demo
//! (`make demo`). It holds the local control plane, `kubectl`, the operator as a process, the
//! in-process simulators with the example connections pointing at them, waits that prove the
//! operator was active, and the example manifests with their demo endpoints.

pub mod cluster;
pub mod demo;
pub mod docs;
pub mod env;
pub mod examples;
pub mod http;
pub mod image;
pub mod manifests;
pub mod namespace;
pub mod operator;
pub mod process;
pub mod wait;

pub use cluster::{
    apply_crds, control_plane_down, control_plane_up, go_tool, kubeconfig, kubectl, repo, run,
    run_kubectl,
};
pub use docs::markdown_anchor;
pub use env::*;
pub use examples::*;
pub use http::{free_port, http_get, http_get_result, http_request};
pub use image::image_archive;
pub use manifests::*;
pub use namespace::TestNamespace;
pub use operator::{Operator, operator_binary, operator_cli, operator_cli_exit};
pub use process::Process;
pub use wait::{condition, condition_message, conditions_summary, eventually};
