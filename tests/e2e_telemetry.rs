//! Metrics and logs a person alerts on, on the real API server with the real operator: the
//! gauges forget objects deleted through every deletion path, failed reconciles are counted by
//! reason, one warning is logged per change of failure, and a log written to a file has no
//! colour codes; a metrics address that cannot be bound stops the operator at start.
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secprov_sim::coveo::CoveoSimulator;
use support::*;

const API_KEY: &str = "e2e-telemetry-key-0b7e";
const WRONG_KEY: &str = "e2e-telemetry-wrong-key-77d1";

type Env = support::Env<CoveoSimulator>;

fn provider(name: &str, extra_spec: &str) -> String {
    let spec = format!("  connectionRef: coveo\n{extra_spec}  coveo:\n    type: EXPANDED\n");
    security_provider(name, "", &spec)
}

/// The value of one series, None when it is not exported.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

fn providers_counted(operator: &Operator) -> f64 {
    operator.metric_sum("secprov_security_providers{", &[])
}

#[test]
fn gauges_forget_objects_deleted_on_every_path() {
    let env = Env::coveo(
        "telemetry-gauges",
        coveo_config(API_KEY, Duration::from_millis(100)),
    );
    // Someone else's provider under the id "taken", and one to observe.
    for id in ["taken", "watched"] {
        env.create_remotely(serde_json::json!({"id": id, "type": "EXPANDED", "displayName": id}));
    }
    let operator = env.start_operator(&["--connection-check-interval", "2s"]);
    let objects = [
        ("owned", ""),                                // created, deleted remotely on delete
        ("orphaned", "  deletionPolicy: Orphan\n"),   // created, kept on delete
        ("watched", "  managementPolicy: Observe\n"), // observed only
        ("taken", ""),                                // never owned: someone else's id
    ];
    for (name, extra) in objects {
        env.ns.apply(&provider(name, extra)).unwrap();
    }
    eventually(Duration::from_secs(60), "4 providers counted", || {
        (providers_counted(&operator) == 4.0).then_some(())
    });
    let text = operator.metrics();
    for (name, _) in objects {
        let ready = format!(
            r#"secprov_security_provider_ready{{namespace="{}",name="{name}""#,
            env.ns.name
        );
        assert!(text.contains(&ready), "no ready gauge for {name}:\n{text}");
    }
    let taken = env.ns.get_json("securityprovider/taken").unwrap();
    assert!(
        taken["status"]["remoteId"].is_null(),
        "taken is not ours: {taken}"
    );

    for (name, _) in objects {
        env.ns.delete(&format!("securityprovider/{name}"));
    }
    env.ns.delete("providerconnection/coveo");
    let text = eventually(Duration::from_secs(30), "every gauge emptied", || {
        let text = operator.metrics();
        (providers_counted(&operator) == 0.0 && !text.contains(&env.ns.name)).then_some(text)
    });
    assert!(
        series(
            &text,
            r#"secprov_security_providers{backend="coveo",ready="True"}"#
        ) == Some(0.0),
        "{text}"
    );
    // Orphan and Observe kept their remote providers; the foreign one was not touched.
    for id in ["orphaned", "watched", "taken"] {
        assert!(env.sim.provider(id).is_some(), "{id} kept remotely");
    }
    assert!(env.sim.provider("owned").is_none());
    let log = operator.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log written to a file"
    );
}

#[test]
fn failed_reconciles_are_counted_by_reason_and_warned_about_once_per_change() {
    let env = Env::coveo(
        "telemetry-errors",
        coveo_config(API_KEY, Duration::from_millis(100)),
    );
    // Secrets are read again at every connection check.
    let operator = env.start_operator(&["--connection-check-interval", "2s"]);
    // A wrong API key: every reconcile fails with RemoteUnauthorized (terminal, not retried).
    env.ns
        .kubectl(&[
            "patch",
            "secret/coveo-api-key",
            "--type=merge",
            "-p",
            &format!(r#"{{"stringData":{{"apiKey":"{WRONG_KEY}"}}}}"#),
        ])
        .unwrap();
    env.ns.apply(&provider("failing", "")).unwrap();
    let unauthorized = r#"reason="RemoteUnauthorized""#;
    operator.wait_metric_advance(
        "secprov_reconciles_total",
        &["result=\"error\"", unauthorized],
        1,
    );
    // The key is fixed but the remote is down: RemoteUnavailable, transient, retried.
    env.sim
        .faults()
        .set(secprov_sim::faults::FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        })
        .unwrap();
    let key = format!(r#"{{"stringData":{{"apiKey":"{API_KEY}"}}}}"#);
    env.ns
        .kubectl(&["patch", "secret/coveo-api-key", "--type=merge", "-p", &key])
        .unwrap();
    let unavailable = r#"reason="RemoteUnavailable""#;
    operator.wait_metric_advance(
        "secprov_reconciles_total",
        &["result=\"error\"", unavailable],
        3,
    );
    env.sim.faults().clear();
    env.ns
        .wait_condition("securityprovider/failing", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let text = operator.metrics();
    println!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("secprov_reconciles_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // One warning per change of reason, however many retries failed the same way.
    let log = operator.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SecurityProvider failing"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains("RemoteUnauthorized") && warnings[1].contains("RemoteUnavailable")
    );
    assert!(
        !log.contains(WRONG_KEY) && !log.contains(API_KEY),
        "no key in the log"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log written to a file"
    );
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_operator() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let ns = TestNamespace::new("telemetry-bind");
    let mut child = Command::new(env!("CARGO_BIN_EXE_secprov-operator"))
        .args(["run", "--namespace", &ns.name, "--metrics-addr", &addr])
        .env("KUBECONFIG", kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the operator kept running without its metrics server");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot bind the metrics server"),
        "{stderr}"
    );
    drop(taken);
}
