//! The Coveo client against the Coveo simulator (no Kubernetes involved).
use std::time::Duration;

use secprov::api::security_provider::{
    CoveoCascadingProvider, CoveoProviderSpec, CoveoProviderType, CoveoReference,
    CoveoReferenceType,
};
use secprov::backend::coveo::{CoveoClient, CoveoConfig, EMAIL_SECURITY_PROVIDER};
use secprov::backend::http::HttpOptions;
use secprov::backend::{ProviderBackend, ProviderConfig, ProviderKey};
use secprov::error::RemoteErrorKind;
use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};

const KEY: &str = "client-test-key";

async fn simulator() -> CoveoSimulator {
    CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            refresh_duration: Duration::from_millis(100),
            ..CoveoSimConfig::new("org", KEY)
        },
    )
    .await
    .unwrap()
}

fn client(sim: &CoveoSimulator, key: &str) -> CoveoClient {
    // The default token bucket (20/s) would make the 250-provider test slow for no reason.
    let options = HttpOptions {
        requests_per_second: 1000,
        burst: 1000,
        ..HttpOptions::default()
    };
    CoveoClient::new(&sim.base_url(), "org", key.to_owned(), &options).unwrap()
}

fn spec() -> CoveoProviderSpec {
    CoveoProviderSpec {
        provider_type: Some(CoveoProviderType::Expanded),
        referenced_by: vec![CoveoReference {
            reference_type: CoveoReferenceType::Source,
            id: "src".into(),
        }],
        cascading_security_providers: vec![CoveoCascadingProvider {
            id: EMAIL_SECURITY_PROVIDER.into(),
            provider_type: CoveoProviderType::Email,
        }],
        ..Default::default()
    }
}

fn key(id: &str) -> ProviderKey {
    ProviderKey {
        id: id.into(),
        known_remote_id: None,
    }
}

