//! Issue 15, secret values from Secrets: `spec.coveo.sensitiveParameters` and
//! `spec.coveo.userIdentities` on a real API server against the Coveo simulator (which masks
//! sensitive values on every read). The values reach Coveo and nowhere else (no log line at
//! debug level, Event, status or `kubectl describe`); a rotated Secret makes exactly one PUT per
//! provider that uses it; a change to an unused key and quiet resyncs make none.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-coveo-secrets-key-2c8e";
/// Distinctive values: any occurrence outside the simulator is a leak.
const TOKEN: &str = "tok-LEAKCHECK-9d2f7c1e5b";
const PASSWORD: &str = "pw-LEAKCHECK-4a8b0e6c13";
const ROTATED: &str = "tok-LEAKCHECK-rotated-77e1d4";

type Env = Running<CoveoSimulator>;

/// The example connection to a fresh simulator, the Secret with the values, and an operator
/// logging every crate at debug level (a value logged anywhere is found).
fn setup(prefix: &str) -> Env {
    let env = support::Env::coveo(prefix, coveo_config(API_KEY, Duration::from_millis(200)));
    env.ns.apply(&credentials_secret(TOKEN, "")).unwrap();
    let args = operator_args(&["--resync-interval", "1s"]);
    let operator = Operator::start_with_log(&env.ns.name, &args, "debug");
    Running { operator, env }
}

fn credentials_secret(token: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: connector-credentials
  labels:
    secprov.dev/credential: "true"
type: Opaque
stringData:
  token: {token}
  password: {PASSWORD}
{extra}"#
    )
}

/// A DATABASE provider with a plain parameter, a sensitive parameter and a user identity.
fn connector(name: &str) -> String {
    security_provider(name, "", CONNECTOR_SPEC)
}

/// The spec of [`connector`].
const CONNECTOR_SPEC: &str = r#"  connectionRef: coveo
  coveo:
    type: DATABASE
    parameters:
      DatabaseType: SQLSERVER
    sensitiveParameters:
      ApiToken: {name: connector-credentials, key: token}
    userIdentities:
      crawler:
        userName: svc-crawler
        passwordSecretRef: {name: connector-credentials, key: password}
"#;

fn plain(name: &str) -> String {
    security_provider(
        name,
        "",
        "  connectionRef: coveo\n  coveo:\n    type: EXPANDED\n",
    )
}

fn secrets_hash(env: &Env, name: &str) -> Option<String> {
    let sp = env.ns.get_json(&format!("securityprovider/{name}"))?;
    sp["status"]["coveo"]["secretsHash"]
        .as_str()
        .map(str::to_owned)
}

/// Everything the operator wrote or printed about the providers, the Secret itself excluded.
fn everything_visible(env: &Env, names: &[&str]) -> String {
    let mut text = env.operator.log_text();
    text.push_str(
        &env.ns
            .kubectl(&["get", "events", "-o", "yaml"])
            .unwrap_or_default(),
    );
    for name in names {
        let object = format!("securityprovider/{name}");
        text.push_str(&env.ns.kubectl(&["get", &object, "-o", "yaml"]).unwrap());
        text.push_str(&env.ns.kubectl(&["describe", &object]).unwrap());
    }
    text
}

fn assert_no_leak(text: &str) {
    for value in [TOKEN, PASSWORD, ROTATED] {
        assert!(!text.contains(value), "{value} leaked");
        let encoded = base64(value.as_bytes());
        assert!(
            !text.contains(&encoded[..encoded.len() - 4]),
            "{value} leaked as base64"
        );
    }
}

