//! The JITSudo client against the JITSudo simulator (no Kubernetes involved).
use std::time::Duration;

use secprov::backend::http::HttpOptions;
use secprov::backend::jitsudo::{JitsudoClient, JitsudoConfig};
use secprov::backend::{ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth};
use secprov::error::RemoteErrorKind;
use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
use serde_json::json;

async fn start(adjust: impl FnOnce(&mut JitsudoSimConfig)) -> JitsudoSimulator {
    let mut config = JitsudoSimConfig::default();
    adjust(&mut config);
    JitsudoSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn client(sim: &JitsudoSimulator, tenant: &str, key: &str) -> JitsudoClient {
    JitsudoClient::new(&sim.base_url(), tenant, key.into(), &HttpOptions::default()).unwrap()
}

fn main_client(sim: &JitsudoSimulator) -> JitsudoClient {
    client(sim, &sim.config().tenant_id, &sim.config().api_key)
}

fn okta(name: &str) -> JitsudoConfig {
    JitsudoConfig {
        name: name.into(),
        provider_type: "okta".into(),
        config: json!({"domain": "acme.okta.com"}),
        enabled: true,
    }
}

#[tokio::test]
async fn provider_on_page_three_of_three_is_found_by_name() {
    let sim = start(|_| {}).await;
    let ids = sim.preload("bulk", 25);
    let client = main_client(&sim);
    // 10 per page: the 25th provider is on page 3 of 3.
    let found = client.find_by_name("bulk-0025", 10).await.unwrap().unwrap();
    assert_eq!(found.id, ids[24]);
    assert_eq!(sim.request_count_for("GET", "list"), 3);
    // A name that does not exist walks all pages and stops at has_more = false.
    sim.reset_counters();
    assert!(client.find_by_name("absent", 10).await.unwrap().is_none());
    assert_eq!(sim.request_count_for("GET", "list"), 3);
    assert_eq!(JitsudoClient::list(&client).await.unwrap().len(), 25);
}

#[tokio::test]
async fn observe_uses_the_recorded_id_and_falls_back_to_the_name() {
    let sim = start(|_| {}).await;
    sim.preload("bulk", 600);
    let id = sim.insert_provider("target", "okta", json!({}), true);
    let client = main_client(&sim);
    let by_name = ProviderKey {
        id: "target".into(),
        known_remote_id: None,
    };
    let observed = client.observe(&by_name).await.unwrap().unwrap();
    assert_eq!(observed.remote_id, id);
    assert_eq!(sim.request_count_for("GET", "list"), 3, "250 per page");
    sim.reset_counters();
    let by_id = ProviderKey {
        known_remote_id: Some(id.clone()),
        ..by_name
    };
    client.observe(&by_id).await.unwrap().unwrap();
    assert_eq!(sim.request_count_for("GET", "get"), 1);
    assert_eq!(sim.request_count_for("GET", "list"), 0);
}

#[tokio::test]
async fn lifecycle_and_sync_status() {
    let sim = start(|c| c.sync_duration = Duration::from_millis(400)).await;
    let client = main_client(&sim);
    let key = ProviderKey {
        id: "okta-main".into(),
        known_remote_id: None,
    };
    let created = ProviderBackend::create(&client, &ProviderConfig::Jitsudo(okta("okta-main")))
        .await
        .unwrap();
    assert_eq!(
        created.state.jitsudo.as_ref().unwrap().sync_status,
        "pending"
    );
    assert!(created.is_settling());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let synced = client.observe(&key).await.unwrap().unwrap();
    let status = synced.state.jitsudo.clone().unwrap();
    assert_eq!(status.sync_status, "synced");
    assert!(status.last_synced_at.is_some());
    assert_eq!(synced.health, RemoteHealth::Healthy);

    let mut changed = okta("okta-main");
    changed.enabled = false;
    let updated = ProviderBackend::update(&client, &synced, &ProviderConfig::Jitsudo(changed))
        .await
        .unwrap();
    assert_eq!(
        updated.state.jitsudo.as_ref().unwrap().sync_status,
        "syncing"
    );
    assert_eq!(updated.health, RemoteHealth::Healthy, "synced before");

    assert!(sim.fail_sync(&created.remote_id, "okta: 401 invalid token"));
    let failed = client.observe(&key).await.unwrap().unwrap();
    assert!(matches!(
        failed.health,
        RemoteHealth::Degraded {
            reason: "SyncFailed",
            ..
        }
    ));
    assert!(
        ProviderBackend::refresh(&client, &created.remote_id)
            .await
            .unwrap()
    );
    let again = client.observe(&key).await.unwrap().unwrap();
    assert_eq!(again.state.jitsudo.unwrap().sync_status, "syncing");

    let mut retyped = okta("okta-main");
    retyped.provider_type = "github".into();
    let e = ProviderBackend::update(
        &client,
        &again_observe(&client, &key).await,
        &ProviderConfig::Jitsudo(retyped),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("provider type"), "{}", e.message);

    assert!(
        ProviderBackend::delete(&client, &created.remote_id, None)
            .await
            .unwrap()
    );
    assert!(
        !ProviderBackend::delete(&client, &created.remote_id, None)
            .await
            .unwrap()
    );
}

async fn again_observe(
    client: &JitsudoClient,
    key: &ProviderKey,
) -> secprov::backend::ObservedProvider {
    client.observe(key).await.unwrap().unwrap()
}

#[tokio::test]
async fn auth_errors_are_distinguished() {
    let sim = start(|c| c.other_keys = vec![("other-key".into(), "other-tenant".into())]).await;
    let tenant = sim.config().tenant_id.clone();
    let e = client(&sim, &tenant, "wrong").list().await.unwrap_err();
    assert_eq!(
        (e.status, e.kind),
        (Some(401), RemoteErrorKind::Unauthorized)
    );
    let e = client(&sim, &tenant, "other-key").list().await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("tenant_mismatch"));
    assert_eq!(e.kind, RemoteErrorKind::Forbidden);
    assert!(e.to_string().contains("X-Tenant-ID"));
    // Tenants are isolated.
    sim.insert_provider("mine", "okta", json!({}), true);
    let other = client(&sim, "other-tenant", "other-key");
    assert!(other.find_by_name("mine", 50).await.unwrap().is_none());
}

#[tokio::test]
async fn duplicate_names_conflict_and_bad_bodies_are_invalid_input() {
    let sim = start(|_| {}).await;
    let client = main_client(&sim);
    client.create(&okta("a")).await.unwrap();
    let e = client.create(&okta("a")).await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::Conflict);
    let mut bad = okta("b");
    bad.provider_type = "ldap".into();
    let e = client.create(&bad).await.unwrap_err();
    assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
    assert!(
        client
            .get("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap()
            .is_none()
    );
}
