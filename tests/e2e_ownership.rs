//! Ownership under races and deletion, on the real API server with the Coveo simulator:
//! the status schema never lets a known remoteId go, two objects racing for one id end with
//! exactly one owner, a refused create never claims a provider someone else made later, and
//! deleting a namespace removes its remote providers and finishes.
mod support;

use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-ownership-key-7c31";
const ORG: &str = "demo-org";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn simulator(rt: &tokio::runtime::Runtime) -> CoveoSimulator {
    rt.block_on(CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            refresh_duration: Duration::from_millis(100),
            ..CoveoSimConfig::new(ORG, API_KEY)
        },
    ))
    .unwrap()
}

fn connect(ns: &TestNamespace, sim: &CoveoSimulator) {
    ns.apply(
        &example("coveo/00-connection.yaml", &sim.base_url()).replace("demo-api-key", API_KEY),
    )
    .unwrap();
}

/// A Coveo SecurityProvider for remote id `id`; `extra` is appended to `spec.coveo`.
fn provider(name: &str, id: &str, extra: &str) -> String {
    format!(
        "apiVersion: secprov.dev/v1alpha1
kind: SecurityProvider
metadata:
  name: {name}
spec:
  connectionRef: coveo
  providerId: {id}
  coveo:
    type: EXPANDED
{extra}"
    )
}

fn reason(obj: &Value, type_: &str) -> Option<String> {
    condition(obj, type_).and_then(|c| c["reason"].as_str().map(str::to_owned))
}

fn remote_id(obj: &Value) -> Option<String> {
    obj["status"]["remoteId"].as_str().map(str::to_owned)
}

fn writes_to(sim: &CoveoSimulator, op: &str) -> u64 {
    sim.operation_count(op)
}

#[test]
fn status_schema_refuses_to_drop_a_known_remote_id() {
    let ns = TestNamespace::new("own-cel");
    ns.apply(&provider("p", "p-id", "")).unwrap();
    let patch = |status: &str| {
        ns.kubectl(&[
            "patch",
            "securityprovider",
            "p",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!("{{\"status\": {status}}}"),
        ])
    };
    patch(r#"{"remoteId": "p-id"}"#).unwrap();
    // A new id (the provider recreated after it was deleted in the console) is allowed.
    patch(r#"{"remoteId": "p-id-2"}"#).unwrap();
    let err = patch(r#"{"remoteId": null}"#).unwrap_err();
    assert!(
        err.contains("status.remoteId cannot be removed once recorded"),
        "{err}"
    );
    let obj = ns.get_json("securityprovider/p").unwrap();
    assert_eq!(remote_id(&obj).as_deref(), Some("p-id-2"));
}
