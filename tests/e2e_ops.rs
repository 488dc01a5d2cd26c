//! Operability on the real API server: ProviderConnection status and the kubectl columns,
//! Events only on transitions, /metrics, /healthz, /readyz, JSON logs, SIGTERM, pause, and
//! leader election between two operator processes (takeover, and no write from a deposed
//! leader).
mod support;

use std::time::{Duration, Instant};

use secprov_sim::coveo::CoveoSimulator;
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-ops-key-51c0";
const ORG: &str = COVEO_ORG;

type Env = support::Env<CoveoSimulator>;
/// How long the simulator's CREATING and REFRESHING last.
const REFRESH: Duration = Duration::from_millis(300);

/// deploy/argocd/health.lua run on an object read from the API server, as Argo CD runs it.
fn argocd_health(object: &Value) -> String {
    use mlua::LuaSerdeExt;
    let script = std::fs::read_to_string(repo().join("deploy/argocd/health.lua")).unwrap();
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(object).unwrap())
        .unwrap();
    let result: mlua::Table = lua.load(script).eval().unwrap();
    result.get::<String>("status").unwrap()
}

fn start_operator(env: &Env, extra: &[&str]) -> Operator {
    let mut args = vec![
        "--progress-interval",
        "500ms",
        "--resync-interval",
        "2s",
        "--connection-check-interval",
        "2s",
    ];
    args.extend_from_slice(extra);
    Operator::start(&env.ns.name, &args)
}

fn provider(name: &str, display: &str) -> String {
    security_provider(name, "", &coveo_source_spec(name, display, ""))
}

/// Waits until the simulator reports the provider IDLE and status mirrors it, so that later
/// steps start from a settled state.
fn wait_settled(env: &Env, name: &str) {
    eventually(Duration::from_secs(20), "provider settled", || {
        let obj = env.ns.get_json(&format!("securityprovider/{name}"))?;
        let remote = env.sim.provider(name)?;
        (remote["currentStatus"]["type"] == "IDLE"
            && obj["status"]["currentStatus"]["type"] == "IDLE"
            && obj["status"]["statistics"] == remote["statistics"])
            .then_some(())
    });
}

