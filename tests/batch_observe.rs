//! Batch observation against the Coveo simulator over HTTP: a resync of 10,000 providers reads
//! them in pages of 100 (one list shared by every reconcile of the connection), instead of
//! 10,000 GETs.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use secprov::backend::ProviderBackend;
use secprov::backend::coveo::CoveoClient;
use secprov::backend::http::HttpOptions;
use secprov::controller::snapshot::Snapshots;
use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_of_10k_providers_costs_about_n_over_100_remote_reads() {
    let n = 10_000;
    let sim = CoveoSimulator::start("127.0.0.1:0".parse().unwrap(), CoveoSimConfig::default())
        .await
        .unwrap();
    let config = CoveoSimConfig::default();
    let options = HttpOptions {
        requests_per_second: 10_000,
        burst: 10_000,
        max_concurrency: 64,
        ..HttpOptions::default()
    };
    let client = CoveoClient::new(
        &sim.base_url(),
        &config.organization_id,
        config.api_key.clone(),
        &options,
    )
    .unwrap();
    let http = {
        secprov::backend::http::install_tls_provider();
        reqwest::Client::new()
    };
    let url = format!(
        "{}/rest/organizations/{}/securityproviders",
        sim.base_url(),
        config.organization_id
    );
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, url, key) = (http.clone(), url.clone(), config.api_key.clone());
            async move {
                let body = serde_json::json!({
                    "id": format!("sp-{i:05}"), "displayName": "p", "type": "EXPANDED",
                    "nodeRequired": false, "caseSensitive": false, "parameters": {},
                    "referencedBy": [], "cascadingSecurityProviders": {}
                });
                let resp = http
                    .post(&url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    sim.reset_counters();

    let backend: Arc<dyn ProviderBackend> = Arc::new(client);
    let snapshots = Arc::new(Snapshots::<&str>::new(Duration::from_secs(270)));
    // Every provider's resync, 16 at a time as the controller would run them.
    let hits = futures::stream::iter(0..n)
        .map(|i| {
            let (snapshots, backend) = (snapshots.clone(), backend.clone());
            async move {
                snapshots
                    .lookup(&"conn", &backend, &format!("sp-{i:05}"))
                    .await
                    .is_some()
            }
        })
        .buffer_unordered(16)
        .filter(|hit| futures::future::ready(*hit))
        .count()
        .await;
    assert_eq!(hits, n);
    let reads = sim.request_count("GET");
    println!(
        "resync of {n} providers: {reads} remote reads ({} page requests, {} single GETs); the simulator also lists its built-in Email Security Provider",
        sim.request_count_for("GET", "page"),
        sim.request_count_for("GET", "get")
    );
    // 10,000 + the built-in provider in pages of 100.
    assert_eq!(reads, (n as u64 + 1).div_ceil(100));
    assert_eq!(sim.request_count_for("GET", "get"), 0);
}