#[test]
fn secret_values_reach_coveo_only_and_a_rotation_is_exactly_one_put_per_user() {
    let env = setup("coveo-secrets");
    for name in ["db-one", "db-two"] {
        env.ns.apply(&connector(name)).unwrap();
    }
    env.ns.apply(&plain("bystander")).unwrap();
    for name in ["db-one", "db-two", "bystander"] {
        env.ns
            .wait_condition(&format!("securityprovider/{name}"), "Ready", "90s")
            .unwrap_or_else(|e| panic!("{e}\n{}", env.operator.log_text()));
    }

    // Created with the values from the Secret; the read is masked, the hash is recorded.
    for name in ["db-one", "db-two"] {
        let held = env.sim.secret_values(name).unwrap();
        assert_eq!(held["parameters.ApiToken"], TOKEN);
        assert_eq!(held["userIdentities.crawler"], PASSWORD);
        let read = env.sim.provider(name).unwrap();
        assert_ne!(
            read["parameters"]["ApiToken"]["value"], TOKEN,
            "simulator masks"
        );
        assert_eq!(read["parameters"]["DatabaseType"]["value"], "SQLSERVER");
        assert_eq!(read["userIdentities"]["crawler"]["userName"], "svc-crawler");
    }
    let hash_before = eventually(Duration::from_secs(30), "secretsHash", || {
        secrets_hash(&env, "db-one")
    });
    assert!(hash_before.starts_with("hmac-sha256:"), "{hash_before}");
    assert_ne!(
        Some(hash_before.clone()),
        secrets_hash(&env, "db-two"),
        "keyed per object"
    );

    // Ten quiet resyncs: reads (masked every time) but no PUT.
    env.sim.reset_counters();
    env.operator.wait_successes(10);
    assert!(
        env.sim.request_count("GET") > 0,
        "the operator read the remote"
    );
    assert_eq!(env.sim.request_count("PUT"), 0, "quiet resyncs make no PUT");

    // A change to a key no provider uses: reconciled, no PUT.
    env.ns
        .apply(&credentials_secret(TOKEN, "  unused: anything-else\n"))
        .unwrap();
    env.operator.wait_successes(6);
    assert_eq!(
        env.sim.request_count("PUT"),
        0,
        "an unused key makes no PUT"
    );

    // Rotation: exactly one PUT for each provider that uses the Secret, none for the other.
    env.ns.apply(&credentials_secret(ROTATED, "")).unwrap();
    for name in ["db-one", "db-two"] {
        eventually(Duration::from_secs(60), "rotated value sent", || {
            (env.sim.secret_values(name)?["parameters.ApiToken"] == ROTATED).then_some(())
        });
    }
    env.operator.wait_successes(10);
    assert_eq!(
        env.sim.request_count_for("PUT", "update"),
        2,
        "one PUT per provider using the rotated Secret"
    );
    assert_eq!(env.sim.request_count("PUT"), 2);
    assert_eq!(env.sim.secret_values("bystander").unwrap().len(), 0);
    let hash_after = secrets_hash(&env, "db-one").unwrap();
    assert_ne!(hash_after, hash_before, "status records the new hash");

    assert_no_leak(&everything_visible(
        &env,
        &["db-one", "db-two", "bystander"],
    ));
}

