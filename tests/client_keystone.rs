//! The Keystone client against the Keystone simulator (no Kubernetes involved).
use std::time::Duration;

use secprov::api::provider_connection::KeystoneScope;
use secprov::backend::http::HttpOptions;
use secprov::backend::keystone::{
    KeystoneClient, KeystoneConfig, KeystoneCredentials, observed_from_wire,
};
use secprov::backend::{ProviderBackend, ProviderConfig, ProviderKey};
use secprov::error::RemoteErrorKind;
use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator};
use serde_json::json;

async fn start(adjust: impl FnOnce(&mut KeystoneSimConfig)) -> KeystoneSimulator {
    let mut config = KeystoneSimConfig::default();
    adjust(&mut config);
    KeystoneSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn password_client(sim: &KeystoneSimulator, password: &str) -> KeystoneClient {
    KeystoneClient::new(
        &format!("{}/v3", sim.base_url()),
        KeystoneCredentials::Password {
            user_name: "admin".into(),
            user_domain_name: "Default".into(),
            password: password.into(),
        },
        Some(KeystoneScope {
            system: Some(true),
            ..Default::default()
        }),
        &HttpOptions::default(),
    )
    .unwrap()
}

fn config(id: &str, remote: &[&str]) -> KeystoneConfig {
    KeystoneConfig {
        id: id.into(),
        description: "ACME".into(),
        enabled: true,
        remote_ids: remote.iter().map(|s| s.to_string()).collect(),
        authorization_ttl: None,
        domain_id: None,
        protocols: Default::default(),
        stale_mappings: Default::default(),
        record: Default::default(),
    }
}

fn key(id: &str) -> ProviderKey {
    ProviderKey {
        id: id.into(),
        known_remote_id: None,
    }
}

#[tokio::test]
async fn lifecycle_through_the_client_with_one_cached_token() {
    let sim = start(|_| {}).await;
    let client = password_client(&sim, "simulated-password");
    let desired = ProviderConfig::Keystone(config("acme", &["https://idp.acme/saml"]));
    assert!(client.observe(&key("acme")).await.unwrap().is_none());
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    let status = created.state.keystone.clone().unwrap();
    assert!(status.enabled);
    assert_eq!(status.remote_ids, vec!["https://idp.acme/saml"]);
    assert!(
        status
            .self_link
            .unwrap()
            .ends_with("/v3/OS-FEDERATION/identity_providers/acme")
    );

    let mut changed = config("acme", &["https://idp.acme/saml"]);
    changed.description = "New".into();
    let updated = ProviderBackend::update(
        &client,
        &created,
        &ProviderConfig::Keystone(changed.clone()),
    )
    .await
    .unwrap();
    assert!(
        ProviderConfig::Keystone(changed)
            .diff(&updated.config)
            .is_empty()
    );
    assert_eq!(
        sim.patch_bodies(),
        vec![json!({"identity_provider": {"description": "New"}})]
    );
    assert_eq!(ProviderBackend::list(&client).await.unwrap().len(), 1);
    assert!(
        ProviderBackend::delete(&client, "acme", None)
            .await
            .unwrap()
    );
    assert!(
        !ProviderBackend::delete(&client, "acme", None)
            .await
            .unwrap()
    );
    assert!(!ProviderBackend::refresh(&client, "acme").await.unwrap());
    assert_eq!(sim.operation_count("authenticate"), 1, "token is cached");
}

#[tokio::test]
async fn expired_tokens_are_replaced_and_a_401_reauthenticates_once() {
    // Tokens expiring within the refresh margin are never reused.
    let sim = start(|c| c.token_ttl = Duration::from_secs(30)).await;
    let client = password_client(&sim, "simulated-password");
    client.get("x").await.unwrap();
    client.get("x").await.unwrap();
    assert_eq!(sim.operation_count("authenticate"), 2);

    let sim = start(|_| {}).await;
    let client = password_client(&sim, "simulated-password");
    client.get("x").await.unwrap();
    sim.revoke_tokens();
    assert!(client.get("x").await.unwrap().is_none());
    assert_eq!(sim.operation_count("authenticate"), 2);
    assert_eq!(
        sim.request_count_for("GET", "get"),
        3,
        "one repeat after the 401"
    );
}

#[tokio::test]
async fn wrong_password_is_a_terminal_unauthorized_without_the_secret() {
    let sim = start(|c| c.otc_errors = true).await;
    let client = password_client(&sim, "wrong-secret-value");
    let e = client.get("x").await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::Unauthorized);
    assert_eq!(e.operation, "authenticate");
    assert_eq!(e.code.as_deref(), Some("IAM.0001"));
    assert!(!e.to_string().contains("wrong-secret-value"));
}

