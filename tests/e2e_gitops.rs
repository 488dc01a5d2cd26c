//! What GitOps clients read from the status, on the real API server with the Coveo simulator:
//! a just-applied object is in progress before the operator answers (CRD status default and a
//! first status written before any remote call), a new provider's remote state within seconds
//! of its create, a remote outage under a Ready provider, a failing remote delete, an
//! unreachable remote, a missing Secret, pauses and observe-only objects.
//!
//! Each state is judged by the real clients: Flux's kstatus (`sigs.k8s.io/cli-utils`
//! `status.Compute`) and deploy/argocd/health.lua under gopher-lua as Argo CD runs it, both in
//! scripts/tools/gitops-verdict (built from the Go module proxy, cached), and
//! `kubectl wait --for=condition=Ready`.
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secprov_sim::coveo::CoveoSimulator;
use serde_json::Value;
use support::*;

const API_KEY: &str = "e2e-gitops-key-7a31";

type Env = support::Env<CoveoSimulator>;
/// How long the simulator's CREATING and REFRESHING last.
const REFRESH: Duration = Duration::from_millis(500);

fn provider(name: &str) -> String {
    let spec = format!(
        "  connectionRef: coveo\n  coveo:\n    referencedBy:\n      - type: SOURCE\n        id: source-{name}\n"
    );
    security_provider(name, "", &spec)
}

fn get(env: &Env, name: &str) -> Option<Value> {
    env.ns.get_json(&format!("securityprovider/{name}"))
}

/// What the clients say about an object: (kstatus, Argo CD health, `kubectl wait` passes).
#[derive(Debug, PartialEq)]
struct Verdict(String, String, bool);

