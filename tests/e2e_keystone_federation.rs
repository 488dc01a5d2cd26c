//! End-to-end tests of Keystone federation declared with the identity provider (issue 24):
//! protocols and their mappings, on a real API server, with the real operator binary and the
//! Keystone simulator.
mod support;

use std::time::Duration;

use secprov_sim::keystone::KeystoneSimulator;
use serde_json::{Value, json};
use support::*;

const PASSWORD: &str = "e2e-keystone-federation-password-7d21";
const NAME: &str = "acme-federation";
const MAPPING: &str = "acme-federation-saml2";

type Env = Running<KeystoneSimulator>;

fn apply_example(env: &Env) {
    env.ns
        .apply(&example(
            "keystone/20-saml-federation.yaml",
            &env.sim.base_url(),
        ))
        .unwrap();
}

fn patch_keystone(env: &Env, patch: Value) {
    env.ns
        .kubectl(&[
            "patch",
            &format!("securityprovider/{NAME}"),
            "--type=merge",
            "-p",
            &json!({"spec": {"keystone": patch}}).to_string(),
        ])
        .unwrap();
}

/// The writes the simulator logged after the first `since`.
fn writes_since(env: &Env, since: usize) -> Vec<String> {
    env.sim.write_log().split_off(since)
}

fn rules(group: &str) -> Value {
    json!([{"local": [{"user": {"name": "{0}"}}, {"group": {"name": group, "domain": {"id": "default"}}}],
            "remote": [{"type": "UserName"}]}])
}

/// Waits for a DriftCorrected Event whose message names `part`.
fn wait_drift_event(env: &Env, part: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("DriftCorrected naming {part}"),
        || {
            let events = env.ns.events_for(NAME);
            events
                .iter()
                .any(|(r, m)| r == "DriftCorrected" && m.contains(part))
                .then_some(())
        },
    );
}

#[test]
fn federation_is_written_in_order_minimally_restored_and_deleted_in_reverse() {
    let env = support::Env::keystone("keystone-federation", keystone_config(PASSWORD), PASSWORD)
        .with_operator(&[]);
    apply_example(&env);
    let obj = env.wait_ready(NAME);
    assert_eq!(
        env.sim.write_log(),
        vec![
            format!("PUT identity_provider {NAME}"),
            format!("PUT mapping {MAPPING}"),
            format!("PUT protocol {NAME}/saml2"),
        ],
        "identity provider, then mapping, then protocol"
    );
    let remote_rules = env.sim.mapping(MAPPING).expect("mapping created");
    assert_eq!(
        remote_rules[0]["remote"][1]["any_one_of"],
        json!(["admins"])
    );
    assert_eq!(env.sim.protocol(NAME, "saml2").as_deref(), Some(MAPPING));
    let keystone = &obj["status"]["keystone"];
    assert_eq!(keystone["protocols"]["saml2"]["mappingId"], MAPPING);
    assert!(
        keystone["protocols"]["saml2"]["selfLink"]
            .as_str()
            .is_some_and(|l| l.ends_with("/protocols/saml2")),
        "{keystone}"
    );
    assert_eq!(keystone["createdMappings"], json!([MAPPING]));
    assert_eq!(keystone["managedProtocols"], json!(["saml2"]));

    // Quiet resyncs write nothing (the reconcile counter proves the operator was active).
    let quiet = env.sim.write_log().len();
    env.operator.wait_reconciles(3);
    assert_eq!(
        writes_since(&env, quiet),
        Vec::<String>::new(),
        "no write on a quiet resync"
    );

    // A change of the rules is exactly one mapping write.
    let before = env.sim.write_log().len();
    patch_keystone(
        &env,
        json!({"protocols": {"saml2": {"mapping": {"rules": rules("ops")}}}}),
    );
    eventually(Duration::from_secs(20), "rules updated remotely", || {
        (env.sim.mapping(MAPPING)?[0]["local"][1]["group"]["name"] == "ops").then_some(())
    });
    env.operator.wait_reconciles(2);
    assert_eq!(
        writes_since(&env, before),
        vec![format!("PATCH mapping {MAPPING}")]
    );

    // Console drift: rules edited, then the protocol bound to another mapping.
    env.sim.insert_mapping(MAPPING, rules("everyone-is-admin"));
    eventually(Duration::from_secs(20), "rules restored", || {
        (env.sim.mapping(MAPPING)?[0]["local"][1]["group"]["name"] == "ops").then_some(())
    });
    wait_drift_event(&env, "protocols.saml2.mapping");
    env.sim.insert_mapping("console-mapping", rules("console"));
    env.sim.insert_protocol(NAME, "saml2", "console-mapping");
    eventually(Duration::from_secs(20), "protocol re-bound", || {
        (env.sim.protocol(NAME, "saml2")? == MAPPING).then_some(())
    });
    wait_drift_event(&env, "protocols.saml2.mappingId");
    assert!(
        env.sim.mapping("console-mapping").is_some(),
        "not ours: left alone"
    );

    // A second protocol, then the first removed: its protocol and mapping go, nothing else.
    patch_keystone(
        &env,
        json!({"protocols": {"oidc": {"mapping": {"rules": rules("oidc-users")}}}}),
    );
    eventually(Duration::from_secs(20), "oidc protocol", || {
        env.sim.protocol(NAME, "oidc").map(|_| ())
    });
    let before = env.sim.write_log().len();
    patch_keystone(&env, json!({"protocols": {"saml2": null}}));
    eventually(Duration::from_secs(20), "saml2 mapping deleted", || {
        env.sim.mapping(MAPPING).is_none().then_some(())
    });
    assert_eq!(
        writes_since(&env, before),
        vec![
            format!("DELETE protocol {NAME}/saml2"),
            format!("DELETE mapping {MAPPING}"),
        ],
        "the identity provider and the other protocol are untouched"
    );
    let obj = eventually(Duration::from_secs(20), "status without saml2", || {
        let obj = env.ns.get_json(&format!("securityprovider/{NAME}"))?;
        (obj["status"]["keystone"]["managedProtocols"] == json!(["oidc"])).then_some(obj)
    });
    assert!(
        obj["status"]["keystone"]["protocols"]
            .get("saml2")
            .is_none(),
        "{obj}"
    );

    // Deleting the object deletes all three, in reverse order.
    let before = env.sim.write_log().len();
    env.ns.delete(&format!("securityprovider/{NAME}"));
    assert_eq!(
        writes_since(&env, before),
        vec![
            format!("DELETE protocol {NAME}/oidc"),
            format!("DELETE mapping {NAME}-oidc"),
            format!("DELETE identity_provider {NAME}"),
        ]
    );
    assert_eq!(env.sim.mapping_ids(), vec!["console-mapping".to_owned()]);
}

