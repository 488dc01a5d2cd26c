//! The fault layer and the control endpoints are the same in all three simulators: faults set
//! at run time (`POST /_sim/faults`) or by the `--fault-*` flags of `secprov-sim` are
//! injected, in the simulated API's own error shape, and counted.
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use secprov_sim::jitsudo::{JitsudoSimConfig, JitsudoSimulator};
use secprov_sim::keystone::{KeystoneSimConfig, KeystoneSimulator};
use serde_json::{Value, json};

/// An unauthenticated API request: 401 from every simulator when no fault is injected.
async fn api_get(base: &str, path: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A simulator control endpoint's JSON (`/_sim/faults`, `/_sim/stats`).
async fn control_get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http.get(format!("{base}{path}")).send().await.unwrap();
    response.json().await.unwrap()
}

/// Sets `errorRate: 1` at run time, checks that the API request gets an injected 5xx whose
/// body passes `shaped`, that it was counted, and that `{}` turns the faults off again.
async fn error_rate_one_is_injected(base: &str, path: &str, shaped: fn(&Value) -> bool) {
    let http = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    };
    assert_eq!(api_get(base, path).await.0, 401, "no fault yet");
    let set = http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"errorRate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);

    let (status, body) = api_get(base, path).await;
    assert!(
        status == 500 || status == 503,
        "{base}: got {status} {body}"
    );
    assert!(
        shaped(&body),
        "{base}: injected error not in the API's shape: {body}"
    );
    let report: Value = control_get(&http, base, "/_sim/faults").await;
    assert_eq!(report["injected"]["error"], 1, "{report}");
    let stats: Value = control_get(&http, base, "/_sim/stats").await;
    assert_eq!(
        stats["counters"]["total"], 2,
        "both API requests counted: {stats}"
    );

    http.post(format!("{base}/_sim/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(api_get(base, path).await.0, 401, "faults off again");
}

#[tokio::test]
async fn coveo_injects_faults_set_at_run_time() {
    let sim = CoveoSimulator::start("127.0.0.1:0".parse().unwrap(), CoveoSimConfig::default())
        .await
        .unwrap();
    let path = "/rest/organizations/simulatedorganization/securityproviders";
    error_rate_one_is_injected(&sim.base_url(), path, |b| {
        b["errorCode"] == "INTERNAL_ERROR"
    })
    .await;
    assert_eq!(sim.faults().injected()["error"], 1);
}

#[tokio::test]
async fn keystone_injects_faults_set_at_run_time() {
    let config = KeystoneSimConfig::default();
    let sim = KeystoneSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let path = "/v3/OS-FEDERATION/identity_providers";
    error_rate_one_is_injected(&sim.base_url(), path, |b| {
        b["error"]["code"].as_u64().is_some_and(|c| c >= 500)
    })
    .await;
    assert_eq!(sim.faults().injected()["error"], 1);
}

#[tokio::test]
async fn keystone_otc_shape_is_kept_for_injected_errors() {
    let config = KeystoneSimConfig {
        otc_errors: true,
        faults: secprov_sim::faults::FaultConfig {
            throttle_rate: 1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let sim = KeystoneSimulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let (status, body) = api_get(&sim.base_url(), "/v3/OS-FEDERATION/identity_providers").await;
    assert_eq!(status, 429);
    assert_eq!(body["error_code"], "IAM.0012", "{body}");
}

#[tokio::test]
async fn jitsudo_injects_faults_set_at_run_time() {
    let sim = JitsudoSimulator::start("127.0.0.1:0".parse().unwrap(), JitsudoSimConfig::default())
        .await
        .unwrap();
    error_rate_one_is_injected(&sim.base_url(), "/v1/identity-providers", |b| {
        b["code"] == "internal_error" && b["message"].is_string()
    })
    .await;
    assert_eq!(sim.faults().injected()["error"], 1);
}

/// Starts `secprov-sim ARGS...` and returns it with its base URL.
fn spawn_sim(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secprov-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|url| line.contains("simulator listening on") && url.starts_with("http://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, url)
}

#[tokio::test]
async fn fault_flags_work_for_every_simulator() {
    let cases = [
        (
            vec!["coveo", "--api-key", "k"],
            "/rest/organizations/demo-org/securityproviders",
        ),
        (
            vec!["keystone", "--password", "p"],
            "/v3/OS-FEDERATION/identity_providers",
        ),
        (vec!["jitsudo", "--api-key", "k"], "/v1/identity-providers"),
    ];
    for (args, path) in cases {
        let mut args = args.clone();
        args.extend([
            "--fault-throttle-rate",
            "1",
            "--fault-retry-after-seconds",
            "7",
        ]);
        let (mut child, base) = spawn_sim(&args);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            reqwest::get(format!("{base}{path}")),
        )
        .await
        .unwrap()
        .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(status, 429, "{args:?}");
        assert_eq!(retry_after.unwrap(), "7", "{args:?}");
    }
}