fn verdict(env: &Env, obj: &Value) -> Verdict {
    static TOOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let tool = TOOL.get_or_init(|| go_tool("gitops-verdict", "SECPROV_GITOPS_VERDICT"));
    let mut child = Command::new(tool)
        .arg(repo().join("deploy/argocd/health.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gitops-verdict");
    let input = serde_json::to_vec(obj).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    let resource = format!(
        "securityprovider/{}",
        obj["metadata"]["name"].as_str().unwrap()
    );
    let waited = env.ns.wait_condition(&resource, "Ready", "1s").is_ok();
    let text = |k: &str| said[k].as_str().unwrap_or_default().to_owned();
    Verdict(text("kstatus"), text("argocd"), waited)
}

fn expect(kstatus: &str, argocd: &str, kubectl_wait_passes: bool) -> Verdict {
    Verdict(kstatus.into(), argocd.into(), kubectl_wait_passes)
}

/// (status, reason) of a condition, None when absent.
fn cond(obj: &Value, type_: &str) -> Option<(String, String)> {
    let c = condition(obj, type_)?;
    let field = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((field("status"), field("reason")))
}

#[test]
fn a_just_applied_provider_reads_as_in_progress_before_the_operator_answers() {
    let env = Env::coveo("gitops-new", coveo_config(API_KEY, REFRESH));
    // No operator yet: the API server alone serves the CRD's status default.
    env.ns.apply(&provider("early")).unwrap();
    let obj = get(&env, "early").unwrap();
    assert_eq!(obj["metadata"]["generation"], 1, "{obj:#}");
    assert_eq!(
        obj["status"]["observedGeneration"], 0,
        "kube-apiserver applies the status default on read: {obj:#}"
    );
    assert_eq!(
        verdict(&env, &obj),
        expect("InProgress", "Progressing", false)
    );

    // A slow remote (every call takes 3 s): the first status says work is in progress
    // before the first remote call has answered.
    env.sim
        .faults()
        .update(|f| f.latency = Duration::from_secs(3))
        .unwrap();
    let operator = env.start_operator(&[]);
    let first = eventually(Duration::from_secs(30), "a first status", || {
        get(&env, "early").filter(|o| condition(o, "Ready").is_some())
    });
    assert_eq!(
        env.sim.operation_count("create"),
        0,
        "{}",
        operator.log_text()
    );
    assert_eq!(first["status"]["observedGeneration"], 1, "{first:#}");
    assert_eq!(
        cond(&first, "Ready"),
        Some(("Unknown".into(), "Progressing".into()))
    );
    assert_eq!(
        cond(&first, "Reconciling"),
        Some(("True".into(), "Progressing".into()))
    );
    assert_eq!(
        verdict(&env, &first),
        expect("InProgress", "Progressing", false)
    );
    env.sim.faults().clear();
    env.ns
        .wait_condition("securityprovider/early", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let ready = get(&env, "early").unwrap();
    assert_eq!(verdict(&env, &ready), expect("Current", "Healthy", true));

    // Terminal: someone else's provider has the id (no adopt). Only a change can help.
    env.create_remotely(serde_json::json!({"id": "taken", "type": "EXPANDED"}));
    env.ns.apply(&provider("taken")).unwrap();
    let blocked = eventually(Duration::from_secs(30), "AlreadyExists", || {
        get(&env, "taken").filter(|o| cond(o, "Ready").is_some_and(|c| c.1 == "AlreadyExists"))
    });
    assert_eq!(verdict(&env, &blocked), expect("Failed", "Degraded", false));
}

#[test]
fn a_new_provider_shows_its_remote_state_within_seconds_of_its_create() {
    let env = Env::coveo("gitops-created", coveo_config(API_KEY, REFRESH));
    // The create answer carries no currentStatus/statistics; a resync would come only after
    // five minutes: the state must come from the read one progress interval later.
    let operator = env.start_operator(&["--resync-interval", "5m", "--progress-interval", "2s"]);
    env.ns.apply(&provider("fresh")).unwrap();
    let applied = Instant::now();
    let ready = eventually(Duration::from_secs(30), "Ready=True", || {
        get(&env, "fresh").filter(|o| cond(o, "Ready").is_some_and(|c| c.0 == "True"))
    });
    let filled = eventually(Duration::from_secs(15), "remote state in status", || {
        get(&env, "fresh").filter(|o| {
            o["status"]["currentStatus"]["type"] == "IDLE"
                && o["status"]["statistics"]["totalNumberOfEntities"].is_i64()
        })
    });
    assert_eq!(
        ready["status"]["currentStatus"]["type"],
        "IDLE",
        "Ready=True comes with the remote state, not before it: {ready:#}\n{filled:#}\n{}",
        operator.log_text()
    );
    assert!(applied.elapsed() < Duration::from_secs(30));
    assert_eq!(env.sim.operation_count("create"), 1);
}

/// Waits (up to 60 s) until the provider `name` satisfies `ready`, and returns it.
fn wait_for(env: &Env, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(60), what, || {
        get(env, name).filter(|o| ready(o))
    })
}

/// A provider `name` that is Ready with its remote state read, and its operator.
fn ready_provider(env: &Env, name: &str) -> Operator {
    let operator = env.start_operator(&[]);
    env.ns.apply(&provider(name)).unwrap();
    wait_for(env, name, "Ready and settled", |o| {
        cond(o, "Ready").is_some_and(|c| c.0 == "True")
            && o["status"]["currentStatus"]["type"] == "IDLE"
    });
    operator
}

#[test]
fn a_remote_outage_under_a_ready_provider_is_not_a_rollout_but_an_edit_it_holds_back_is() {
    let env = Env::coveo("gitops-outage", coveo_config(API_KEY, REFRESH));
    let _operator = ready_provider(&env, "steady");
    // The remote goes down: the applied generation stays Ready (nothing says the provider
    // changed), Synced says the remote cannot be reached, and no rollout is in progress.
    env.sim.faults().update(|f| f.error_rate = 1.0).unwrap();
    let down = wait_for(&env, "steady", "Synced=False", |o| {
        cond(o, "Synced").is_some_and(|c| c.0 == "False")
    });
    assert_eq!(cond(&down, "Ready").unwrap().0, "True", "{down:#}");
    assert_eq!(cond(&down, "Reconciling"), None, "{down:#}");
    assert_eq!(cond(&down, "Stalled"), None, "{down:#}");
    assert_eq!(verdict(&env, &down), expect("Current", "Healthy", true));

    // A spec edit that cannot be applied while the remote is down: that rollout is in progress.
    let edit = r#"{"spec":{"displayName":"Edited"}}"#;
    let patch = [
        "patch",
        "securityprovider/steady",
        "--type=merge",
        "-p",
        edit,
    ];
    env.ns.kubectl(&patch).unwrap();
    let edited = wait_for(&env, "steady", "generation 2 reported", |o| {
        o["status"]["observedGeneration"] == 2 && cond(o, "Ready").is_some_and(|c| c.0 == "False")
    });
    assert_eq!(
        cond(&edited, "Reconciling").unwrap().0,
        "True",
        "{edited:#}"
    );
    let progressing = expect("InProgress", "Progressing", false);
    assert_eq!(verdict(&env, &edited), progressing);

    // The remote is back: the held-back edit is applied, and Ready is true for generation 2.
    env.sim.faults().clear();
    let applied = wait_for(&env, "steady", "generation 2 applied", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 2)
    });
    assert_eq!(env.sim.provider("steady").unwrap()["displayName"], "Edited");
    assert_eq!(verdict(&env, &applied), expect("Current", "Healthy", true));
}