#[test]
fn an_existing_mapping_is_refused_without_adopt_and_never_deleted() {
    let env = support::Env::keystone(
        "keystone-federation-adopt",
        keystone_config(PASSWORD),
        PASSWORD,
    )
    .with_operator(&[]);
    env.sim.insert_mapping(MAPPING, rules("theirs"));
    apply_example(&env);
    let obj = env.wait_reason(NAME, "Ready", "AlreadyExists");
    let message = condition_message(&obj, "Ready");
    assert!(
        message.contains(MAPPING) && message.contains("spec.adopt"),
        "{message}"
    );
    assert_eq!(
        env.sim.mapping(MAPPING),
        Some(rules("theirs")),
        "not written"
    );
    assert_eq!(
        env.sim.protocol(NAME, "saml2"),
        None,
        "no protocol bound to it"
    );

    env.ns
        .kubectl(&[
            "patch",
            &format!("securityprovider/{NAME}"),
            "--type=merge",
            "-p",
            r#"{"spec":{"adopt":true}}"#,
        ])
        .unwrap();
    let obj = env.wait_ready(NAME);
    assert_eq!(env.sim.protocol(NAME, "saml2").as_deref(), Some(MAPPING));
    assert_eq!(
        env.sim.mapping(MAPPING).unwrap()[0]["remote"][1]["type"],
        "Groups"
    );
    assert!(
        obj["status"]["keystone"].get("createdMappings").is_none(),
        "adopted, not created"
    );

    env.ns.delete(&format!("securityprovider/{NAME}"));
    assert!(env.sim.identity_provider(NAME).is_none());
    assert!(
        env.sim.mapping(MAPPING).is_some(),
        "an adopted mapping is left in place"
    );
}

#[test]
fn invalid_rules_are_rejected_at_apply_and_remote_refusals_name_the_rule() {
    let env = support::Env::keystone(
        "keystone-federation-invalid",
        keystone_config(PASSWORD),
        PASSWORD,
    )
    .with_operator(&[]);
    let manifest = example("keystone/20-saml-federation.yaml", &env.sim.base_url());
    let empty_local = manifest.replacen(
        "            - local:\n                - user: {name: \"{0}\"}\n                - group: {name: federated-admins, domain: {id: default}}\n",
        "            - local: []\n",
        1,
    );
    assert_ne!(empty_local, manifest);
    let refused = env.ns.apply(&empty_local).expect_err("apply must fail");
    assert!(
        refused.contains("each keystone mapping rule needs non-empty local and remote arrays"),
        "{refused}"
    );
    let bad_id = manifest.replace("      saml2:", "      \"saml/2\":");
    let refused = env.ns.apply(&bad_id).expect_err("apply must fail");
    assert!(
        refused.contains("keystone.protocols keys are protocol ids"),
        "{refused}"
    );

    // A rule the CRD cannot judge (a remote condition without `type`) is refused by Keystone:
    // terminal, naming the mapping and the rule.
    let no_type = manifest.replace(
        "                - type: UserName\n",
        "                - any_one_of: [x]\n",
    );
    env.ns.apply(&no_type).unwrap();
    let obj = env.wait_reason(NAME, "Ready", "RemoteInvalidConfiguration");
    let message = condition_message(&obj, "Ready");
    assert!(
        message.contains(MAPPING) && message.contains("rule 0"),
        "{message}"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
}
