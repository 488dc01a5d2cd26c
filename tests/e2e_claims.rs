//! One remote provider, one owner, however the endpoint is spelled and however objects race:
//! claims, canonical remote-system identity, the creation evidence and re-targeting, on the
//! real API server with the Coveo simulator. One operator watches every namespace of a test
//! (a label keeps it to the test's objects) and keeps its claims in the test's first namespace.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-claims-key-7c1e";

type Env = support::Env<CoveoSimulator>;
/// How long the simulator's CREATING and REFRESHING last.
const REFRESH: Duration = Duration::from_millis(100);

/// An operator for every namespace, kept to the objects labelled `e2e-claims=<label>`, its
/// claims in `claims_ns`.
fn operator(label: &str, claims_ns: &str) -> Operator {
    let selector = format!("e2e-claims={}", run_label(label));
    Operator::start_all_namespaces(
        &format!("claims-{label}"),
        &operator_args(&[
            "--watch-label-selector",
            &selector,
            "--leader-election-namespace",
            claims_ns,
            "--resync-interval",
            "2s",
        ]),
    )
}

/// The label value of this run's objects of one test: objects an earlier run left behind
/// (its namespaces still terminating) are not this run's operator's.
fn run_label(label: &str) -> String {
    format!("{label}-{}", std::process::id())
}

/// A namespace with the Coveo connection `coveo` to `endpoint` (a spelling of the simulator's).
fn namespace_reaching(prefix: &str, sim: &CoveoSimulator, endpoint: &str) -> TestNamespace {
    let ns = TestNamespace::new(prefix);
    let connection = example("coveo/00-connection.yaml", endpoint)
        .replace("demo-api-key", API_KEY)
        .replace(
            "organizationId: demo-org",
            &format!("organizationId: {}", sim.config().organization_id),
        );
    ns.apply(&connection).expect("apply the connection");
    ns
}

/// A SecurityProvider `name` for provider `id`, labelled for the test's operator.
fn provider(name: &str, id: &str, label: &str, adopt: bool) -> String {
    format!(
        "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: {name}\n  labels: {{e2e-claims: {}}}\nspec:\n  providerId: {id}\n  connectionRef: coveo\n  adopt: {adopt}\n  displayName: {name} in its namespace\n  coveo:\n    type: EXPANDED\n",
        run_label(label)
    )
}

fn synced_reason(ns: &TestNamespace, name: &str) -> Option<String> {
    let obj = ns.get_json(&format!("securityprovider/{name}"))?;
    Some(condition(&obj, "Synced")?["reason"].as_str()?.to_owned())
}

fn wait_reason(ns: &TestNamespace, name: &str, reason: &str, operator: &Operator) -> Value {
    let resource = format!("securityprovider/{name}");
    ns.wait_reason_logged(
        &resource,
        "Synced",
        reason,
        Duration::from_secs(60),
        operator,
    )
}

fn writes(sim: &CoveoSimulator) -> u64 {
    ["create", "update", "delete"]
        .iter()
        .map(|op| sim.operation_count(op))
        .sum()
}

fn delete(ns: &TestNamespace, name: &str) {
    ns.delete(&format!("securityprovider/{name}"));
}

#[test]
fn a_second_spelling_of_the_endpoint_does_not_make_a_second_owner() {
    let env = Env::coveo("claims-spell-a", coveo_config(API_KEY, REFRESH));
    let base = env.sim.base_url();
    let other_spelling = base.replace("127.0.0.1", "localhost");
    assert_ne!(base, other_spelling);
    let b = namespace_reaching("claims-spell-b", &env.sim, &other_spelling);
    let operator = operator("spell", &env.ns.name);
    env.ns
        .apply(&provider("owner", "shared-idp", "spell", false))
        .unwrap();
    wait_reason(&env.ns, "owner", "ReconcileSuccess", &operator);

    env.sim.reset_counters();
    b.apply(&provider("second", "shared-idp", "spell", true))
        .unwrap();
    let blocked = wait_reason(&b, "second", "AlreadyManaged", &operator);
    let message = condition(&blocked, "Synced").unwrap()["message"].to_string();
    assert!(
        message.contains(&format!("{}/owner", env.ns.name)),
        "{message}"
    );
    // Resyncs of both pass (the operator is active) and nothing is written remotely.
    operator.wait_reconciles(6);
    assert_eq!(writes(&env.sim), 0, "the second object writes nothing");

    delete(&b, "second");
    assert!(
        env.sim.provider("shared-idp").is_some(),
        "deleting the second object keeps the provider"
    );
    operator.wait_reconciles(2);
    assert_eq!(
        synced_reason(&env.ns, "owner").as_deref(),
        Some("ReconcileSuccess")
    );
    delete(&env.ns, "owner");
    assert!(
        env.sim.provider("shared-idp").is_none(),
        "the owner's deletion deletes it"
    );
}

