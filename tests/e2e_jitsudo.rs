//! End-to-end tests of the JITSudo backend on a real API server, driven through kubectl, with
//! the real operator binary and the JITSudo simulator.
mod support;

use std::time::Duration;

use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
use serde_json::json;
use support::*;

const API_KEY: &str = "e2e-jitsudo-key-93b1d0";
/// The example provider's name (its displayName).
const NAME: &str = "Okta workforce";

type Env = Running<JitsudoSimulator>;

/// A namespace with the example connection pointing at a fresh simulator (whose tenant is the
/// example's), the API key `secret_key` in the Secret, and an operator.
fn setup(prefix: &str, secret_key: &str, adjust: impl FnOnce(&mut JitsudoSimConfig)) -> Env {
    let mut config = JitsudoSimConfig {
        api_key: API_KEY.into(),
        sync_duration: Duration::from_millis(800),
        ..Default::default()
    };
    adjust(&mut config);
    support::Env::jitsudo(prefix, config, secret_key).with_operator(&[])
}

fn apply_example(env: &Env, extra_spec: &str) {
    let manifest = example("jitsudo/10-securityprovider.yaml", &env.sim.base_url())
        .replace("  jitsudo:\n", &format!("{extra_spec}  jitsudo:\n"));
    env.ns.apply(&manifest).unwrap();
}

#[test]
fn example_is_created_updated_with_one_put_observed_and_deleted() {
    let env = setup("jitsudo-lifecycle", API_KEY, |_| {});
    apply_example(&env, "");
    let obj = env.wait_ready("okta-workforce");

    let remote = env.sim.provider_by_name(NAME).expect("created remotely");
    assert_eq!(remote["provider_type"], "okta");
    // The create leaves the evidence of its attempt as one extra config key (issue 12).
    let mut config = remote["config"].clone();
    let token = config
        .as_object_mut()
        .and_then(|c| c.remove("secprov_create_attempt"))
        .expect("create-attempt evidence in config");
    assert!(
        token.as_str().unwrap_or_default().starts_with(&format!(
            "{}/",
            obj["metadata"]["uid"].as_str().unwrap_or_default()
        )),
        "{token}"
    );
    assert_eq!(
        config,
        json!({"domain": "acme.okta.com", "groupFilter": "jit-*"})
    );
    assert_eq!(env.sim.operation_count("create"), 1);
    let status = &obj["status"];
    assert_eq!(status["backend"], "jitsudo");
    assert_eq!(status["remoteId"], remote["id"], "the server-assigned UUID");
    // Ready waits for the first sync.
    assert_eq!(status["jitsudo"]["syncStatus"], "synced");
    assert_eq!(status["jitsudo"]["providerType"], "okta");
    assert_eq!(status["currentStatus"]["type"], "SYNCED");
    let last_synced = status["jitsudo"]["lastSyncedAt"].as_str().unwrap();
    assert!(
        last_synced.parse::<jiff::Timestamp>().is_ok(),
        "{last_synced}"
    );
    let id = remote["id"].as_str().unwrap().to_owned();

    // One PUT for one spec change; the recorded id is used, so no more listing.
    let lists_before = env.sim.operation_count("list");
    env.ns
        .kubectl(&[
            "patch",
            "securityprovider/okta-workforce",
            "--type=merge",
            "-p",
            r#"{"spec":{"jitsudo":{"config":{"domain":"acme-new.okta.com"}}}}"#,
        ])
        .unwrap();
    eventually(Duration::from_secs(20), "config updated remotely", || {
        // A merge patch merges into the config object.
        // The update keeps this object's evidence key.
        (env.sim.provider(&id)?["config"]
            == json!({"domain": "acme-new.okta.com", "groupFilter": "jit-*", "secprov_create_attempt": token.clone()}))
        .then_some(())
    });
    let obj = eventually(Duration::from_secs(20), "synced again", || {
        let obj = env.ns.get_json("securityprovider/okta-workforce")?;
        (obj["status"]["jitsudo"]["syncStatus"] == "synced"
            && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            && obj["status"]["jitsudo"]["lastSyncedAt"].as_str() != Some(last_synced))
        .then_some(obj)
    });
    assert_eq!(condition(&obj, "Ready").unwrap()["status"], "True");
    env.operator.wait_reconciles(2); // a couple of resyncs
    assert_eq!(env.sim.request_count("PUT"), 1, "exactly one PUT");
    // Resyncs read the connection's paged snapshot (batch observation), so lists go on; the
    // spec change itself was read by id: at most one list per resync period since then.
    assert!(
        env.sim.operation_count("list") - lists_before <= 6,
        "no per-object listing"
    );
    let events = env.ns.events_for("okta-workforce");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Updated" && m.contains("config")),
        "{events:?}"
    );

    env.ns.delete("securityprovider/okta-workforce");
    assert!(env.sim.provider(&id).is_none(), "deleted remotely");
    assert_eq!(env.sim.request_count("DELETE"), 1, "exactly one DELETE");
    assert_eq!(env.sim.operation_count("create"), 1, "never created twice");
}

