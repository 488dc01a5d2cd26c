//! Issue 12 item 9: `kubectl delete namespace` of a namespace holding the API key Secret, the
//! ProviderConnection and SecurityProviders with `deletionPolicy: Delete` completes within a
//! minute, and the remote providers are gone. The namespace controller deletes all of them at
//! once, so the cleanup of the SecurityProviders must still find its connection and key.
//! (Needs kube-controller-manager in the local control plane: without its namespace
//! controller no namespace ever finishes deleting.)
//!
//! Also: a cleanup refused with 401 ends after a bounded number of attempts in
//! `CleanupBlocked`, and the escape hatch it names (`deletionPolicy: Orphan`) finishes it.
mod support;

use std::time::{Duration, Instant};

use secprov_sim::coveo::CoveoSimConfig;
use support::*;

const API_KEY: &str = "e2e-nsdelete-key-7d21";
const PROVIDERS: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

fn provider(name: &str) -> String {
    let spec = coveo_source_spec(name, name, "  deletionPolicy: Delete\n");
    security_provider(name, "", &spec)
}

#[test]

fn deleting_the_namespace_deletes_the_remote_providers_and_completes() {
    let env = Env::coveo("nsdelete", CoveoSimConfig::new(COVEO_ORG, API_KEY));
    let (ns, sim) = (&env.ns, &env.sim);
    let operator = Operator::start(&ns.name, &["--progress-interval", "500ms"]);
    for name in PROVIDERS {
        ns.apply(&provider(name)).unwrap();
    }
    for name in PROVIDERS {
        ns.wait_condition(&format!("securityprovider/{name}"), "Ready", "60s")
            .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_text()));
        assert!(sim.provider(name).is_some(), "{name} created remotely");
    }
    // The connection and its Secret are kept by the usage finalizer while providers need them.
    for object in ["providerconnection/coveo", "secret/coveo-api-key"] {
        eventually(Duration::from_secs(30), object, || {
            has_usage_finalizer(ns, object).then_some(())
        });
    }

    let started = Instant::now();
    let deleted = kubectl(&["delete", "namespace", &ns.name, "--timeout=60s"]);
    let took = started.elapsed();
    let leftovers = kubectl(&[
        "get",
        "all,securityproviders,providerconnections,secrets",
        "-n",
        &ns.name,
    ]);
    assert!(
        deleted.is_ok(),
        "namespace still there after {took:?}: {deleted:?}\nleft: {leftovers:?}\noperator log:\n{}",
        operator.log_text()
    );
    for name in PROVIDERS {
        assert!(sim.provider(name).is_none(), "{name} still exists remotely");
    }
    // At least one per provider (a reconcile from a cache that has not seen the finalizer go
    // yet may DELETE again and find it gone).
    assert!(
        sim.request_count_for("DELETE", "delete") >= PROVIDERS.len() as u64,
        "a remote DELETE per provider"
    );
    assert!(
        took < Duration::from_secs(60),
        "namespace deletion took {took:?}"
    );
    println!(
        "namespace with {} providers deleted in {took:?}",
        PROVIDERS.len()
    );
}

fn has_usage_finalizer(ns: &TestNamespace, object: &str) -> bool {
    ns.get_json(object).is_some_and(|o| {
        o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "secprov.dev/in-use"))
    })
}

#[test]
fn a_cleanup_refused_with_401_stops_after_bounded_attempts_and_names_the_escape_hatch() {
    let env = Env::coveo("cleanup401", CoveoSimConfig::new(COVEO_ORG, API_KEY));
    let (ns, sim) = (&env.ns, &env.sim);
    // Secrets are read at each connection check (never watched): check often, so the revoked
    // key below is picked up at once.
    let operator = Operator::start(
        &ns.name,
        &[
            "--progress-interval",
            "500ms",
            "--connection-check-interval",
            "2s",
        ],
    );
    ns.apply(&provider("refused")).unwrap();
    ns.wait_condition("securityprovider/refused", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_text()));
    eventually(
        Duration::from_secs(30),
        "usage finalizer on the Secret",
        || has_usage_finalizer(ns, "secret/coveo-api-key").then_some(()),
    );

    // The key is revoked: every remote call is now a 401.
    let connection = example("coveo/00-connection.yaml", &sim.base_url())
        .replace(DEMO_COVEO_API_KEY, "revoked-key-0000");
    ns.apply(&connection).unwrap();
    ns.wait_condition("providerconnection/coveo", "Ready=False", "60s")
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_text()));
    ns.kubectl(&["delete", "securityprovider", "refused", "--wait=false"])
        .unwrap();
    let sp = ns.wait_reason(
        "securityprovider/refused",
        "Ready",
        "CleanupBlocked",
        Duration::from_secs(90),
    );
    let blocked = condition(&sp, "Ready").unwrap();
    let message = blocked["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("5 attempts") && message.contains("deletionPolicy: Orphan"),
        "{message}"
    );
    assert!(!message.contains("revoked-key-0000"), "no key in status");
    let stalled = condition(&ns.get_json("securityprovider/refused").unwrap(), "Stalled")
        .map(|c| c["status"].clone());
    assert_eq!(stalled, Some(serde_json::json!("True")));
    let event = eventually(Duration::from_secs(30), "CleanupBlocked Event", || {
        ns.events_for("refused")
            .into_iter()
            .find(|(reason, _)| reason == "CleanupBlocked")
    });
    assert!(event.1.contains("deletionPolicy"), "{event:?}");
    let attempts = sim.request_count_for("DELETE", "delete");
    assert_eq!(attempts, 5, "exactly the bounded number of remote DELETEs");

    // The escape hatch: the object goes, the remote provider stays.
    ns.kubectl(&[
        "patch",
        "securityprovider",
        "refused",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Orphan"}}"#,
    ])
    .unwrap();
    eventually(Duration::from_secs(60), "the object gone", || {
        ns.get_json("securityprovider/refused")
            .is_none()
            .then_some(())
    });
    assert!(sim.provider("refused").is_some(), "left in place remotely");
    assert_eq!(
        sim.request_count_for("DELETE", "delete"),
        attempts,
        "no DELETE after the bound"
    );
    // No provider needs the connection and its Secret any more: both are released.
    for object in ["providerconnection/coveo", "secret/coveo-api-key"] {
        eventually(Duration::from_secs(30), object, || {
            (!has_usage_finalizer(ns, object)).then_some(())
        });
    }
}
