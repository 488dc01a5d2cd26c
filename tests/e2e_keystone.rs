//! End-to-end tests of the Keystone backend on a real API server, driven through kubectl, with
//! the real operator binary and the Keystone simulator.
mod support;

use std::time::Duration;

use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator, SimIdentityProvider};
use serde_json::{Value, json};
use support::*;

const PASSWORD: &str = "e2e-keystone-password-41c9";

type Env = Running<KeystoneSimulator>;

/// A namespace with the example connection pointing at a fresh simulator, and an operator.
fn setup(prefix: &str, adjust: impl FnOnce(&mut KeystoneSimConfig)) -> Env {
    let mut config = keystone_config(PASSWORD);
    adjust(&mut config);
    support::Env::keystone(prefix, config, PASSWORD).with_operator(&[])
}

/// Applies the example SecurityProvider (`acme-saml`) against this environment's simulator.
fn apply_example(env: &Env) {
    let manifest = example("keystone/10-securityprovider.yaml", &env.sim.base_url());
    env.ns.apply(&manifest).unwrap();
}

fn patch_spec(env: &Env, name: &str, patch: Value) {
    env.ns
        .kubectl(&[
            "patch",
            &format!("securityprovider/{name}"),
            "--type=merge",
            "-p",
            &json!({ "spec": patch }).to_string(),
        ])
        .unwrap();
}

#[test]
fn example_is_created_updated_with_one_minimal_patch_observed_and_deleted() {
    let env = setup("keystone-lifecycle", |_| {});
    apply_example(&env);
    let obj = env.wait_ready("acme-saml");

    let remote = env
        .sim
        .identity_provider("acme-saml")
        .expect("created remotely");
    // The create leaves the evidence of its attempt after the description (issue 12: ownership
    // after an ambiguous create); nothing else is added.
    let description = remote["description"].as_str().unwrap_or_default();
    let token = description
        .strip_prefix("ACME corporate SAML IdP [secprov.dev/create-attempt ")
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("unexpected description {description:?}"));
    assert!(
        token.starts_with(&format!(
            "{}/",
            obj["metadata"]["uid"].as_str().unwrap_or_default()
        )),
        "{token}"
    );
    assert_eq!(remote["enabled"], true);
    assert_eq!(remote["authorization_ttl"], 60);
    assert_eq!(
        remote["remote_ids"],
        json!(["https://idp.acme.example/saml/metadata"])
    );
    assert_eq!(env.sim.operation_count("create"), 1);
    let status = &obj["status"];
    assert_eq!(status["backend"], "keystone");
    assert_eq!(status["remoteId"], "acme-saml");
    assert_eq!(status["currentStatus"]["type"], "ENABLED");
    assert_eq!(status["keystone"]["enabled"], true);
    assert_eq!(
        status["keystone"]["remoteIds"],
        json!(["https://idp.acme.example/saml/metadata"])
    );
    assert_eq!(status["keystone"]["selfLink"], remote["links"]["self"]);
    assert_eq!(
        status["keystone"]["protocolsLink"],
        remote["links"]["protocols"]
    );
    assert_eq!(status["keystone"]["domainId"], remote["domain_id"]);
    assert_eq!(condition(&obj, "Synced").unwrap()["status"], "True");

    // A revoked token is replaced transparently; a spec change is one PATCH carrying only the
    // changed field (never domain_id).
    env.sim.revoke_tokens();
    patch_spec(
        &env,
        "acme-saml",
        json!({"keystone": {"description": "Renamed"}}),
    );
    // The update keeps this object's evidence after the description (it tells an object that
    // reaches the provider under another endpoint name who manages it).
    let renamed = format!("Renamed [secprov.dev/create-attempt {token}]");
    eventually(
        Duration::from_secs(20),
        "description updated remotely",
        || {
            (env.sim.identity_provider("acme-saml")?["description"] == renamed.as_str())
                .then_some(())
        },
    );
    env.operator.wait_reconciles(2); // a couple of resyncs
    assert_eq!(
        env.sim.patch_bodies(),
        vec![json!({"identity_provider": {"description": renamed}})],
        "exactly one PATCH with only the changed field"
    );
    assert_eq!(
        env.sim.operation_count("authenticate"),
        2,
        "one token, then one more after the revocation"
    );

    // Disabling shows in status; a provider disabled by spec is still Ready.
    patch_spec(&env, "acme-saml", json!({"keystone": {"enabled": false}}));
    let obj = eventually(Duration::from_secs(20), "DISABLED in status", || {
        let obj = env.ns.get_json("securityprovider/acme-saml")?;
        (obj["status"]["currentStatus"]["type"] == "DISABLED"
            && obj["status"]["observedGeneration"] == obj["metadata"]["generation"])
            .then_some(obj)
    });
    assert_eq!(obj["status"]["keystone"]["enabled"], false);
    assert_eq!(condition(&obj, "Ready").unwrap()["status"], "True");
    assert_eq!(
        env.sim.identity_provider("acme-saml").unwrap()["enabled"],
        false
    );
    let events = env.ns.events_for("acme-saml");
    assert!(events.iter().any(|(r, _)| r == "Created"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Updated" && m.contains("description")),
        "{events:?}"
    );

    env.ns.delete("securityprovider/acme-saml");
    assert!(env.sim.identity_provider("acme-saml").is_none());
    assert_eq!(env.sim.request_count("DELETE"), 1, "exactly one DELETE");
    assert_eq!(env.sim.operation_count("create"), 1, "never created twice");
}