#[test]
fn existing_provider_on_page_three_of_three_is_found_and_adopted() {
    let env = setup("jitsudo-adopt", API_KEY, |_| {});
    // 520 others at 250 per page: the existing provider is on page 3 of 3.
    env.sim.preload("other", 520);
    let id = env.sim.insert_provider(
        NAME,
        "okta",
        json!({"domain": "acme.okta.com", "groupFilter": "jit-*"}),
        true,
    );
    // Without adopt the provider is someone else's.
    apply_example(&env, "");
    env.wait_reason("okta-workforce", "Ready", "AlreadyExists");
    assert!(env.sim.operation_count("list") >= 3, "three pages read");
    apply_example(&env, "  adopt: true\n");
    let obj = env.wait_ready("okta-workforce");
    assert_eq!(obj["status"]["remoteId"], id);
    assert_eq!(env.sim.operation_count("create"), 0, "adopted, not created");
    assert_eq!(env.sim.request_count("PUT"), 0, "already matches the spec");
}

#[test]
fn failed_sync_gives_ready_false_sync_failed() {
    let env = setup("jitsudo-failed", API_KEY, |_| {});
    apply_example(&env, "");
    let obj = env.wait_ready("okta-workforce");
    let id = obj["status"]["remoteId"].as_str().unwrap().to_owned();
    assert!(env.sim.fail_sync(&id, "okta: 401 invalid API token"));
    let obj = env.wait_reason("okta-workforce", "Ready", "SyncFailed");
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("okta: 401 invalid API token")
    );
    assert_eq!(obj["status"]["jitsudo"]["syncStatus"], "failed");
    assert_eq!(
        obj["status"]["jitsudo"]["syncError"],
        "okta: 401 invalid API token"
    );
    assert_eq!(obj["status"]["currentStatus"]["type"], "FAILED");
    // The spec is applied; only the remote sync is failing.
    assert_eq!(condition(&obj, "Synced").unwrap()["status"], "True");

    // The refresh annotation triggers a new sync, which recovers.
    env.ns
        .kubectl(&[
            "annotate",
            "securityprovider/okta-workforce",
            "secprov.dev/refresh-requested-at=2026-11-23T10:00:00Z",
        ])
        .unwrap();
    env.wait_ready("okta-workforce");
    assert_eq!(env.sim.operation_count("sync"), 1);
}

#[test]
fn tenant_mismatch_is_terminal_and_names_the_header() {
    let env = setup("jitsudo-tenant", "key-of-another-tenant", |c| {
        c.other_keys = vec![(
            "key-of-another-tenant".into(),
            "7d6f0c8e-1111-4222-8333-944455556666".into(),
        )]
    });
    env.ns.apply_witness();
    apply_example(&env, "");
    let obj = env.wait_reason("okta-workforce", "Ready", "RemoteForbidden");
    let message = condition_message(&obj, "Ready");
    assert!(message.contains("tenant_mismatch"), "{message}");
    assert!(message.contains("X-Tenant-ID"), "{message}");
    assert!(message.contains("spec.jitsudo.tenantId"), "{message}");
    assert!(
        !message.contains("key-of-another-tenant"),
        "no secret in status"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
    let calls = env.sim.request_count("GET");
    // Longer than the first retries of a transient failure (about 1 and 2 s).
    env.operator.wait_reconciles(3);
    assert_eq!(env.sim.request_count("GET"), calls, "terminal: not retried");
    assert_eq!(env.sim.provider_count(), 0);
}

#[test]
fn remote_drift_is_restored_with_one_put_and_an_event() {
    let env = setup("jitsudo-drift", API_KEY, |_| {});
    apply_example(&env, "");
    let obj = env.wait_ready("okta-workforce");
    let id = obj["status"]["remoteId"].as_str().unwrap().to_owned();
    // Someone disables the provider and renames it in the JITSudo console.
    assert!(env.sim.mutate_provider(&id, |name, _, enabled| {
        *name = "hand-edited".into();
        *enabled = false;
    }));
    eventually(Duration::from_secs(20), "drift restored", || {
        let remote = env.sim.provider(&id)?;
        (remote["enabled"] == true && remote["name"] == NAME).then_some(())
    });
    assert_eq!(env.sim.request_count("PUT"), 1);
    let events = env.ns.events_for("okta-workforce");
    assert!(
        events.iter().any(|(r, m)| r == "DriftCorrected"
            && m.contains("displayName")
            && m.contains("enabled")),
        "{events:?}"
    );
    assert_eq!(
        env.sim.operation_count("create"),
        1,
        "found by its recorded id"
    );
}