#[test]
fn connection_status_and_kubectl_columns() {
    let env = Env::coveo("ops-columns", coveo_config(API_KEY, REFRESH));
    let operator = start_operator(&env, &[]);
    env.ns.apply(&provider("columns", "Columns")).unwrap();
    let connection = env
        .ns
        .wait_ready("providerconnection/coveo", "60s", &operator);
    let ready = condition(&connection, "Ready").unwrap();
    assert_eq!(ready["reason"], "Connected");
    assert_eq!(connection["status"]["backend"], "coveo");
    assert_eq!(
        connection["status"]["observedGeneration"],
        connection["metadata"]["generation"]
    );
    // The check is the one-item page read, not a full list.
    assert!(env.sim.request_count_for("GET", "page") >= 1);
    assert_eq!(env.sim.request_count_for("GET", "list"), 0);
    env.ns
        .wait_ready("securityprovider/columns", "60s", &operator);
    wait_settled(&env, "columns");

    let real = env.ns.get_json("securityprovider/columns").unwrap();
    assert_eq!(argocd_health(&real), "Healthy");
    assert_eq!(argocd_health(&connection), "Healthy");
    let providers = env.ns.kubectl(&["get", "securityproviders"]).unwrap();
    println!("$ kubectl get securityproviders\n{providers}");
    let mut lines = providers.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|s| !s.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "BACKEND",
            "READY",
            "REASON",
            "STATUS",
            "ENTITIES",
            "IN ERROR",
            "LAST REFRESH",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["columns", "coveo", "True", "Available", "IDLE", "0"]
    );

    let connections = env.ns.kubectl(&["get", "providerconnections"]).unwrap();
    println!("$ kubectl get providerconnections\n{connections}");
    let mut lines = connections.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "BACKEND", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["coveo", "coveo", "True"]);

    // The `secprov` category lists both kinds.
    let category = env.ns.kubectl(&["get", "secprov", "-o", "name"]).unwrap();
    assert!(
        category.contains("securityprovider.secprov.dev/columns"),
        "{category}"
    );
    assert!(
        category.contains("providerconnection.secprov.dev/coveo"),
        "{category}"
    );

    // A connection whose Secret is missing, and one whose key the remote refuses.
    env.ns
        .apply(&format!(
            r#"apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata:
  name: no-secret
spec:
  coveo:
    organizationId: {ORG}
    endpoint: {url}
    apiKeySecretRef: {{name: absent, key: apiKey}}
---
apiVersion: v1
kind: Secret
metadata:
  name: wrong-key
  labels: {{secprov.dev/credential: "true"}}
stringData:
  apiKey: not-the-key
---
apiVersion: secprov.dev/v1alpha1
kind: ProviderConnection
metadata:
  name: wrong-key
spec:
  coveo:
    organizationId: {ORG}
    endpoint: {url}
    apiKeySecretRef: {{name: wrong-key, key: apiKey}}
"#,
            url = env.sim.base_url()
        ))
        .unwrap();
    for (name, reason) in [
        ("no-secret", "SecretNotFound"),
        ("wrong-key", "RemoteUnauthorized"),
    ] {
        let obj = env.ns.wait_reason(
            &format!("providerconnection/{name}"),
            "Ready",
            reason,
            Duration::from_secs(20),
        );
        let ready = condition(&obj, "Ready").unwrap();
        assert_eq!(ready["status"], "False");
        assert!(
            !ready["message"].as_str().unwrap().contains("not-the-key"),
            "secret in status"
        );
    }
    let all = env.ns.kubectl(&["get", "providerconnections"]).unwrap();
    println!("$ kubectl get providerconnections\n{all}");
    assert!(
        !operator.log_text().contains("not-the-key"),
        "secret value in the log"
    );
    assert!(
        !operator.log_text().contains(API_KEY),
        "secret value in the log"
    );

    // Creating the missing Secret makes the connection Ready at once (Secret watch).
    env.ns
        .apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: absent\n  labels: {{secprov.dev/credential: \"true\"}}\nstringData:\n  apiKey: {API_KEY}\n"
        ))
        .unwrap();
    env.ns
        .wait_condition("providerconnection/no-secret", "Ready", "20s")
        .unwrap();

    // Events on the transitions only: one Warning per failure reason, one Connected on recovery,
    // none for the connection that was fine from the start, none per periodic check (2 s).
    // Three checks of each of the three connections.
    operator.wait_metric_advance(
        "secprov_remote_requests_total",
        &["operation=\"verify\""],
        9,
    );
    let reasons = |name: &str| -> Vec<String> {
        env.ns
            .events_for(name)
            .into_iter()
            .map(|(reason, _)| reason)
            .collect()
    };
    assert_eq!(reasons("wrong-key"), ["RemoteUnauthorized"]);
    let mut no_secret = reasons("no-secret");
    no_secret.sort();
    assert_eq!(no_secret, ["Connected", "SecretNotFound"]);
    assert!(
        env.ns
            .events_for("coveo")
            .iter()
            .all(|(_, m)| !m.contains("credentials")),
        "no Event for a connection that was always fine"
    );
}

