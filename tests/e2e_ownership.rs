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

/// A simulated organization; `latency` widens the window between a read and a create.
fn simulator(rt: &tokio::runtime::Runtime, latency: Duration) -> CoveoSimulator {
    rt.block_on(CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            refresh_duration: Duration::from_millis(100),
            latency,
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
    let spec = format!(
        "  connectionRef: coveo
  providerId: {id}
  coveo:
    type: EXPANDED
{extra}"
    );
    security_provider(name, "", &spec)
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

/// The object's Ready reason once it settled on owning (`Available`) or not (`AlreadyExists`).
fn settled(ns: &TestNamespace, name: &str) -> Value {
    eventually(
        Duration::from_secs(90),
        &format!(
            "{}/{name} owns the provider or reports AlreadyExists",
            ns.name
        ),
        || {
            let obj = ns.get_json(&format!("securityprovider/{name}"))?;
            let ready = reason(&obj, "Ready")?;
            (ready == "Available" || ready == "AlreadyExists").then_some(obj)
        },
    )
}

#[test]
fn two_objects_racing_for_one_id_end_with_exactly_one_owner() {
    let rt = runtime();
    let sim = simulator(&rt, Duration::from_millis(300));
    let (a, b) = (
        TestNamespace::new("own-race-a"),
        TestNamespace::new("own-race-b"),
    );
    connect(&a, &sim);
    connect(&b, &sim);
    let operators = [Operator::start(&a.name, &[]), Operator::start(&b.name, &[])];
    for round in 0..5 {
        let id = format!("raced-{round}");
        let manifest = provider("p", &id, "");
        std::thread::scope(|s| {
            for ns in [&a, &b] {
                let manifest = &manifest;
                s.spawn(move || ns.apply(manifest).unwrap());
            }
        });
        let (obj_a, obj_b) = (settled(&a, "p"), settled(&b, "p"));
        let owners: Vec<_> = [(&a, &obj_a), (&b, &obj_b)]
            .into_iter()
            .filter(|(_, o)| reason(o, "Ready").as_deref() == Some("Available"))
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "round {round}: exactly one owner\n{obj_a:#}\n{obj_b:#}\nlogs:\n{}\n{}",
            operators[0].log_text(),
            operators[1].log_text()
        );
        let (owner, other) = if owners[0].0.name == a.name {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let loser = other.get_json("securityprovider/p").unwrap();
        assert_eq!(
            remote_id(&loser),
            None,
            "round {round}: the loser records no id"
        );
        assert!(sim.provider(&id).is_some());
        let deletes = writes_to(&sim, "delete");
        other.delete("securityprovider/p");
        assert!(
            sim.provider(&id).is_some(),
            "round {round}: deleting the object that does not own the provider leaves it"
        );
        assert_eq!(writes_to(&sim, "delete"), deletes, "round {round}");
        owner.delete("securityprovider/p");
        assert!(
            sim.provider(&id).is_none(),
            "round {round}: the owner deletes it"
        );
    }
    eprintln!(
        "race: {} creates committed, {} answered 409",
        sim.committed_creates(),
        sim.create_conflicts()
    );
}

#[test]
fn a_refused_create_never_claims_a_provider_someone_else_made_later() {
    let rt = runtime();
    let sim = simulator(&rt, Duration::ZERO);
    let ns = TestNamespace::new("own-refused");
    connect(&ns, &sim);
    let operator = Operator::start(&ns.name, &[]);
    let broken =
        "    cascadingSecurityProviders:\n      - id: Missing Provider\n        type: EMAIL\n";
    ns.apply(&provider("p", "contested", broken)).unwrap();
    eventually(Duration::from_secs(60), "the create refused", || {
        let obj = ns.get_json("securityprovider/p")?;
        (reason(&obj, "Ready")? == "RemoteInvalidConfiguration").then_some(())
    });
    assert!(sim.provider("contested").is_none());
    // Someone else creates the id in the console.
    let url = format!(
        "{}/rest/organizations/{ORG}/securityproviders",
        sim.base_url()
    );
    rt.block_on(async {
        {
            secprov::backend::http::install_tls_provider();
            reqwest::Client::new()
        }
        .post(url)
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"id": "contested", "type": "EXPANDED", "displayName": "Theirs"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    });
    let theirs = sim.provider("contested").unwrap();
    let (updates, deletes) = (writes_to(&sim, "update"), writes_to(&sim, "delete"));
    // The spec is fixed: the object must now see a provider it did not make.
    ns.apply(&provider("p", "contested", "")).unwrap();
    let obj = settled(&ns, "p");
    assert_eq!(
        reason(&obj, "Ready").as_deref(),
        Some("AlreadyExists"),
        "{obj:#}\n{}",
        operator.log_text()
    );
    assert_eq!(
        writes_to(&sim, "update"),
        updates,
        "no write to their provider"
    );
    ns.delete("securityprovider/p");
    assert_eq!(writes_to(&sim, "delete"), deletes);
    let now = sim
        .provider("contested")
        .expect("their provider is still there");
    assert_eq!(
        now["displayName"], theirs["displayName"],
        "untouched: {now:#}"
    );
    assert_eq!(
        now["parameters"], theirs["parameters"],
        "untouched: {now:#}"
    );
}
