//! Secret hygiene (issue 5, item 6): provoke every kind of failure around credentials and the
//! remote system, then search everything the operator wrote — its log (at debug level for all
//! crates), every Event, every object's status — for the API keys, verbatim and base64. Also:
//! credentials come only from the connection's own namespace.
mod support;

use std::time::Duration;

use secprov_sim::coveo::{CoveoSimConfig, CoveoSimulator};
use secprov_sim::faults::FaultConfig;
use serde_json::Value;
use support::*;

const ORG: &str = "secrets-org";
/// The real key: distinctive so that any occurrence is a leak.
const API_KEY: &str = "sk-LEAKCHECK-right-4b1f9e07d2c3a856";
/// A wrong key the remote refuses.
const WRONG_KEY: &str = "sk-LEAKCHECK-wrong-93ad61c0f7e2b548";
/// A key stored only in another namespace.
const OTHER_NS_KEY: &str = "sk-LEAKCHECK-otherns-1e6d0a9b3c7f4582";

fn secret(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{secprov.dev/credential: \"true\"}}\ntype: Opaque\nstringData:\n  {key}: {value}\n"
    )
}

fn connection(name: &str, endpoint: &str, secret: &str) -> String {
    coveo_connection(name, ORG, endpoint, secret, "apiKey")
}

fn provider(name: &str, connection: &str, cascading: &str) -> String {
    format!(
        r#"apiVersion: secprov.dev/v1alpha1
kind: SecurityProvider
metadata:
  name: {name}
spec:
  connectionRef: {connection}
  coveo:
    type: EXPANDED
    cascadingSecurityProviders:
      - {{id: {cascading}, type: EMAIL}}
"#
    )
}

fn wait_reason(ns: &TestNamespace, operator: &Operator, name: &str, reason: &str) {
    let resource = format!("securityprovider/{name}");
    ns.wait_reason_logged(
        &resource,
        "Ready",
        reason,
        Duration::from_secs(60),
        operator,
    );
}

#[test]
fn no_credential_reaches_logs_events_or_status() {
    let rt = runtime();
    let sim = rt
        .block_on(CoveoSimulator::start(
            "127.0.0.1:0".parse().unwrap(),
            CoveoSimConfig {
                refresh_duration: Duration::from_millis(100),
                ..CoveoSimConfig::new(ORG, API_KEY)
            },
        ))
        .unwrap();
    let endpoint = sim.base_url();
    let ns = TestNamespace::new("secrets");
    let other = TestNamespace::new("secrets-other");
    other
        .apply(&secret("elsewhere", "apiKey", OTHER_NS_KEY))
        .unwrap();
    let manifests = [
        secret("right", "apiKey", API_KEY),
        secret("wrong", "apiKey", WRONG_KEY),
        secret("nokey", "somethingElse", API_KEY),
        connection("good", &endpoint, "right"),
        connection("badkey", &endpoint, "wrong"),
        connection("missing", &endpoint, "does-not-exist"),
        connection("keymissing", &endpoint, "nokey"),
        connection("crossns", &endpoint, "elsewhere"),
    ];
    ns.apply(&manifests.join("---\n")).unwrap();
    // Every crate at debug: the most a user would turn on while troubleshooting.
    let mut operator = Operator::start_with_log(
        &ns.name,
        &["--resync-interval", "2s", "--progress-interval", "300ms"],
        "debug",
    );

    let cases = [
        ("ok", "good", "Email Security Provider", "Available"),
        (
            "wrong-key",
            "badkey",
            "Email Security Provider",
            "RemoteUnauthorized",
        ),
        (
            "no-secret",
            "missing",
            "Email Security Provider",
            "SecretNotFound",
        ),
        (
            "no-key",
            "keymissing",
            "Email Security Provider",
            "SecretKeyMissing",
        ),
        (
            "other-namespace",
            "crossns",
            "Email Security Provider",
            "SecretNotFound",
        ),
        (
            "bad-config",
            "good",
            "No Such Provider",
            "RemoteInvalidConfiguration",
        ),
    ];
    let all: Vec<String> = cases
        .iter()
        .map(|(name, conn, cascading, _)| provider(name, conn, cascading))
        .collect();
    ns.apply(&all.join("---\n")).unwrap();
    for (name, _, _, reason) in &cases {
        wait_reason(&ns, &operator, name, reason);
    }

    // Remote outage: 500s, resets and malformed bodies, while a new object is created.
    sim.faults()
        .set(FaultConfig {
            error_rate: 0.5,
            reset_rate: 0.25,
            malformed_rate: 0.5,
            ..FaultConfig::default()
        })
        .unwrap();
    ns.apply(&provider(
        "during-outage",
        "good",
        "Email Security Provider",
    ))
    .unwrap();
    eventually(Duration::from_secs(30), "faults injected", || {
        (sim.faults().total_injected() >= 3).then_some(())
    });
    sim.faults().clear();
    wait_reason(&ns, &operator, "during-outage", "Available");
    // A crash and restart replays everything once more.
    operator.restart();
    operator.wait_reconciles(3);
    operator.terminate(Duration::from_secs(10));

    // The Secret itself holds the key in base64: proof that the search looks for the right form.
    let secret_yaml = ns
        .kubectl(&["get", "secret", "right", "-o", "yaml"])
        .unwrap();
    assert!(secret_yaml.contains(&base64(API_KEY.as_bytes())));

    let outputs = [
        ("operator log", operator.log_text()),
        (
            "events",
            kubectl(&["get", "events", "-A", "-o", "yaml"]).unwrap(),
        ),
        (
            "securityproviders",
            kubectl(&["get", "securityproviders", "-A", "-o", "yaml"]).unwrap(),
        ),
        (
            "providerconnections",
            kubectl(&["get", "providerconnections", "-A", "-o", "yaml"]).unwrap(),
        ),
        (
            "describe",
            ns.kubectl(&["describe", "securityproviders,providerconnections"])
                .unwrap(),
        ),
    ];
    let mut leaks = 0;
    let mut searched = 0;
    for value in [API_KEY, WRONG_KEY, OTHER_NS_KEY] {
        for needle in [value.to_owned(), base64(value.as_bytes())] {
            for (what, text) in &outputs {
                let n = text.matches(needle.as_str()).count();
                searched += 1;
                if n > 0 {
                    eprintln!("LEAK: {n} occurrence(s) of a credential in {what}");
                }
                leaks += n;
            }
        }
    }
    let log_lines = outputs[0].1.lines().count();
    let events: Value =
        serde_json::from_str(&kubectl(&["get", "events", "-n", &ns.name, "-o", "json"]).unwrap())
            .unwrap();
    let event_count = events["items"].as_array().map_or(0, Vec::len);
    let figures = format!(
        "=== secret hygiene run (tests/e2e_secrets.rs) ===\nsearched {searched} (credential form, output) pairs: operator log ({log_lines} lines at RUST_LOG=debug), {event_count} Events, status of {} objects\nleaked secrets: {leaks}\n",
        cases.len() + 1
    );
    print!("{figures}");
    let _ = std::fs::create_dir_all(repo().join("target/e2e-logs"));
    let _ = std::fs::write(repo().join("target/e2e-logs/figures-secrets.txt"), &figures);
    assert_eq!(leaks, 0, "credentials leaked");

    // The object in another namespace's Secret was never read: its connection reports the
    // Secret as missing from its own namespace.
    let obj = ns.get_json("securityprovider/other-namespace").unwrap();
    let message = condition(&obj, "Ready").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("elsewhere") && message.contains("not found in this namespace"),
        "{message}"
    );
}