#[test]
fn steady_provider_gets_no_new_events_across_resyncs() {
    let env = Env::coveo("ops-events", coveo_config(API_KEY, REFRESH));
    let operator = start_operator(&env, &[]);
    env.ns.apply(&provider("steady", "Steady")).unwrap();
    env.ns
        .wait_ready("securityprovider/steady", "60s", &operator);
    wait_settled(&env, "steady");
    let events = |env: &Env| -> Vec<(String, String, String)> {
        let list: Value = serde_json::from_str(
            &env.ns
                .kubectl(&[
                    "get",
                    "events",
                    "-o",
                    "json",
                    "--field-selector",
                    "involvedObject.name=steady",
                ])
                .unwrap(),
        )
        .unwrap();
        let mut out: Vec<(String, String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["metadata"]["name"].as_str().unwrap().to_owned(),
                    e["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let before = events(&env);
    assert!(before.iter().any(|e| e.2 == "Created"), "{before:?}");
    // Four resyncs.
    operator.wait_reconciles(4);
    let after = events(&env);
    assert_eq!(before, after, "a steady object got new or updated Events");
}

#[test]
fn metrics_health_json_logs_and_graceful_sigterm() {
    let env = Env::coveo("ops-metrics", coveo_config(API_KEY, REFRESH));
    let mut operator = start_operator(&env, &["--log-json"]);
    env.ns.apply(&provider("measured", "Measured")).unwrap();
    env.ns
        .wait_ready("securityprovider/measured", "60s", &operator);
    let text = eventually(Duration::from_secs(10), "metrics after a reconcile", || {
        let text = operator.metrics();
        // The connection check runs concurrently with the provider's reconcile.
        (text.contains("secprov_security_providers{backend=\"coveo\",ready=\"True\"} 1")
            && text.contains("operation=\"verify\""))
        .then_some(text)
    });
    for family in [
        "# TYPE secprov_reconciles counter",
        "secprov_reconciles_total{result=\"success\",reason=\"Reconciled\"}",
        "# TYPE secprov_reconcile_duration_seconds histogram",
        "secprov_reconcile_duration_seconds_bucket{le=",
        "# TYPE secprov_remote_requests counter",
        "secprov_remote_requests_total{backend=\"coveo\",operation=\"create\",status=\"20",
        // The create's first read finds nothing (404); then the POST, and the read back (k = 3).
        "secprov_remote_requests_total{backend=\"coveo\",operation=\"get\",status=\"404\"}",
        "secprov_remote_requests_total{backend=\"coveo\",operation=\"verify\",status=\"200\"}",
        "secprov_remote_request_duration_seconds_count",
        "secprov_status_patches_total",
        "secprov_security_providers{backend=\"coveo\",ready=\"True\"} 1",
        "secprov_leader 1",
    ] {
        assert!(text.contains(family), "missing {family} in\n{text}");
    }
    assert_eq!(
        http_get(operator.metrics_port, "/healthz").as_deref(),
        Some("ok")
    );
    assert_eq!(
        http_get(operator.metrics_port, "/readyz").as_deref(),
        Some("ok")
    );

    let log = operator.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            parsed["timestamp"].is_string() && parsed["level"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("\"created remote provider\""), "{log}");

    let started = Instant::now();
    let status = operator.terminate_status(Duration::from_secs(10));
    let status = status
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", operator.log_text()));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(operator.log_text().contains("shutdown requested"));
}

#[test]
fn paused_provider_gets_no_remote_writes_until_resumed() {
    let env = Env::coveo("ops-pause", coveo_config(API_KEY, REFRESH));
    env.ns.apply_witness();
    let operator = start_operator(&env, &[]);
    env.ns.apply(&provider("pausable", "Before")).unwrap();
    env.ns
        .wait_ready("securityprovider/pausable", "60s", &operator);
    wait_settled(&env, "pausable");
    env.ns
        .kubectl(&[
            "annotate",
            "securityprovider/pausable",
            "secprov.dev/paused=true",
        ])
        .unwrap();
    let puts = env.sim.request_count("PUT");
    let posts = env.sim.request_count("POST");
    env.ns
        .kubectl(&[
            "patch",
            "securityprovider/pausable",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"After"}}"#,
        ])
        .unwrap();
    let obj = eventually(
        Duration::from_secs(20),
        "Synced=False ReconcilePaused",
        || {
            let obj = env.ns.get_json("securityprovider/pausable")?;
            let synced = condition(&obj, "Synced")?;
            (synced["status"] == "False"
                && synced["reason"] == "ReconcilePaused"
                && obj["status"]["observedGeneration"] == obj["metadata"]["generation"])
                .then_some(obj)
        },
    );
    // While the operator keeps working (the witness's retries), nothing is written remotely.
    operator.wait_reconciles(3);
    assert_eq!(env.sim.request_count("PUT"), puts, "a PUT while paused");
    assert_eq!(env.sim.request_count("POST"), posts, "a POST while paused");
    assert_eq!(
        env.sim.provider("pausable").unwrap()["displayName"],
        "Before"
    );
    assert!(obj["status"]["remoteId"] == "pausable");
    assert_eq!(argocd_health(&obj), "Suspended");
    // The new generation is not applied: Ready does not claim it, so kubectl wait waits.
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ReconcilePaused")),
        "{obj:#}"
    );
    assert!(
        env.ns
            .kubectl(&[
                "wait",
                "--for=condition=Ready",
                "securityprovider/pausable",
                "--timeout=2s"
            ])
            .is_err(),
        "kubectl wait returned before the change was applied"
    );

    env.ns
        .kubectl(&[
            "annotate",
            "securityprovider/pausable",
            "secprov.dev/paused-",
        ])
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the change applied after resuming",
        || (env.sim.provider("pausable")?["displayName"] == "After").then_some(()),
    );
    assert_eq!(env.sim.request_count("PUT"), puts + 1, "exactly one PUT");
    eventually(Duration::from_secs(10), "Synced=True again", || {
        let obj = env.ns.get_json("securityprovider/pausable")?;
        (condition(&obj, "Synced")?["status"] == "True").then_some(())
    });
    env.ns
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "securityprovider/pausable",
            "--timeout=20s",
        ])
        .unwrap();
}