#[test]
fn respelling_the_owners_own_endpoint_keeps_it_the_owner() {
    let env = Env::coveo("claims-respell", coveo_config(API_KEY, REFRESH));
    let operator = operator("respell", &env.ns.name);
    env.ns
        .apply(&provider("idp", "respelled-idp", "respell", false))
        .unwrap();
    wait_reason(&env.ns, "idp", "ReconcileSuccess", &operator);

    // A cosmetic edit (case, trailing slash), then another name for the same host.
    let base = env.sim.base_url();
    // (The CRD accepts http:// only in lower case for loopback hosts, so the cosmetic edits
    // here are slashes; case and default ports are covered by the unit tests' table.)
    for endpoint in [
        format!("{base}//"),
        base.replace("127.0.0.1", "localhost") + "/",
    ] {
        env.ns
            .kubectl(&[
                "patch",
                "providerconnection",
                "coveo",
                "--type",
                "merge",
                "-p",
                &format!(r#"{{"spec":{{"coveo":{{"endpoint":"{endpoint}"}}}}}}"#),
            ])
            .unwrap();
        let canonical = endpoint
            .to_ascii_lowercase()
            .trim_end_matches('/')
            .to_owned();
        let what = format!("ownership recorded for {canonical}");
        eventually(Duration::from_secs(60), &what, || {
            let obj = env.ns.get_json("securityprovider/idp")?;
            (obj["status"]["ownership"]["endpoint"] == canonical.as_str()).then_some(())
        });
        operator.wait_reconciles(2);
        assert_eq!(
            synced_reason(&env.ns, "idp").as_deref(),
            Some("ReconcileSuccess")
        );
    }
    assert_eq!(env.sim.operation_count("create"), 1, "never created twice");
    delete(&env.ns, "idp");
    assert!(
        env.sim.provider("respelled-idp").is_none(),
        "deletion still deletes remotely"
    );
}

#[test]
fn pointing_the_connection_at_another_system_is_refused_until_confirmed() {
    let env = Env::coveo("claims-retarget", coveo_config(API_KEY, REFRESH));
    let second = env
        .rt
        .block_on(CoveoSimulator::start(
            "127.0.0.1:0".parse().unwrap(),
            coveo_config(API_KEY, Duration::from_millis(100)),
        ))
        .unwrap();
    let operator = operator("retarget", &env.ns.name);
    env.ns
        .apply(&provider("idp", "moved-idp", "retarget", false))
        .unwrap();
    wait_reason(&env.ns, "idp", "ReconcileSuccess", &operator);

    env.ns
        .kubectl(&[
            "patch",
            "providerconnection",
            "coveo",
            "--type",
            "merge",
            "-p",
            &format!(
                r#"{{"spec":{{"coveo":{{"endpoint":"{}"}}}}}}"#,
                second.base_url()
            ),
        ])
        .unwrap();
    let refused = wait_reason(&env.ns, "idp", "RemoteSystemChanged", &operator);
    assert_eq!(condition(&refused, "Ready").unwrap()["status"], "False");
    let old_system = format!("{} ({})", env.sim.base_url(), COVEO_ORG);
    let new_system = format!("{} ({})", second.base_url(), COVEO_ORG);
    // Events are published after the status write the wait above saw: poll for it.
    let warning = eventually(
        Duration::from_secs(30),
        "a RemoteSystemChanged Warning Event",
        || {
            env.ns
                .events_for("idp")
                .into_iter()
                .find(|(reason, _)| reason == "RemoteSystemChanged")
        },
    );
    assert!(
        warning.1.contains(&old_system) && warning.1.contains(&new_system),
        "{warning:?}"
    );
    operator.wait_reconciles(4);
    assert_eq!(
        second.operation_count("create"),
        0,
        "nothing created in the new system"
    );

    // Confirmed: created in the new system, the old provider named as left behind.
    env.ns
        .kubectl(&[
            "annotate",
            "securityprovider",
            "idp",
            &format!("secprov.dev/remote-system-change={new_system}"),
        ])
        .unwrap();
    let moved = wait_reason(&env.ns, "idp", "ReconcileSuccess", &operator);
    assert_eq!(moved["status"]["leftBehind"]["system"], old_system.as_str());
    assert_eq!(moved["status"]["leftBehind"]["remoteId"], "moved-idp");
    assert!(second.provider("moved-idp").is_some());
    assert!(
        env.sim.provider("moved-idp").is_some(),
        "the old provider is left, not deleted"
    );
    // The Event is published after the status write the wait above saw: poll for it.
    eventually(
        Duration::from_secs(30),
        "a RemoteProviderLeftBehind Event naming the old system",
        || {
            env.ns
                .events_for("idp")
                .iter()
                .any(|(r, m)| r == "RemoteProviderLeftBehind" && m.contains(&old_system))
                .then_some(())
        },
    );
}

#[test]
fn two_objects_adopting_one_provider_at_the_same_instant_make_one_owner() {
    let env = Env::coveo("claims-race-a", coveo_config(API_KEY, REFRESH));
    let b = namespace_reaching("claims-race-b", &env.sim, &env.sim.base_url());
    let ids: Vec<String> = (0..6).map(|i| format!("raced-{i}")).collect();
    for id in &ids {
        env.create_remotely(serde_json::json!({"id": id, "type": "EXPANDED"}));
    }
    let operator = operator("race", &env.ns.name);
    let manifests: String = ids
        .iter()
        .map(|id| provider(id, id, "race", true) + "---\n")
        .collect();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| env.ns.apply(&manifests));
        let b = scope.spawn(|| b.apply(&manifests));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    let owners = |ids: &[String]| -> Vec<usize> {
        ids.iter()
            .map(|id| {
                [&env.ns, &b]
                    .iter()
                    .filter(|ns| synced_reason(ns, id).as_deref() == Some("ReconcileSuccess"))
                    .count()
            })
            .collect()
    };
    eventually(Duration::from_secs(60), "every pair settled", || {
        ids.iter()
            .all(|id| {
                let reasons = [synced_reason(&env.ns, id), synced_reason(&b, id)];
                reasons
                    .iter()
                    .any(|r| r.as_deref() == Some("ReconcileSuccess"))
                    && reasons
                        .iter()
                        .any(|r| r.as_deref() == Some("AlreadyManaged"))
            })
            .then_some(())
    });
    assert_eq!(owners(&ids), vec![1; 6]);
    for _ in 0..3 {
        operator.wait_reconciles(12); // a resync of every object
        assert_eq!(owners(&ids), vec![1; 6], "still one owner each");
    }
}

