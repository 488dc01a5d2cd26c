//! Issue 15, refresh schedules: `spec.coveo.refreshSchedules` on a real API server against the
//! Coveo simulator. A spec change is exactly one schedule PUT; a schedule changed by hand is
//! restored at the next resync with a `DriftCorrected` Event naming it; unlisted refresh types
//! and providers without the field are left alone; `export` round-trips with zero writes; CEL
//! rejects bad schedules at apply time.
mod support;

use std::time::Duration;

use secprov_sim::coveo::CoveoSimulator;
use serde_json::{Value, json};
use support::*;

const API_KEY: &str = "e2e-coveo-schedules-key-91b4";
const MAIN: &str = "SECURITY_PROVIDER_REFRESH";
const IN_ERROR: &str = "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR";

/// The example connection to a fresh simulator, and the operator once started.
struct Env {
    base: support::Env<CoveoSimulator>,
    operator: Option<Operator>,
}

impl std::ops::Deref for Env {
    type Target = support::Env<CoveoSimulator>;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

fn setup(prefix: &str, with_operator: bool) -> Env {
    let base = support::Env::coveo(prefix, coveo_config(API_KEY, Duration::from_millis(200)));
    let operator = with_operator.then(|| start_operator(&base.ns));
    Env { base, operator }
}

fn start_operator(ns: &TestNamespace) -> Operator {
    Operator::start(
        &ns.name,
        &["--resync-interval", "1s", "--progress-interval", "500ms"],
    )
}

fn operator(env: &Env) -> &Operator {
    env.operator.as_ref().expect("operator started")
}

fn provider(name: &str, hour: u32) -> String {
    let spec = format!(
        r#"  connectionRef: coveo
  coveo:
    type: EXPANDED
    refreshSchedules:
      - refreshType: {MAIN}
        frequency: {{type: WEEKLY, weekDays: [MONDAY, THURSDAY], hourMinute: {{hour: {hour}, minute: 30}}}}
"#
    );
    security_provider(name, "", &spec)
}

fn remote_schedule(env: &Env, name: &str, refresh_type: &str) -> Value {
    env.sim
        .schedules(name)
        .and_then(|all| {
            all.as_array()?
                .iter()
                .find(|s| s["refreshType"] == refresh_type)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn wait_hour(env: &Env, name: &str, hour: u32) {
    eventually(Duration::from_secs(60), "the remote schedule", || {
        let s = remote_schedule(env, name, MAIN);
        (s["frequency"]["hourMinute"]["hour"] == hour && s["enabled"] == true).then_some(())
    });
}

#[test]
fn schedules_are_set_changed_with_one_put_and_restored_after_a_hand_edit() {
    let env = setup("coveo-schedules", true);
    env.ns.apply(&provider("tuned", 2)).unwrap();
    env.ns
        .apply("apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: untouched\nspec:\n  connectionRef: coveo\n  coveo: {}\n")
        .unwrap();
    for name in ["tuned", "untouched"] {
        env.ns
            .wait_condition(&format!("securityprovider/{name}"), "Ready", "90s")
            .unwrap_or_else(|e| panic!("{e}\n{}", operator(&env).log_text()));
    }
    wait_hour(&env, "tuned", 2);
    let main = remote_schedule(&env, "tuned", MAIN);
    assert_eq!(main["frequency"]["type"], "WEEKLY");
    assert_eq!(main["frequency"]["weekDays"], json!(["MONDAY", "THURSDAY"]));
    // Unlisted refresh type and unset field: the console defaults stay.
    assert_eq!(
        remote_schedule(&env, "tuned", IN_ERROR)["frequency"]["value"],
        2
    );
    assert_eq!(
        remote_schedule(&env, "untouched", MAIN)["frequency"]["type"],
        "DAILY"
    );
    let status = eventually(Duration::from_secs(30), "schedules in status", || {
        let sp = env.ns.get_json("securityprovider/tuned")?;
        let schedules = sp["status"]["coveo"]["refreshSchedules"]
            .as_array()?
            .clone();
        schedules
            .iter()
            .any(|s| s["frequency"] == "WEEKLY MONDAY,THURSDAY 02:30 UTC")
            .then_some(schedules)
    });
    assert_eq!(status.len(), 2, "{status:?}");

    // A spec change: exactly one schedule PUT, no provider PUT.
    env.sim.reset_counters();
    env.ns.apply(&provider("tuned", 5)).unwrap();
    wait_hour(&env, "tuned", 5);
    operator(&env).wait_successes(6);
    assert_eq!(env.sim.request_count_for("PUT", "update_schedule"), 1);
    assert_eq!(env.sim.request_count_for("PUT", "update"), 0);

    // Quiet resyncs: schedules are read and nothing is written.
    env.sim.reset_counters();
    operator(&env).wait_successes(6);
    assert!(
        env.sim.request_count_for("GET", "schedules") > 0,
        "schedules were read"
    );
    assert_eq!(env.sim.request_count("PUT"), 0);

    // A hand edit in the console is restored at the next resync, with an Event naming it.
    assert!(env.sim.mutate_schedule("tuned", MAIN, |s| {
        s["enabled"] = json!(false);
        s["frequency"]["hourMinute"]["hour"] = json!(9);
    }));
    wait_hour(&env, "tuned", 5);
    assert_eq!(env.sim.request_count_for("PUT", "update_schedule"), 1);
    let events = eventually(Duration::from_secs(30), "a DriftCorrected Event", || {
        let events = env.ns.events_for("tuned");
        events
            .iter()
            .any(|(reason, message)| {
                reason == "DriftCorrected"
                    && message.contains("refreshSchedules[SECURITY_PROVIDER_REFRESH]")
            })
            .then_some(events)
    });
    assert!(!events.is_empty());
    assert_eq!(
        remote_schedule(&env, "untouched", MAIN)["frequency"]["type"],
        "DAILY"
    );
    assert_eq!(env.sim.request_count_for("PUT", "update"), 0);
}

#[test]
fn export_of_custom_schedules_round_trips_with_zero_writes() {
    let mut env = setup("coveo-schedules-export", false);
    env.create_remotely(json!({"id": "hand-tuned", "type": "EXPANDED"}));
    assert!(env.sim.mutate_schedule("hand-tuned", MAIN, |s| {
        s["frequency"] = json!({"type": "MONTHLY", "monthDay": 15, "hourMinute": {"hour": 23, "minute": 45}});
    }));
    assert!(env.sim.mutate_schedule("hand-tuned", IN_ERROR, |s| {
        s["enabled"] = json!(false);
    }));

    let exported = operator_cli(&["export", "--connection", "coveo", "-n", &env.ns.name]);
    assert!(exported.contains("refreshSchedules:"), "{exported}");
    assert!(
        exported.contains("type: MONTHLY") && exported.contains("monthDay: 15"),
        "{exported}"
    );
    assert!(exported.contains("enabled: false"), "{exported}");

    // `plan` (the controller's observe and plan) calls the export in sync.
    let file = repo().join(format!("target/e2e-logs/{}-export.yaml", env.ns.name));
    std::fs::write(&file, &exported).unwrap();
    let plan = operator_cli(&["plan", "-f", file.to_str().unwrap(), "-n", &env.ns.name]);
    assert!(
        plan.contains("= no change") && plan.contains("0 to create, 0 to update, 1 unchanged"),
        "{plan}"
    );

    env.sim.reset_counters();
    env.operator = Some(start_operator(&env.ns));
    env.ns.apply(&exported).unwrap();
    env.ns
        .wait_condition("securityprovider/hand-tuned", "Ready", "90s")
        .unwrap_or_else(|e| panic!("{e}\n{}", operator(&env).log_text()));
    operator(&env).wait_successes(6);
    assert!(
        env.sim.request_count_for("GET", "schedules") > 0,
        "schedules were compared"
    );
    let writes = env.sim.request_count("PUT")
        + env.sim.request_count("POST")
        + env.sim.request_count("DELETE");
    assert_eq!(writes, 0, "adopting the export writes nothing");
    assert_eq!(
        remote_schedule(&env, "hand-tuned", MAIN)["frequency"]["monthDay"],
        15
    );
}

#[test]
fn bad_schedules_are_rejected_at_apply_time_with_a_specific_message() {
    let ns = TestNamespace::new("coveo-schedules-cel");
    let cases = [
        ("{type: DAILY, hourMinute: {hour: 24, minute: 0}}", "hour"),
        ("{type: DAILY, hourMinute: {hour: 4, minute: 60}}", "minute"),
        ("{type: DAILY}", "hourMinute is required"),
        (
            "{type: WEEKLY, hourMinute: {hour: 4, minute: 0}}",
            "weekDays is required",
        ),
        (
            "{type: MONTHLY, hourMinute: {hour: 4, minute: 0}}",
            "monthDay is required",
        ),
        ("{type: HOURLY}", "value (the interval) is required"),
        ("{type: HOURLY, value: 30}", "1 to 23 hours"),
    ];
    for (frequency, expected) in cases {
        let manifest = format!(
            "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: bad\nspec:\n  connectionRef: coveo\n  coveo:\n    refreshSchedules:\n      - refreshType: {MAIN}\n        frequency: {frequency}\n"
        );
        let error = ns.apply(&manifest).expect_err(frequency);
        assert!(error.contains(expected), "{frequency}: {error}");
    }
    let twice = format!(
        "apiVersion: secprov.dev/v1alpha1\nkind: SecurityProvider\nmetadata:\n  name: bad\nspec:\n  connectionRef: coveo\n  coveo:\n    refreshSchedules:\n      - {{refreshType: {MAIN}, frequency: {{type: HOURLY, value: 1}}}}\n      - {{refreshType: {MAIN}, frequency: {{type: HOURLY, value: 2}}}}\n"
    );
    let error = ns.apply(&twice).expect_err("duplicate refresh type");
    assert!(error.contains("each refreshType at most once"), "{error}");
}

#[test]
fn the_connector_and_schedule_examples_are_reconciled_as_documented() {
    let env = setup("coveo-examples", true);
    for file in [
        "coveo/20-connector-provider.yaml",
        "coveo/30-custom-schedules.yaml",
    ] {
        env.ns.apply(&example(file, &env.sim.base_url())).unwrap();
    }
    for name in ["hr-database-provider", "intranet-provider"] {
        env.ns
            .wait_condition(&format!("securityprovider/{name}"), "Ready", "90s")
            .unwrap_or_else(|e| panic!("{e}\n{}", operator(&env).log_text()));
    }
    let held = env.sim.secret_values("hr-database-provider").unwrap();
    assert_eq!(held["userIdentities.crawler"], "demo-crawler-password");
    assert!(held["parameters.ConnectionString"].starts_with("Server=hr-db.example.com"));
    let main = remote_schedule(&env, "intranet-provider", MAIN);
    assert_eq!(main["frequency"]["weekDays"], json!(["MONDAY", "THURSDAY"]));
    let in_error = remote_schedule(&env, "intranet-provider", IN_ERROR);
    assert_eq!(in_error["frequency"]["type"], "HOURLY");
    assert_eq!(in_error["frequency"]["value"], 6);
}