#[test]
fn duplicate_remote_id_is_a_terminal_conflict_until_the_spec_changes() {
    let env = setup("keystone-conflict", |c| c.otc_errors = true);
    env.ns.apply_witness();
    env.sim.insert_identity_provider(SimIdentityProvider {
        remote_ids: vec!["https://idp.acme.example/saml/metadata".into()],
        ..SimIdentityProvider::new("someone-else")
    });
    apply_example(&env);
    let obj = env.wait_reason("acme-saml", "Ready", "RemoteConflict");
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("Duplicate remote ID"), "{message}");
    assert!(message.contains("HTTP 409"), "{message}");
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
    let creates = env.sim.operation_count("create");
    assert_eq!(creates, 1, "one create attempt");
    // Longer than the first retries of a transient failure (about 1 and 2 s).
    env.operator.wait_reconciles(3);
    assert_eq!(
        env.sim.operation_count("create"),
        creates,
        "terminal errors are not retried"
    );

    patch_spec(
        &env,
        "acme-saml",
        json!({"keystone": {"remoteIds": ["https://idp2.acme.example/saml"]}}),
    );
    env.wait_ready("acme-saml");
    assert_eq!(
        env.sim.identity_provider("acme-saml").unwrap()["remote_ids"],
        json!(["https://idp2.acme.example/saml"])
    );
}

#[test]
fn wrong_password_is_terminal_and_never_shown() {
    let env = setup("keystone-badpw", |c| c.password = "something-else".into());
    apply_example(&env);
    let obj = env.wait_reason("acme-saml", "Ready", "RemoteUnauthorized");
    let text = obj.to_string();
    assert!(
        !text.contains(PASSWORD),
        "the password never reaches status"
    );
    assert!(!env.operator.log_text().contains(PASSWORD), "nor the log");
    let events = env.ns.events_for("acme-saml");
    assert!(events.iter().all(|(_, m)| !m.contains(PASSWORD)));
}

#[test]
fn provider_on_a_connection_of_another_backend_reports_backend_mismatch() {
    let env = setup("keystone-mismatch", |_| {});
    // A JITSudo connection beside the Keystone one; nothing listens behind it.
    env.ns
        .apply(&example("jitsudo/00-connection.yaml", "http://127.0.0.1:9"))
        .unwrap();
    let manifest = example("keystone/10-securityprovider.yaml", &env.sim.base_url())
        .replace("connectionRef: keystone", "connectionRef: jitsudo");
    env.ns.apply(&manifest).unwrap();
    let obj = env.wait_reason("acme-saml", "Ready", "BackendMismatch");
    let message = condition_message(&obj, "Ready");
    assert!(
        message.contains("spec.keystone") && message.contains("jitsudo connection"),
        "{message}"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
    assert_eq!(env.sim.request_count("PUT"), 0, "nothing sent anywhere");

    // Pointing it at the right connection fixes it.
    env.ns
        .kubectl(&[
            "patch",
            "securityprovider/acme-saml",
            "--type=merge",
            "-p",
            r#"{"spec":{"connectionRef":"keystone"}}"#,
        ])
        .unwrap();
    env.wait_ready("acme-saml");
}

#[test]
fn domain_id_is_create_only_and_a_remote_domain_that_differs_is_never_in_sync() {
    let env = setup("keystone-domain", |_| {});
    let manifest = example("keystone/10-securityprovider.yaml", &env.sim.base_url());
    env.ns.apply(&manifest).unwrap();
    env.wait_ready("acme-saml");
    // Added later: refused at apply by the CRD's transition rule, nothing stored.
    let with_domain = manifest.replace("# domainId: default", "domainId: default");
    let refused = env.ns.apply(&with_domain).unwrap_err();
    assert!(
        refused.contains("keystone.domainId is create-only"),
        "{refused}"
    );
    let obj = env.ns.get_json("securityprovider/acme-saml").unwrap();
    assert!(obj["spec"]["keystone"]["domainId"].is_null(), "{obj:#}");

    // Adopting a provider of another domain while declaring a domain: reported as a terminal
    // condition, never as in sync, and nothing is written.
    env.sim.insert_identity_provider(SimIdentityProvider {
        domain_id: "console-domain".into(),
        ..SimIdentityProvider::new("adopted")
    });
    env.ns
        .apply(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: adopted\nspec:\n  connectionRef: keystone\n  adopt: true\n  keystone:\n    enabled: false\n    domainId: declared-domain\n",
        )
        .unwrap();
    let obj = env.wait_reason("adopted", "Ready", "CreateOnlyFieldDiffers");
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("\"console-domain\""),
        "{ready}"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
    assert_eq!(env.sim.patch_bodies(), Vec::<Value>::new());
}