/// The replica's `secprov_leader` gauge; None while /metrics does not answer.
fn is_leader(op: &Operator) -> Option<bool> {
    op.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("secprov_leader "))
        .map(|v| v.trim() == "1")
}

#[test]
fn leader_election_one_replica_writes_and_the_standby_takes_over() {
    let env = Env::coveo("ops-leader", coveo_config(API_KEY, REFRESH));
    let args = fast_leader_election(&env.ns.name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = start_operator(&env, &args);
    // Let the first one win, so which one leads is known.
    eventually(Duration::from_secs(20), "first replica leads", || {
        is_leader(&first).filter(|l| *l)
    });
    let mut replicas = [first, start_operator(&env, &args)];
    eventually(
        Duration::from_secs(10),
        "second replica standing by",
        || is_leader(&replicas[1]).filter(|l| !*l),
    );
    assert_eq!(
        http_get(replicas[1].metrics_port, "/healthz").as_deref(),
        Some("ok")
    );

    env.ns.apply(&provider("elected", "One writer")).unwrap();
    env.ns
        .wait_ready("securityprovider/elected", "60s", &replicas[0]);
    wait_settled(&env, "elected");
    let lease: Value = serde_json::from_str(
        &env.ns
            .kubectl(&["get", "lease", "secprov-operator", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    assert!(
        holder.ends_with(&format!("-{}", replicas[0].pid())),
        "holder {holder}"
    );

    // Only the leader talks to the remote system and writes status.
    assert!(replicas[0].metric_sum("secprov_status_patches_total", &[]) > 0.0);
    assert!(replicas[0].metric_sum("secprov_remote_requests_total", &[]) > 0.0);
    replicas[0].wait_reconciles(2);
    assert_eq!(
        replicas[1].metric_sum("secprov_status_patches_total", &[]),
        0.0
    );
    assert_eq!(
        replicas[1].metric_sum("secprov_remote_requests_total", &[]),
        0.0
    );
    assert_eq!(replicas[1].metric_sum("secprov_reconciles_total", &[]), 0.0);
    assert_eq!(is_leader(&replicas[1]), Some(false));

    // The leader crashes (no chance to release the Lease): the standby takes over once the
    // Lease expires (3 s) and applies a change made meanwhile.
    replicas[0].kill();
    let killed = Instant::now();
    env.ns
        .kubectl(&[
            "patch",
            "securityprovider/elected",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"Taken over"}}"#,
        ])
        .unwrap();
    eventually(Duration::from_secs(15), "standby took over", || {
        is_leader(&replicas[1]).filter(|l| *l)
    });
    let takeover = killed.elapsed();
    eventually(
        Duration::from_secs(20),
        "change applied by the new leader",
        || (env.sim.provider("elected")?["displayName"] == "Taken over").then_some(()),
    );
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    // The status write follows the remote write.
    eventually(
        Duration::from_secs(10),
        "the new leader writes status",
        || (replicas[1].metric_sum("secprov_status_patches_total", &[]) > 0.0).then_some(()),
    );
    println!("standby took over {takeover:?} after the leader was killed");

    // A graceful stop releases the Lease: a new replica leads at once, without waiting 3 s.
    let status = replicas[1].terminate_status(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let lease: Value = serde_json::from_str(
        &env.ns
            .kubectl(&["get", "lease", "secprov-operator", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "Lease not released: {lease}"
    );
}

/// The leader Lease as JSON.
fn lease(env: &Env) -> Option<Value> {
    env.ns
        .kubectl(&["get", "lease", "secprov-operator", "-o", "json"])
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

/// Unix milliseconds of a Lease MicroTime.
fn unix_ms(time: &Value) -> i64 {
    time.as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .unwrap_or_else(|| panic!("not a timestamp: {time}"))
}

/// A leader frozen (SIGSTOP) while creates are in flight: the standby takes over, and the
/// frozen leader, once resumed, makes no remote write after its Lease expired and exits.
/// Writes are told apart by the `User-Agent` (which carries each replica's identity) the
/// simulator records with each write's arrival time.
#[test]
fn a_frozen_leader_writes_nothing_after_its_lease_expired() {
    const LEASE_SECONDS: i64 = 4;
    const PROVIDERS: usize = 30;
    let env = Env::coveo("ops-freeze", coveo_config(API_KEY, REFRESH));
    env.sim
        .faults()
        .update(|f| f.latency = Duration::from_millis(300))
        .unwrap();
    let args = [
        "--leader-election",
        "--leader-election-namespace",
        &env.ns.name,
        "--leader-election-lease-duration",
        "4s",
        "--leader-election-renew-deadline",
        "3s",
        "--leader-election-retry-period",
        "500ms",
    ];
    let mut frozen = start_operator(&env, &args);
    eventually(Duration::from_secs(30), "first replica leads", || {
        is_leader(&frozen).filter(|l| *l)
    });
    let old_id = lease(&env).unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    let standby = start_operator(&env, &args);
    eventually(
        Duration::from_secs(20),
        "second replica standing by",
        || is_leader(&standby).filter(|l| !*l),
    );

    let manifests: Vec<String> = (0..PROVIDERS)
        .map(|i| provider(&format!("freeze-{i}"), "Frozen"))
        .collect();
    env.ns.apply(&manifests.join("---\n")).unwrap();
    let by = |id: &str| {
        let id = format!("({id})");
        env.sim
            .faults()
            .writes()
            .into_iter()
            .filter(move |w| w.user_agent.contains(&id))
    };
    eventually(Duration::from_secs(30), "the leader creating", || {
        (by(&old_id).count() >= 2).then_some(())
    });
    frozen.signal("STOP");
    let stopped = Instant::now();

    // Its last renewal as the standby saw it; the takeover comes a Lease duration later.
    let mut last_renew = 0;
    let new_id = eventually(Duration::from_secs(60), "the standby took over", || {
        let spec = lease(&env)?["spec"].clone();
        let holder = spec["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if holder == old_id {
            last_renew = unix_ms(&spec["renewTime"]);
            return None;
        }
        (!holder.is_empty()).then_some(holder)
    });
    let takeover = stopped.elapsed();
    let expired_at = last_renew + LEASE_SECONDS * 1000;
    assert!(last_renew > 0, "the frozen leader's Lease was never seen");

    frozen.signal("CONT");
    let resumed = Instant::now();
    let status = eventually(Duration::from_secs(20), "the deposed leader exits", || {
        frozen.exit_status()
    });
    let exited_after = resumed.elapsed();
    assert!(
        !status.success(),
        "a lost Lease is an error exit: {status:?}"
    );
    eventually(
        Duration::from_secs(120),
        "the new leader created all",
        || {
            (0..PROVIDERS)
                .all(|i| env.sim.provider(&format!("freeze-{i}")).is_some())
                .then_some(())
        },
    );

    let late: Vec<_> = by(&old_id)
        .filter(|w| w.received_at_ms >= expired_at)
        .collect();
    assert!(
        late.is_empty(),
        "writes by the deposed leader after its Lease expired at {expired_at}: {late:#?}"
    );
    assert!(by(&new_id).count() > 0, "the new leader wrote");
    println!(
        "frozen leader: {} writes, none after expiry; standby took over {takeover:?} after SIGSTOP; \
         the resumed leader exited {exited_after:?} after SIGCONT; new leader: {} writes",
        by(&old_id).count(),
        by(&new_id).count()
    );
}