#[tokio::test]
async fn create_observe_update_refresh_delete_round_trip() {
    let sim = simulator().await;
    let client = client(&sim, KEY);
    let desired = ProviderConfig::Coveo(CoveoConfig::desired("My Provider", "Mine", &spec()));

    assert!(
        client.observe(&key("My Provider")).await.unwrap().is_none(),
        "404 is 'absent'"
    );
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    assert_eq!(created.remote_id, "My Provider");
    assert!(
        desired.diff(&created.config).is_empty(),
        "created exactly as desired: {:?}",
        desired.diff(&created.config)
    );
    assert_eq!(sim.operation_count("create"), 1);

    let observed = client.observe(&key("My Provider")).await.unwrap().unwrap();
    assert!(desired.diff(&observed.config).is_empty());

    let changed = ProviderConfig::Coveo(CoveoConfig::desired("My Provider", "Renamed", &spec()));
    assert_eq!(changed.diff(&observed.config), vec!["displayName"]);
    let updated = ProviderBackend::update(&client, &observed, &changed)
        .await
        .unwrap();
    assert!(changed.diff(&updated.config).is_empty());
    assert_eq!(
        sim.provider("My Provider").unwrap()["displayName"],
        "Renamed"
    );
    assert_eq!(sim.operation_count("update"), 1);

    assert!(
        ProviderBackend::refresh(&client, "My Provider")
            .await
            .unwrap()
    );
    let refreshing = client.observe(&key("My Provider")).await.unwrap().unwrap();
    assert_eq!(
        refreshing.state.current_status.unwrap().status_type,
        "REFRESHING"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let done = client.observe(&key("My Provider")).await.unwrap().unwrap();
    assert_eq!(done.state.current_status.unwrap().status_type, "IDLE");
    let op = done.state.last_refresh_operation.unwrap();
    assert_eq!(
        op.operation_type.as_deref(),
        Some("SECURITY_PROVIDER_REFRESH")
    );
    assert!(op.timestamp.unwrap().ends_with('Z'), "RFC 3339 UTC");

    assert!(
        ProviderBackend::delete(&client, "My Provider", None)
            .await
            .unwrap()
    );
    assert!(
        !ProviderBackend::delete(&client, "My Provider", None)
            .await
            .unwrap(),
        "already gone is not an error"
    );
    assert!(sim.provider("My Provider").is_none());
}

#[tokio::test]
async fn a_create_reads_the_new_provider_back_and_reports_one_still_creating_as_progressing() {
    let sim = simulator().await;
    let client = client(&sim, KEY);
    let desired = ProviderConfig::Coveo(CoveoConfig::desired("New", "New one", &spec()));
    assert!(client.observe(&key("New")).await.unwrap().is_none());
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    // k = 3: GET 404, POST, and the read back of the new provider (POST answers without
    // status fields).
    let counts = sim.counters().snapshot();
    assert_eq!(counts.total, 3, "{counts:?}");
    assert_eq!(sim.request_count_for("GET", "get"), 2);
    assert_eq!(sim.request_count_for("POST", "create"), 1);
    assert!(
        desired.diff(&created.config).is_empty(),
        "{:?}",
        desired.diff(&created.config)
    );
    // The simulator reports CREATING for 100 ms: the create ends with the provider still
    // being created, so the controller reads it again after a progress interval.
    assert_eq!(
        created
            .state
            .current_status
            .as_ref()
            .map(|s| s.status_type.as_str()),
        Some("CREATING")
    );
    assert!(created.is_settling(), "{:?}", created.health);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let read = client.observe(&key("New")).await.unwrap().unwrap();
    assert!(!read.is_settling(), "{:?}", read.health);
}

#[tokio::test]
async fn a_create_whose_provider_settled_at_once_reports_its_state_and_statistics() {
    let sim = CoveoSimulator::start(
        "127.0.0.1:0".parse().unwrap(),
        CoveoSimConfig {
            refresh_duration: Duration::ZERO,
            ..CoveoSimConfig::new("org", KEY)
        },
    )
    .await
    .unwrap();
    let client = client(&sim, KEY);
    let desired = ProviderConfig::Coveo(CoveoConfig::desired("Fast", "Fast one", &spec()));
    let created = ProviderBackend::create(&client, &desired).await.unwrap();
    // No second status write a progress interval later: the create's own outcome is settled
    // and carries what the status shows.
    assert!(!created.is_settling(), "{:?}", created.health);
    assert!(created.state.current_status.is_some());
    assert!(created.state.statistics.is_some(), "{:?}", created.state);
    assert!(desired.diff(&created.config).is_empty());
}

#[tokio::test]
async fn list_follows_every_page_and_skips_the_built_in_provider() {
    let sim = simulator().await;
    let client = client(&sim, KEY);
    for i in 0..250 {
        let id = format!("p{i:03}");
        let desired = ProviderConfig::Coveo(CoveoConfig::desired(
            &id,
            &id,
            &CoveoProviderSpec::default(),
        ));
        ProviderBackend::create(&client, &desired).await.unwrap();
    }
    sim.reset_counters();
    let all = ProviderBackend::list(&client).await.unwrap();
    assert_eq!(all.len(), 250);
    assert!(all.iter().all(|p| p.remote_id != EMAIL_SECURITY_PROVIDER));
    assert_eq!(
        sim.operation_count("page"),
        3,
        "251 providers at 100 per page"
    );
}

#[tokio::test]
async fn remote_errors_are_classified_with_the_remote_message() {
    let sim = simulator().await;
    let client = client(&sim, KEY);
    let mut bad = spec();
    bad.cascading_security_providers[0].id = "Does Not Exist".into();
    let desired = ProviderConfig::Coveo(CoveoConfig::desired("p", "p", &bad));
    let err = ProviderBackend::create(&client, &desired)
        .await
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::InvalidConfiguration);
    assert_eq!(
        err.code.as_deref(),
        Some("SECURITY_PROVIDER_INVALID_CONFIGURATION")
    );
    assert!(err.message.contains("Does Not Exist"), "{}", err.message);

    let long = ProviderConfig::Coveo(CoveoConfig::desired(&"x".repeat(256), "x", &spec()));
    let err = ProviderBackend::create(&client, &long).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::InvalidConfiguration);

    let wrong = self::client(&sim, "wrong-key");
    let err = wrong.observe(&key("p")).await.unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized);
    assert!(
        !err.to_string().contains("wrong-key"),
        "credentials never end up in error text"
    );

    let err = ProviderBackend::refresh(&client, "missing")
        .await
        .unwrap_err();
    assert_eq!(err.kind, RemoteErrorKind::NotFound);
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let err = CoveoClient::new(
        "http://platform.cloud.coveo.com",
        "org",
        "k".into(),
        &HttpOptions::default(),
    )
    .unwrap_err();
    assert!(err.contains("non-loopback"), "{err}");
    let err = CoveoClient::new(
        "https://platform.cloud.coveo.com",
        "org",
        " ".into(),
        &HttpOptions::default(),
    )
    .unwrap_err();
    assert!(err.contains("empty"), "{err}");
}

/// A Coveo stand-in whose POST answers the model it was sent (as Coveo's does: no status
/// fields) and whose GET never answers within the test.
async fn server_whose_reads_hang() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    if !head.starts_with("post") {
                        // The read back hangs far beyond its bound.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        return;
                    }
                    let body = buffer[end + 4..end + 4 + length].to_vec();
                    buffer.drain(..end + 4 + length);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                }
            });
        }
    });
    format!("http://{address}")
}

/// The create succeeded; the read back that follows it hangs. The create is reported within
/// the read back's bound (5 s), as being created (the controller reads it again after a
/// progress interval), instead of holding the reconcile's slot until its deadline.
#[tokio::test]
async fn a_read_back_that_hangs_ends_the_create_at_its_bound_as_being_created() {
    let base = server_whose_reads_hang().await;
    let options = HttpOptions {
        requests_per_second: 1000,
        burst: 1000,
        ..HttpOptions::default()
    };
    let client = CoveoClient::new(&base, "org", KEY.to_owned(), &options).unwrap();
    let desired = ProviderConfig::Coveo(CoveoConfig::desired("Slow", "Slow read", &spec()));
    let started = std::time::Instant::now();
    // Well below the client's request timeout (30 s), which would end the read otherwise.
    let created = tokio::time::timeout(
        Duration::from_secs(20),
        ProviderBackend::create(&client, &desired),
    )
    .await
    .expect("the create does not wait for the hanging read")
    .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "the read back was given its time: {took:?}"
    );
    assert_eq!(created.remote_id, "Slow");
    assert!(created.is_settling(), "{:?}", created.health);
    assert!(
        format!("{:?}", created.health).contains("RemoteCreating"),
        "{:?}",
        created.health
    );
}