#[test]
fn a_failing_remote_delete_says_so_until_it_succeeds() {
    let env = Env::coveo("gitops-delete", coveo_config(API_KEY, REFRESH));
    let operator = ready_provider(&env, "leaving");
    // Deleted while the remote is down: Ready says the deletion waits for the remote delete,
    // not that a generation (bumped by the deletion) is not applied.
    env.sim.faults().update(|f| f.error_rate = 1.0).unwrap();
    let delete = ["delete", "securityprovider/leaving", "--wait=false"];
    env.ns.kubectl(&delete).unwrap();
    let deleting = wait_for(&env, "leaving", "Ready about the delete", |o| {
        condition(o, "Ready").is_some_and(|c| {
            c["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("being deleted"))
        })
    });
    let terminating = expect("Terminating", "Progressing", false);
    assert_eq!(verdict(&env, &deleting), terminating);
    let message = condition(&deleting, "Ready").unwrap()["message"].to_string();
    assert!(!message.contains("is not applied"), "{message}");
    assert!(
        message.contains("cannot delete the remote provider"),
        "{message}"
    );

    env.sim.faults().clear();
    eventually(Duration::from_secs(60), "object gone", || {
        get(&env, "leaving").is_none().then_some(())
    });
    assert!(
        env.sim.provider("leaving").is_none(),
        "{}",
        operator.log_text()
    );
}

#[test]
fn unreachable_paused_and_observe_only_providers_read_as_documented() {
    let env = Env::coveo("gitops-held", coveo_config(API_KEY, REFRESH));
    let operator = env.start_operator(&[]);
    // Its connection points at a closed port: retried with backoff, never Ready yet.
    env.ns.apply_witness();
    let unreachable = eventually(Duration::from_secs(60), "witness failing", || {
        get(&env, "witness").filter(|o| cond(o, "Ready").is_some_and(|c| c.0 == "False"))
    });
    assert_eq!(cond(&unreachable, "Reconciling").unwrap().0, "True");
    let progressing = expect("InProgress", "Progressing", false);
    assert_eq!(verdict(&env, &unreachable), progressing);

    // Paused in sync: the declared state is in place; Argo CD shows the pause.
    env.ns.apply(&provider("calm")).unwrap();
    env.ns
        .wait_condition("securityprovider/calm", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let annotate = [
        "annotate",
        "securityprovider/calm",
        "secprov.dev/paused=true",
    ];
    env.ns.kubectl(&annotate).unwrap();
    let paused = eventually(Duration::from_secs(30), "Synced ReconcilePaused", || {
        get(&env, "calm").filter(|o| cond(o, "Synced").is_some_and(|c| c.1 == "ReconcilePaused"))
    });
    assert_eq!(verdict(&env, &paused), expect("Current", "Suspended", true));
    // Paused with an edit held back: not applied, and only unpausing lets it progress.
    let edit = r#"{"spec":{"displayName":"Held back"}}"#;
    let patch = ["patch", "securityprovider/calm", "--type=merge", "-p", edit];
    env.ns.kubectl(&patch).unwrap();
    let held = eventually(Duration::from_secs(30), "generation 2 held back", || {
        get(&env, "calm").filter(|o| {
            o["status"]["observedGeneration"] == 2
                && cond(o, "Ready").is_some_and(|c| c.0 == "False")
        })
    });
    assert_eq!(verdict(&env, &held), expect("Failed", "Suspended", false));

    // Observe-only: matching is Ready; differing is reported, never written.
    let remote = serde_json::json!({"id": "watched", "type": "EXPANDED", "displayName": "Remote"});
    env.create_remotely(remote);
    let observe = |display: &str| {
        format!(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: watched\nspec:\n  connectionRef: coveo\n  managementPolicy: Observe\n  displayName: {display}\n  coveo:\n    type: EXPANDED\n"
        )
    };
    env.ns.apply(&observe("Remote")).unwrap();
    let matching = eventually(Duration::from_secs(30), "observe-only Ready", || {
        get(&env, "watched").filter(|o| cond(o, "Ready").is_some_and(|c| c.0 == "True"))
    });
    assert_eq!(verdict(&env, &matching), expect("Current", "Healthy", true));
    env.ns.apply(&observe("Declared")).unwrap();
    let differing = eventually(Duration::from_secs(30), "observe-only differing", || {
        get(&env, "watched").filter(|o| cond(o, "Ready").is_some_and(|c| c.1 == "ObserveOnly"))
    });
    assert_eq!(
        verdict(&env, &differing),
        expect("Failed", "Degraded", false)
    );
    assert_eq!(env.sim.operation_count("update"), 0);
}

#[test]
fn a_missing_secret_is_terminal_until_it_is_created() {
    let env = Env::coveo("gitops-secret", coveo_config(API_KEY, REFRESH));
    // Secrets are read by name at each connection check: a created one is seen within 2 s.
    let operator = env.start_operator(&["--connection-check-interval", "2s"]);
    env.ns
        .kubectl(&["delete", "secret", "coveo-api-key"])
        .unwrap();
    env.ns.apply(&provider("waiting")).unwrap();
    let missing = wait_for(&env, "waiting", "SecretNotFound", |o| {
        cond(o, "Ready").is_some_and(|c| c.1 == "SecretNotFound")
    });
    assert_eq!(verdict(&env, &missing), expect("Failed", "Degraded", false));
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: coveo-api-key\n  labels: {{secprov.dev/credential: \"true\"}}\nstringData:\n  apiKey: {API_KEY}\n"
    );
    env.ns.apply(&secret).unwrap();
    env.ns
        .wait_condition("securityprovider/waiting", "Ready", "60s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    let ready = get(&env, "waiting").unwrap();
    assert_eq!(verdict(&env, &ready), expect("Current", "Healthy", true));
}