#[test]
fn a_provider_adopted_under_one_name_is_not_adopted_again_under_another() {
    // Made in the console: no creation evidence on it, and the second object asks for what the
    // first made of it, so only the claims can tell that both reach one provider.
    let env = Env::coveo("claims-alias-a", coveo_config(API_KEY, REFRESH));
    env.create_remotely(serde_json::json!({"id": "console-idp", "type": "EXPANDED"}));
    let alias = env.sim.base_url().replace("127.0.0.1", "localhost");
    let b = namespace_reaching("claims-alias-b", &env.sim, &alias);
    let operator = operator("alias", &env.ns.name);
    let same_spec = |name: &str| {
        format!(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: {name}\n  labels: {{e2e-claims: {}}}\nspec:\n  providerId: console-idp\n  connectionRef: coveo\n  adopt: true\n  coveo:\n    type: EXPANDED\n",
            run_label("alias")
        )
    };
    env.ns.apply(&same_spec("first")).unwrap();
    wait_reason(&env.ns, "first", "ReconcileSuccess", &operator);
    // No evidence on the provider (as after an update by an earlier version, which dropped it).
    env.sim.mutate_provider("console-idp", |p| {
        if let Some(parameters) = p["parameters"].as_object_mut() {
            parameters.remove("secprov.dev/create-attempt");
        }
    });
    env.sim.reset_counters();
    b.apply(&same_spec("second")).unwrap();
    let blocked = wait_reason(&b, "second", "AlreadyManaged", &operator);
    assert!(
        blocked["status"]["remoteId"].is_null(),
        "nothing recorded: {blocked}"
    );
    operator.wait_reconciles(4);
    assert_eq!(writes(&env.sim), 0);
    delete(&b, "second");
    assert!(
        env.sim.provider("console-idp").is_some(),
        "the second object's deletion deletes nothing"
    );
    let claims = kubectl(&[
        "get",
        "lease",
        "-n",
        &env.ns.name,
        "-l",
        "secprov.dev/claim=true",
        "-o",
        "name",
    ])
    .unwrap();
    assert_eq!(
        claims.lines().count(),
        1,
        "only the owner's claim is left: {claims}"
    );
}