#[test]
fn a_missing_secret_key_is_reported_on_the_provider_without_its_value() {
    let env = setup("coveo-secrets-missing");
    let manifest = connector("broken").replace("key: token", "key: nope");
    env.ns.apply(&manifest).unwrap();
    let sp: Value = eventually(Duration::from_secs(60), "a Synced=False condition", || {
        let sp = env.ns.get_json("securityprovider/broken")?;
        let synced = condition(&sp, "Synced")?;
        (synced["status"] == "False").then(|| sp.clone())
    });
    let message = condition(&sp, "Synced").unwrap()["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(message.contains("nope"), "names the missing key: {message}");
    assert_eq!(
        condition(&sp, "Synced").unwrap()["reason"],
        "SecretKeyMissing"
    );
    assert!(
        env.sim.provider("broken").is_none(),
        "nothing sent without the value"
    );
    assert_no_leak(&everything_visible(&env, &["broken"]));
}

fn synced_reason(env: &Env, name: &str) -> Option<String> {
    let sp = env.ns.get_json(&format!("securityprovider/{name}"))?;
    let synced = condition(&sp, "Synced")?;
    synced["reason"].as_str().map(str::to_owned)
}

#[test]
fn values_come_only_from_opted_in_secrets_and_labelling_one_resumes_the_provider() {
    let env = setup("coveo-secrets-optin");
    let unlabelled = credentials_secret(TOKEN, "")
        .replace(
            "name: connector-credentials",
            "name: unlabelled-credentials",
        )
        .replace("    secprov.dev/credential: \"true\"\n", "    team: hr\n");
    env.ns.apply(&unlabelled).unwrap();
    env.ns
        .apply(&connector("optin").replace("connector-credentials", "unlabelled-credentials"))
        .unwrap();
    eventually(Duration::from_secs(60), "SecretNotOptedIn", || {
        (synced_reason(&env, "optin")? == "SecretNotOptedIn").then_some(())
    });
    assert!(
        env.sim.provider("optin").is_none(),
        "nothing sent from an unlabelled Secret"
    );
    // Secrets are not watched: the provider reads the Secret again at its next resync.
    env.ns
        .kubectl(&[
            "label",
            "secret",
            "unlabelled-credentials",
            "secprov.dev/credential=true",
        ])
        .unwrap();
    env.ns
        .wait_condition("securityprovider/optin", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", env.operator.log_text()));
    assert_eq!(
        env.sim.secret_values("optin").unwrap()["parameters.ApiToken"],
        TOKEN
    );
    assert_no_leak(&everything_visible(&env, &["optin"]));
}

const KEY_SECRET: &str = "secret/secprov-operator-fingerprint-key";

/// The key id a fingerprint names: `hmac-sha256:<key id>:<hex>`.
fn key_id(fingerprint: &str) -> String {
    let parts: Vec<&str> = fingerprint.split(':').collect();
    assert_eq!(parts.len(), 3, "{fingerprint}");
    assert_eq!((parts[0], parts[2].len()), ("hmac-sha256", 64));
    parts[1].to_owned()
}

/// The key Secret's `data.key` and resourceVersion. Without POD_NAMESPACE the operator keeps
/// its key in the namespace it watches: here, the test's.
fn key_secret(env: &Env) -> Option<(String, String)> {
    let secret = env.ns.get_json(KEY_SECRET)?;
    assert_eq!(secret["immutable"], true);
    Some((
        secret["data"]["key"].as_str()?.to_owned(),
        secret["metadata"]["resourceVersion"].as_str()?.to_owned(),
    ))
}

#[test]
fn the_fingerprint_key_is_created_on_first_start_kept_across_restarts_and_a_rotation_resends_once()
{
    let mut env = setup("coveo-secrets-key");
    env.ns.apply(&connector("db-key")).unwrap();
    env.ns
        .wait_condition("securityprovider/db-key", "Ready", "90s")
        .unwrap_or_else(|e| panic!("{e}\n{}", env.operator.log_text()));
    let (key, version) = key_secret(&env).expect("the key Secret was created on first start");
    assert_eq!(key.len(), 44, "32 bytes, base64");
    let first = eventually(Duration::from_secs(30), "secretsHash", || {
        secrets_hash(&env, "db-key")
    });
    let first_id = key_id(&first);

    // A restart reads the same key: same fingerprint, no PUT.
    env.sim.reset_counters();
    env.operator.restart();
    env.operator.wait_successes(6);
    assert_eq!(
        env.sim.request_count("PUT"),
        0,
        "a restart re-sends nothing"
    );
    assert_eq!(secrets_hash(&env, "db-key"), Some(first.clone()));
    assert_eq!(key_secret(&env), Some((key.clone(), version)));

    // Rotation: delete the key and restart. A new key is created, the recorded fingerprint
    // names the old key id: one PUT, then recorded under the new key, then quiet.
    env.ns.kubectl(&["delete", KEY_SECRET]).unwrap();
    env.operator.restart();
    let second = eventually(
        Duration::from_secs(60),
        "a fingerprint under the new key",
        || secrets_hash(&env, "db-key").filter(|h| key_id(h) != first_id),
    );
    let (new_key, _) = key_secret(&env).expect("a new key Secret");
    assert_ne!(new_key, key);
    env.operator.wait_successes(10);
    assert_eq!(
        env.sim.request_count_for("PUT", "update"),
        1,
        "exactly one re-send after the rotation"
    );
    assert_eq!(env.sim.request_count("PUT"), 1);
    assert_eq!(secrets_hash(&env, "db-key"), Some(second));
    assert_eq!(
        env.sim.secret_values("db-key").unwrap()["parameters.ApiToken"],
        TOKEN
    );
    assert_no_leak(&everything_visible(&env, &["db-key"]));
}

/// The key id an operator logged at start (`secrets fingerprint key loaded key_id=...`).
fn logged_key_id(operator: &Operator) -> Option<String> {
    let log = operator.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("secrets fingerprint key loaded"))?;
    let rest = &line[line.find("key_id=")? + "key_id=".len()..];
    let id: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (!id.is_empty()).then_some(id)
}

#[test]
fn two_replicas_starting_at_once_agree_on_one_key() {
    let ns = TestNamespace::new("coveo-secrets-key-race");
    let election = [
        "--leader-election",
        "--leader-election-id",
        "secprov-operator-key-race",
    ];
    let a = Operator::start_logging_to(&ns.name, &format!("{}-a", ns.name), &election, "info");
    let b = Operator::start_logging_to(&ns.name, &format!("{}-b", ns.name), &election, "info");
    let ids = eventually(
        Duration::from_secs(60),
        "both replicas loaded a key",
        || Some((logged_key_id(&a)?, logged_key_id(&b)?)),
    );
    assert_eq!(ids.0, ids.1, "one key for the installation");
    let secrets = ns.kubectl(&["get", "secrets", "-o", "name"]).unwrap();
    assert_eq!(
        secrets
            .lines()
            .filter(|l| l.contains("fingerprint-key"))
            .count(),
        1,
        "{secrets}"
    );
}
