//! End-to-end tests of the Coveo backend on a real API server, driven through kubectl, with
//! the real operator binary and the Coveo simulator.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-coveo-key-7f3a9c";
const ORG: &str = COVEO_ORG;

type Env = Running<CoveoSimulator>;
/// How long the simulator's CREATING and REFRESHING last.
const REFRESH: Duration = Duration::from_millis(300);

fn provider_manifest(name: &str, display: &str, extra_spec: &str) -> String {
    let spec = format!(
        r#"  connectionRef: coveo
  displayName: {display}
{extra_spec}  coveo:
    type: EXPANDED
    referencedBy:
      - type: SOURCE
        id: source-{name}
    cascadingSecurityProviders:
      - id: Email Security Provider
        type: EMAIL
"#
    );
    security_provider(name, "", &spec)
}

/// One multi-document manifest of a provider per name (display name = name).
fn provider_manifests(names: &[String]) -> String {
    names
        .iter()
        .map(|n| provider_manifest(n, n, ""))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn resource_version(env: &Env, name: &str) -> String {
    env.ns
        .get_json(&format!("securityprovider/{name}"))
        .unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Status mirrors the simulator: statistics, lastRefreshOperation (timestamp as RFC 3339) and
/// currentStatus.
fn assert_status_matches_remote(status: &Value, remote: &Value) {
    assert_eq!(status["statistics"], remote["statistics"], "statistics");
    assert_eq!(
        status["currentStatus"]["type"], remote["currentStatus"]["type"],
        "currentStatus"
    );
    let op = &remote["lastRefreshOperation"];
    if op.is_object() {
        assert_eq!(
            status["lastRefreshOperation"]["operationType"],
            op["operationType"]
        );
        assert_eq!(
            status["lastRefreshOperation"]["numberOfEntitiesProcessed"],
            op["numberOfEntitiesProcessed"]
        );
        let millis = op["timestamp"]
            .as_i64()
            .expect("simulator reports epoch millis");
        let expected = jiff::Timestamp::from_millisecond(millis)
            .unwrap()
            .to_string();
        assert_eq!(
            status["lastRefreshOperation"]["timestamp"].as_str(),
            Some(expected.as_str())
        );
    }
}

#[test]
fn example_is_created_updated_with_one_put_and_deleted_with_one_delete() {
    let env =
        support::Env::coveo("coveo-lifecycle", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    env.ns
        .apply(&example(
            "coveo/10-securityprovider.yaml",
            &env.sim.base_url(),
        ))
        .unwrap();
    let obj = env.wait_ready("push-source-provider");

    let remote = env
        .sim
        .provider("push-source-provider")
        .expect("created remotely");
    assert_eq!(
        remote["displayName"],
        "My Secured Push Source Security Identity Provider"
    );
    assert_eq!(
        remote["referencedBy"][0]["id"],
        "demo-org-rp5rxzbdz753uhndklv2ztkfgy"
    );
    assert_eq!(env.sim.operation_count("create"), 1, "exactly one create");
    let status = &obj["status"];
    assert_eq!(status["remoteId"], "push-source-provider");
    assert_eq!(status["backend"], "coveo");
    assert_eq!(status["observedGeneration"], obj["metadata"]["generation"]);
    // Let the simulator's creation lifecycle settle, then compare with what it reports.
    let settled = eventually(
        Duration::from_secs(20),
        "status to match the simulator",
        || {
            let obj = env.ns.get_json("securityprovider/push-source-provider")?;
            let remote = env.sim.provider("push-source-provider")?;
            (obj["status"]["statistics"] == remote["statistics"]
                && obj["status"]["currentStatus"]["type"] == remote["currentStatus"]["type"]
                && obj["status"]["lastRefreshOperation"]["numberOfEntitiesProcessed"]
                    == remote["lastRefreshOperation"]["numberOfEntitiesProcessed"])
                .then_some((obj, remote))
        },
    );
    assert_status_matches_remote(&settled.0["status"], &settled.1);
    let synced = condition(&settled.0, "Synced").unwrap();
    assert_eq!(synced["status"], "True");

    // Statistics changed remotely show up in status at the next resync.
    env.sim.set_statistics(
        "push-source-provider",
        [("UP_TO_DATE".to_string(), 40), ("IN_ERROR".to_string(), 2)].into(),
    );
    eventually(Duration::from_secs(15), "new statistics in status", || {
        let obj = env.ns.get_json("securityprovider/push-source-provider")?;
        (obj["status"]["statistics"]["totalNumberOfEntities"] == 42
            && obj["status"]["statistics"]["numberOfEntitiesInError"] == 2)
            .then_some(())
    });

    // A spec change causes exactly one PUT.
    let puts_before = env.sim.request_count("PUT");
    env.ns
        .kubectl(&[
            "patch",
            "securityprovider/push-source-provider",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"Renamed provider"}}"#,
        ])
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "displayName updated remotely",
        || {
            (env.sim.provider("push-source-provider")?["displayName"] == "Renamed provider")
                .then_some(())
        },
    );
    eventually(
        Duration::from_secs(10),
        "observedGeneration to follow",
        || {
            let obj = env.ns.get_json("securityprovider/push-source-provider")?;
            (obj["status"]["observedGeneration"] == obj["metadata"]["generation"]).then_some(())
        },
    );
    env.operator.wait_reconciles(2); // a couple of resyncs
    assert_eq!(
        env.sim.request_count("PUT") - puts_before,
        1,
        "exactly one PUT for one spec change"
    );
    let events = env.ns.events_for("push-source-provider");
    assert!(events.iter().any(|(r, _)| r == "Created"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Updated" && m.contains("displayName")),
        "{events:?}"
    );

    // Deletion goes through the finalizer and causes exactly one DELETE.
    env.ns.delete("securityprovider/push-source-provider");
    assert!(
        env.sim.provider("push-source-provider").is_none(),
        "deleted remotely"
    );
    assert_eq!(env.sim.request_count("DELETE"), 1, "exactly one DELETE");
    assert!(
        env.ns
            .get_json("securityprovider/push-source-provider")
            .is_none()
    );
    assert_eq!(env.sim.operation_count("create"), 1, "never created twice");
}

#[test]
fn orphan_policy_keeps_the_remote_provider() {
    let env =
        support::Env::coveo("coveo-orphan", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    env.ns
        .apply(&provider_manifest(
            "kept",
            "Kept",
            "  deletionPolicy: Orphan\n",
        ))
        .unwrap();
    env.wait_ready("kept");
    env.ns.delete("securityprovider/kept");
    assert_eq!(env.sim.request_count("DELETE"), 0);
    assert!(
        env.sim.provider("kept").is_some(),
        "remote provider left in place"
    );
}

#[test]
fn ten_quiet_resyncs_cause_no_writes_anywhere() {
    let env = support::Env::coveo("coveo-quiet", coveo_config(API_KEY, REFRESH))
        .with_operator(&["--resync-interval", "1s"]);
    env.ns
        .apply(&provider_manifest("quiet", "Quiet", ""))
        .unwrap();
    env.wait_ready("quiet");
    // Wait until the creation lifecycle has settled and status caught up with it.
    eventually(Duration::from_secs(20), "status settled", || {
        let obj = env.ns.get_json("securityprovider/quiet")?;
        (obj["status"]["currentStatus"]["type"] == "IDLE").then_some(())
    });
    env.operator.wait_reconciles(2);
    let rv = resource_version(&env, "quiet");
    let patches = env.operator.metric_sum("secprov_status_patches_total", &[]);
    env.sim.reset_counters();

    let window = env.operator.wait_reconciles(10); // ten resyncs (1 s, ±10 % jitter)
    println!("ten resyncs in {window:?}");

    let gets = env.sim.request_count("GET");
    assert!(gets >= 8, "the operator kept observing (saw {gets} GETs)");
    assert_eq!(env.sim.request_count("PUT"), 0, "no remote update at rest");
    assert_eq!(env.sim.request_count("POST"), 0, "no remote create at rest");
    assert_eq!(env.sim.request_count("DELETE"), 0);
    assert_eq!(
        resource_version(&env, "quiet"),
        rv,
        "no write of any kind to the object at rest"
    );
    assert_eq!(
        env.operator.metric_sum("secprov_status_patches_total", &[]),
        patches,
        "no status patches at rest"
    );
}

#[test]
fn invalid_manifests_are_rejected_by_the_api_server_with_clear_messages() {
    let env =
        support::Env::coveo("coveo-invalid", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    let long_id = "x".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        (
            provider_manifest("dup-ref", "D", "").replace(
                "      - type: SOURCE\n        id: source-dup-ref\n",
                "      - type: SOURCE\n        id: s1\n      - type: SOURCE\n        id: s1\n",
            ),
            "must not reference the same resource twice",
        ),
        (provider_manifest("too-long", "T", &format!("  providerId: {long_id}\n")), "spec.providerId"),
        (provider_manifest("bad-enum", "B", "").replace("type: EXPANDED", "type: NOT_A_TYPE"), "Unsupported value: \"NOT_A_TYPE\""),
        (provider_manifest("bad-policy", "B", "  deletionPolicy: Keep\n"), "Unsupported value: \"Keep\""),
        (
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: no-block\nspec:\n  connectionRef: coveo\n".into(),
            "exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set",
        ),
        (provider_manifest("reserved", "R", "  providerId: Email Security Provider\n"), "reserved"),
        (
            "apiVersion: secprov.dev/v1alpha1\nkind: ProviderConnection\nmetadata:\n  name: plain-http\nspec:\n  coveo:\n    organizationId: o\n    endpoint: http://platform.cloud.coveo.com\n    apiKeySecretRef: {name: s, key: k}\n".into(),
            "http:// is accepted only for loopback hosts",
        ),
        (
            "apiVersion: secprov.dev/v1alpha1\nkind: ProviderConnection\nmetadata:\n  name: no-key\nspec:\n  coveo:\n    organizationId: o\n".into(),
            "apiKeySecretRef",
        ),
    ];
    for (manifest, expected) in cases {
        let err = env
            .ns
            .apply(&manifest)
            .expect_err(&format!("manifest should be rejected:\n{manifest}"));
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    // providerId is immutable once set.
    env.ns
        .apply(&provider_manifest(
            "immutable",
            "I",
            "  providerId: first-id\n",
        ))
        .unwrap();
    let err = env
        .ns
        .apply(&provider_manifest(
            "immutable",
            "I",
            "  providerId: second-id\n",
        ))
        .unwrap_err();
    assert!(err.contains("spec.providerId is immutable"), "{err}");
    assert_eq!(
        env.sim.operation_count("create"),
        1,
        "only the valid manifest reached the remote system"
    );
}

#[test]
fn remote_configuration_error_is_terminal_until_the_spec_changes() {
    let env =
        support::Env::coveo("coveo-terminal", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    env.ns.apply_witness();
    let manifest = provider_manifest("bad-cascade", "Bad", "")
        .replace("id: Email Security Provider", "id: Missing Provider");
    env.ns.apply(&manifest).unwrap();
    let obj = env.wait_reason("bad-cascade", "Ready", "RemoteInvalidConfiguration");
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("SECURITY_PROVIDER_INVALID_CONFIGURATION"),
        "{message}"
    );
    assert!(
        message.contains("Missing Provider"),
        "the remote message is shown: {message}"
    );
    assert_eq!(condition(&obj, "Stalled").unwrap()["status"], "True");
    let posts = env.sim.request_count("POST");
    assert_eq!(posts, 1, "one create attempt");
    // Longer than the first retries of a transient failure (about 1 and 2 s).
    env.operator.wait_reconciles(3);
    assert_eq!(
        env.sim.request_count("POST"),
        posts,
        "terminal errors are not retried"
    );
    let events = env.ns.events_for("bad-cascade");
    assert_eq!(
        events
            .iter()
            .filter(|(r, _)| r == "RemoteInvalidConfiguration")
            .count(),
        1,
        "one Warning, not one per retry: {events:?}"
    );

    // Fixing the spec retries at once.
    env.ns
        .apply(&provider_manifest("bad-cascade", "Bad", ""))
        .unwrap();
    env.wait_ready("bad-cascade");
}

#[test]
fn missing_secret_is_reported_and_a_late_secret_triggers_reconcile() {
    // Secrets are read by name at each connection check (the operator may not watch them):
    // a created or rotated Secret is picked up within the check interval.
    let env = support::Env::coveo("coveo-late-secret", coveo_config(API_KEY, REFRESH))
        .with_operator(&["--connection-check-interval", "2s"]);
    env.ns
        .kubectl(&["delete", "secret", "coveo-api-key"])
        .unwrap();
    env.ns
        .apply(&provider_manifest("late", "Late", ""))
        .unwrap();
    env.wait_reason("late", "Ready", "SecretNotFound");
    // A wrong key first: the remote refuses it, terminal until the Secret changes.
    env.ns
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "coveo-api-key",
            "--from-literal=apiKey=wrong-key",
        ])
        .unwrap();
    // Credentials opt in by label (a created Secret carries none).
    env.ns
        .kubectl(&[
            "label",
            "secret",
            "coveo-api-key",
            "secprov.dev/credential=true",
        ])
        .unwrap();
    env.wait_reason("late", "Ready", "RemoteUnauthorized");
    // Rotating the Secret to the right key triggers a reconcile without any spec change.
    let fixed = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: coveo-api-key\n  labels: {{secprov.dev/credential: \"true\"}}\nstringData:\n  apiKey: {API_KEY}\n"
    );
    env.ns.apply(&fixed).unwrap();
    env.wait_ready("late");
    assert!(
        !env.operator.log_text().contains(API_KEY),
        "the API key never appears in logs"
    );
    assert!(
        !env.operator.log_text().contains("wrong-key"),
        "nor a wrong one"
    );
}

#[test]
fn operator_restart_converges_without_duplicates() {
    let mut env = support::Env::coveo("coveo-restart", coveo_config(API_KEY, REFRESH))
        .with_operator(&["--concurrency", "2"]);
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let manifests = provider_manifests(&names);
    env.ns.apply(&manifests).unwrap();
    // Crash it mid-rollout, twice.
    eventually(Duration::from_secs(30), "first creates", || {
        (env.sim.provider_ids().len() >= 2).then_some(())
    });
    env.operator.kill();
    env.operator.restart();
    std::thread::sleep(Duration::from_millis(700));
    env.operator.restart();
    for n in &names {
        env.wait_ready(n);
    }
    assert_eq!(
        env.sim.provider_ids().len(),
        names.len(),
        "exactly one remote provider per CR"
    );
    assert_eq!(
        env.sim.operation_count("create") as usize,
        names.len(),
        "no duplicate create"
    );

    // A clean restart with everything converged writes nothing.
    eventually(Duration::from_secs(20), "every status settled", || {
        names
            .iter()
            .all(|n| {
                env.ns
                    .get_json(&format!("securityprovider/{n}"))
                    .is_some_and(|o| {
                        o["status"]["currentStatus"]["type"] == "IDLE"
                            && o["status"]["statistics"]
                                == env.sim.provider(n).unwrap()["statistics"]
                    })
            })
            .then_some(())
    });
    let rvs: Vec<String> = names.iter().map(|n| resource_version(&env, n)).collect();
    env.sim.reset_counters();
    env.operator.restart();
    env.operator.wait_reconciles(2 * names.len() as u32);
    // Converged providers are read through their connection's paged snapshot (batch
    // observation): one list may serve them all.
    let (pages, gets) = (
        env.sim.request_count_for("GET", "page"),
        env.sim.request_count_for("GET", "get"),
    );
    assert!(
        pages >= 1 || gets >= names.len() as u64,
        "the new operator observed everything (pages {pages}, gets {gets})"
    );
    assert!(
        env.operator
            .metric_sum("secprov_reconciles_total", &["result=\"success\""])
            >= names.len() as f64,
        "the new operator reconciled everything"
    );
    assert_eq!(
        env.sim.request_count("PUT")
            + env.sim.request_count("POST")
            + env.sim.request_count("DELETE"),
        0
    );
    let after: Vec<String> = names.iter().map(|n| resource_version(&env, n)).collect();
    assert_eq!(rvs, after, "no Kubernetes writes after a restart");
}

#[test]
fn refresh_annotation_triggers_one_refresh_and_is_echoed() {
    let env =
        support::Env::coveo("coveo-refresh", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    env.ns
        .apply(&provider_manifest("fresh", "Fresh", ""))
        .unwrap();
    env.wait_ready("fresh");
    env.ns
        .kubectl(&[
            "annotate",
            "securityprovider/fresh",
            "secprov.dev/refresh-requested-at=2026-11-23T10:00:00Z",
        ])
        .unwrap();
    let obj = eventually(Duration::from_secs(20), "refresh handled", || {
        let obj = env.ns.get_json("securityprovider/fresh")?;
        (obj["status"]["lastHandledRefreshAt"] == "2026-11-23T10:00:00Z").then_some(obj)
    });
    assert_eq!(env.sim.operation_count("refresh"), 1);
    // The refresh lifecycle ends with a new lastRefreshOperation in status.
    eventually(Duration::from_secs(20), "refresh result in status", || {
        let obj = env.ns.get_json("securityprovider/fresh")?;
        let remote = env.sim.provider("fresh")?;
        (obj["status"]["currentStatus"]["type"] == "IDLE"
            && remote["lastRefreshOperation"]["operationType"] == "SECURITY_PROVIDER_REFRESH"
            && obj["status"]["lastRefreshOperation"]["operationType"]
                == "SECURITY_PROVIDER_REFRESH")
            .then_some(())
    });
    let _ = obj;
    env.operator.wait_reconciles(2);
    assert_eq!(
        env.sim.operation_count("refresh"),
        1,
        "a handled annotation is not refreshed again"
    );
}

#[test]
fn drift_is_restored_with_an_event_naming_the_fields() {
    let env = support::Env::coveo("coveo-drift", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    env.ns
        .apply(&provider_manifest("drifty", "Drifty", ""))
        .unwrap();
    env.wait_ready("drifty");
    env.sim.mutate_provider("drifty", |p| {
        p["displayName"] = "Edited in the console".into();
        p["caseSensitive"] = true.into();
    });
    eventually(Duration::from_secs(20), "drift restored", || {
        let remote = env.sim.provider("drifty")?;
        (remote["displayName"] == "Drifty" && remote["caseSensitive"] == false).then_some(())
    });
    let events = eventually(Duration::from_secs(10), "DriftCorrected event", || {
        let events = env.ns.events_for("drifty");
        events
            .iter()
            .any(|(r, _)| r == "DriftCorrected")
            .then_some(events)
    });
    let (_, message) = events.iter().find(|(r, _)| r == "DriftCorrected").unwrap();
    assert!(
        message.contains("displayName") && message.contains("caseSensitive"),
        "{message}"
    );
}

#[test]
fn existing_remote_provider_needs_explicit_adoption() {
    let env = support::Env::coveo("coveo-adopt", coveo_config(API_KEY, REFRESH)).with_operator(&[]);
    // Someone created "handmade" in the console.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        {
            secprov::backend::http::install_tls_provider();
            reqwest::Client::new()
        }
        .post(format!(
            "{}/rest/organizations/{ORG}/securityproviders",
            env.sim.base_url()
        ))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"id": "handmade", "type": "EXPANDED", "displayName": "By hand"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    });
    env.sim.reset_counters();
    env.ns
        .apply(&provider_manifest("handmade", "Managed", ""))
        .unwrap();
    let obj = env.wait_reason("handmade", "Ready", "AlreadyExists");
    assert!(
        condition(&obj, "Ready").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("spec.adopt")
    );
    assert_eq!(
        env.sim.request_count("PUT") + env.sim.request_count("POST"),
        0,
        "not touched"
    );
    // Deleting an object that never owned the provider must not delete it.
    env.ns
        .apply(&provider_manifest("handmade", "Managed", "  adopt: true\n"))
        .unwrap();
    env.wait_ready("handmade");
    assert_eq!(
        env.sim.provider("handmade").unwrap()["displayName"],
        "Managed"
    );
    assert_eq!(env.sim.request_count("PUT"), 1);
}

#[test]
fn a_mass_create_sums_up_its_created_events_on_the_connection() {
    let env = support::Env::coveo("coveo-events", coveo_config(API_KEY, REFRESH))
        .with_operator(&["--concurrency", "8"]);
    let names: Vec<String> = (0..14).map(|i| format!("bulk{i}")).collect();
    let manifests = provider_manifests(&names);
    env.ns.apply(&manifests).unwrap();
    for n in &names {
        env.wait_ready(n);
    }
    assert_eq!(env.sim.operation_count("create") as usize, names.len());
    // The first ten creates of the connection's window have an Event each; the rest are
    // summed up in one Event on the ProviderConnection when the window (10 s) ends.
    let (own, summarized) = eventually(
        Duration::from_secs(30),
        "every create reported in an Event",
        || {
            let own = names
                .iter()
                .filter(|n| env.ns.events_for(n).iter().any(|(r, _)| r == "Created"))
                .count();
            let summaries = env.ns.events_for("coveo");
            let summarized: usize = summaries
                .iter()
                .filter(|(r, _)| r == "Created")
                .filter_map(|(_, m)| {
                    m.strip_prefix("created ")?
                        .split(' ')
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .sum();
            (own + summarized == names.len()).then_some((own, summarized))
        },
    );
    assert!(
        own >= 10 && summarized >= 1,
        "own {own}, summarized {summarized}"
    );
    // `kubectl describe` of the connection shows the summary (the Event names its uid).
    let described = env
        .ns
        .kubectl(&["describe", "providerconnection", "coveo"])
        .unwrap();
    assert!(
        described.contains("more remote providers in 10 s"),
        "{described}"
    );
}