#[tokio::test]
async fn a_refused_login_is_remembered_until_the_next_credential_check() {
    let sim = start(|_| {}).await;
    let client = std::sync::Arc::new(password_client(&sim, "wrong-secret-value"));
    // Fifty reconciles at once, then fifty more: one login attempt in all.
    let calls = (0..50).map(|_| {
        let client = client.clone();
        async move { client.get("x").await }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap_err().kind, RemoteErrorKind::Unauthorized);
    }
    for _ in 0..50 {
        assert_eq!(
            client.get("x").await.unwrap_err().kind,
            RemoteErrorKind::Unauthorized
        );
    }
    assert_eq!(
        sim.operation_count("authenticate"),
        1,
        "no lockout by retries"
    );
    // The connection check tries again (the password may have been fixed remotely).
    let e = client.check_credentials().await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::Unauthorized);
    assert_eq!(sim.operation_count("authenticate"), 2);
    assert!(client.get("x").await.is_err());
    assert_eq!(sim.operation_count("authenticate"), 2);
}

#[tokio::test]
async fn application_credentials_authenticate() {
    let sim = start(|_| {}).await;
    let client = KeystoneClient::new(
        &sim.base_url(),
        KeystoneCredentials::ApplicationCredential {
            id: "simulated-application-credential".into(),
            secret: "simulated-application-credential-secret".into(),
        },
        Some(KeystoneScope {
            domain_name: Some("ignored".into()),
            ..Default::default()
        }),
        &HttpOptions::default(),
    )
    .unwrap();
    client.check_credentials().await.unwrap();
    assert_eq!(sim.valid_token_count(), 1);
}

#[tokio::test]
async fn duplicate_ids_and_remote_ids_are_409_and_schema_errors_400() {
    let sim = start(|_| {}).await;
    let client = password_client(&sim, "simulated-password");
    client.create(&config("a", &["r1"])).await.unwrap();
    let e = client.create(&config("a", &["r2"])).await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::Conflict);
    assert!(e.message.contains("Duplicate entry"), "{}", e.message);
    let e = client.create(&config("b", &["r1"])).await.unwrap_err();
    assert!(
        e.message.contains("Duplicate remote ID: r1"),
        "{}",
        e.message
    );
    let e = client
        .patch("a", &json!({"identity_provider": {"domain_id": "x"}}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
    let e = client
        .patch("a", &json!({"identity_provider": {}}))
        .await
        .unwrap_err();
    assert!(e.message.contains("enough properties"));
    let e = client
        .patch("a", &json!({"identity_provider": {"colour": "red"}}))
        .await
        .unwrap_err();
    assert!(e.message.contains("'colour' was unexpected"));
    let e = client
        .patch("zz", &json!({"identity_provider": {"enabled": true}}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::NotFound);
    assert_eq!(e.message, "Could not find Identity Provider: zz.");
    // Created without enabled: Keystone's default is false.
    let raw = sim.identity_provider("a").unwrap();
    let observed = observed_from_wire(serde_json::from_value(raw).unwrap());
    assert_eq!(observed.remote_id, "a");
}

#[tokio::test]
async fn throttling_is_rate_limited_and_retried() {
    let sim = start(|c| c.otc_errors = true).await;
    let client = password_client(&sim, "simulated-password");
    client.check_credentials().await.unwrap();
    sim.throttle_next(1);
    // GET is idempotent: the 429 is retried after Retry-After (1 s).
    assert!(client.get("x").await.unwrap().is_none());
    sim.throttle_next(1);
    let e = client.create(&config("c", &[])).await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::RateLimited);
    assert_eq!(e.code.as_deref(), Some("IAM.0012"));
}

/// The desired configuration of `acme` with protocol `saml2` and `rules`, as built from a spec
/// (record: what status would hold).
fn federated(rules: serde_json::Value, created: &[&str]) -> ProviderConfig {
    let spec: secprov::api::security_provider::KeystoneProviderSpec =
        serde_json::from_value(json!({"protocols": {"saml2": {"mapping": {"rules": rules}}}}))
            .unwrap();
    let mut config = KeystoneConfig::desired("acme", &spec);
    config.record.created_mappings = created.iter().map(|s| s.to_string()).collect();
    config.record.managed_protocols = (!created.is_empty())
        .then(|| "saml2".to_owned())
        .into_iter()
        .collect();
    ProviderConfig::Keystone(config)
}

fn user_rules(remote_type: &str) -> serde_json::Value {
    json!([{"local": [{"user": {"name": "{0}"}}], "remote": [{"type": remote_type}]}])
}

/// Observes `acme` as the controller does: the main read, then the details `desired` compares.
async fn observe_all(
    client: &KeystoneClient,
    desired: &ProviderConfig,
) -> secprov::backend::ObservedProvider {
    let mut observed = client.observe(&key("acme")).await.unwrap().unwrap();
    client
        .observe_details(Some(desired), &mut observed)
        .await
        .unwrap();
    observed
}

#[tokio::test]
async fn federation_is_written_in_order_compared_semantically_and_deleted_in_reverse() {
    let sim = start(|_| {}).await;
    let client = password_client(&sim, "simulated-password");
    let desired = federated(user_rules("UserName"), &[]);
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    assert_eq!(
        sim.write_log(),
        vec![
            "PUT identity_provider acme",
            "PUT mapping acme-saml2",
            "PUT protocol acme/saml2"
        ]
    );
    let status = created.state.keystone.clone().unwrap();
    assert_eq!(status.created_mappings, vec!["acme-saml2"]);
    assert_eq!(status.protocols["saml2"].mapping_id, "acme-saml2");

    // Same rules with other key order and number formatting: in sync.
    sim.insert_mapping(
        "acme-saml2",
        serde_json::from_str(
            r#"[{"remote": [{"type": "UserName"}], "local": [{"user": {"name": "{0}"}}]}]"#,
        )
        .unwrap(),
    );
    let recorded = federated(user_rules("UserName"), &["acme-saml2"]);
    let observed = observe_all(&client, &recorded).await;
    assert!(recorded.diff(&observed.config).is_empty());

    // Keystone's 400 for the rules is terminal and names the mapping and the rule.
    let invalid = federated(
        json!([{"local": [{"user": {"name": "x"}}], "remote": [{"any_one_of": ["a"]}]}]),
        &["acme-saml2"],
    );
    let error = ProviderBackend::update(&client, &observed, &invalid)
        .await
        .unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::InvalidConfiguration);
    assert!(
        error.message.contains("\"acme-saml2\": rule 0:"),
        "{}",
        error.message
    );

    let writes = sim.write_log().len();
    assert!(
        ProviderBackend::delete(&client, "acme", Some(&recorded))
            .await
            .unwrap()
    );
    assert_eq!(
        sim.write_log().split_off(writes),
        vec![
            "DELETE protocol acme/saml2",
            "DELETE mapping acme-saml2",
            "DELETE identity_provider acme"
        ]
    );
}

#[tokio::test]
async fn a_foreign_mapping_is_refused_and_the_create_reports_federation_pending() {
    let sim = start(|_| {}).await;
    sim.insert_mapping("acme-saml2", user_rules("Theirs"));
    let client = password_client(&sim, "simulated-password");
    let desired = federated(user_rules("UserName"), &[]);
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    assert!(
        matches!(&created.health, secprov::backend::RemoteHealth::Progressing { reason: "FederationPending", message } if message.contains("spec.adopt")),
        "{:?}",
        created.health
    );
    let observed = observe_all(&client, &desired).await;
    let error = ProviderBackend::update(&client, &observed, &desired)
        .await
        .unwrap_err();
    assert_eq!(error.kind, RemoteErrorKind::AlreadyExists);
    assert_eq!(sim.mapping("acme-saml2"), Some(user_rules("Theirs")));

    let ProviderConfig::Keystone(mut adopting) = desired else {
        unreachable!()
    };
    adopting.record.adopt = true;
    let adopting = ProviderConfig::Keystone(adopting);
    let updated = ProviderBackend::update(&client, &observed, &adopting)
        .await
        .unwrap();
    assert!(adopting.diff(&updated.config).is_empty());
    assert!(updated.state.keystone.unwrap().created_mappings.is_empty());
    assert!(
        ProviderBackend::delete(&client, "acme", Some(&adopting))
            .await
            .unwrap()
    );
    assert!(
        sim.mapping("acme-saml2").is_some(),
        "adopted: never deleted"
    );
}
