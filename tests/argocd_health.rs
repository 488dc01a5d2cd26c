//! deploy/argocd/health.lua, the Argo CD health check, run on sample objects (Lua 5.1 like
//! Argo CD's gopher-lua), and the argocd-cm snippet carrying exactly that script.
use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

fn script() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argocd/health.lua"
    ))
    .expect("read deploy/argocd/health.lua")
}

/// Runs the script as Argo CD does: the object as global `obj`, a table {status, message} back.
pub fn health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    let value = lua.to_value(object).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let result: mlua::Table = lua.load(script()).eval().expect("health.lua runs");
    (
        result.get::<String>("status").expect("status"),
        result
            .get::<Option<String>>("message")
            .expect("message")
            .unwrap_or_default(),
    )
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 2})
}

fn provider(generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "secprov.dev/v1alpha1",
        "kind": "SecurityProvider",
        "metadata": {"name": "p", "namespace": "ns", "generation": generation},
        "spec": {"connectionRef": "coveo", "coveo": {}},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

fn status(observed_generation: i64, conditions: Vec<Value>) -> Value {
    json!({"observedGeneration": observed_generation, "backend": "coveo", "conditions": conditions})
}

#[test]
fn ready_for_the_current_generation_is_healthy() {
    let obj = provider(
        2,
        Some(status(
            2,
            vec![
                condition(
                    "Ready",
                    "True",
                    "Available",
                    "the remote provider exists and matches the spec",
                ),
                condition(
                    "Synced",
                    "True",
                    "ReconcileSuccess",
                    "the remote provider matches the spec",
                ),
            ],
        )),
    );
    let (s, message) = health(&obj);
    assert_eq!(s, "Healthy");
    assert!(message.starts_with("Available"), "{message}");
}

#[test]
fn unobserved_generation_or_missing_status_is_progressing() {
    let ready = vec![condition("Ready", "True", "Available", "")];
    assert_eq!(
        health(&provider(3, Some(status(2, ready)))).0,
        "Progressing"
    );
    let (s, message) = health(&provider(1, None));
    assert_eq!(s, "Progressing");
    assert!(message.contains("generation 1"), "{message}");
    let no_conditions = json!({"observedGeneration": 1});
    assert_eq!(health(&provider(1, Some(no_conditions))).0, "Progressing");
}

#[test]
fn reconciling_or_unknown_ready_is_progressing() {
    let creating = status(
        2,
        vec![
            condition(
                "Ready",
                "False",
                "RemoteCreating",
                "Coveo is creating the provider",
            ),
            condition("Synced", "True", "ReconcileSuccess", ""),
            condition(
                "Reconciling",
                "True",
                "RemoteCreating",
                "Coveo is creating the provider",
            ),
        ],
    );
    assert_eq!(health(&provider(2, Some(creating))).0, "Progressing");
    // A transient remote failure keeps Ready as it was but is being retried.
    let retrying = status(
        2,
        vec![
            condition("Ready", "True", "Available", ""),
            condition("Synced", "False", "RemoteUnavailable", "503"),
            condition("Reconciling", "True", "RemoteUnavailable", "retrying: 503"),
        ],
    );
    let (s, message) = health(&provider(2, Some(retrying)));
    assert_eq!(s, "Progressing");
    assert_eq!(message, "RemoteUnavailable: retrying: 503");
    let unknown = status(2, vec![condition("Ready", "Unknown", "NotObserved", "")]);
    assert_eq!(health(&provider(2, Some(unknown))).0, "Progressing");
}

#[test]
fn stalled_or_failed_ready_is_degraded_with_the_reason() {
    let stalled = status(
        2,
        vec![
            condition(
                "Ready",
                "False",
                "RemoteInvalidConfiguration",
                "id too long",
            ),
            condition(
                "Synced",
                "False",
                "RemoteInvalidConfiguration",
                "id too long",
            ),
            condition(
                "Stalled",
                "True",
                "RemoteInvalidConfiguration",
                "id too long",
            ),
        ],
    );
    let (s, message) = health(&provider(2, Some(stalled)));
    assert_eq!(s, "Degraded");
    assert_eq!(message, "RemoteInvalidConfiguration: id too long");
    let remote_error = status(
        2,
        vec![
            condition(
                "Ready",
                "False",
                "RemoteError",
                "Coveo reports the provider as ERROR",
            ),
            condition("Synced", "True", "ReconcileSuccess", ""),
        ],
    );
    assert_eq!(health(&provider(2, Some(remote_error))).0, "Degraded");
}

#[test]
fn paused_is_suspended() {
    let paused = status(
        2,
        vec![
            condition("Ready", "True", "Available", ""),
            condition(
                "Synced",
                "False",
                "ReconcilePaused",
                "remote writes are paused",
            ),
        ],
    );
    assert_eq!(health(&provider(3, Some(paused))).0, "Suspended");
    // A spec change waiting while paused (Ready and Stalled say so): still Suspended.
    let waiting = condition(
        "Synced",
        "False",
        "ReconcilePaused",
        "the update waits until the secprov.dev/paused annotation is removed",
    );
    let paused_change = status(
        3,
        vec![
            condition("Ready", "False", "ReconcilePaused", "waits"),
            waiting,
            condition("Stalled", "True", "ReconcilePaused", "waits"),
        ],
    );
    assert_eq!(health(&provider(3, Some(paused_change))).0, "Suspended");
    // Observe-only with a difference: the spec is not what the remote has.
    let observed = status(
        3,
        vec![
            condition("Ready", "False", "ObserveOnly", "remote differs"),
            condition("Synced", "False", "ObserveOnly", "remote differs"),
            condition("Stalled", "True", "ObserveOnly", "remote differs"),
        ],
    );
    assert_eq!(health(&provider(3, Some(observed))).0, "Degraded");
}

#[test]
fn provider_connections_use_the_same_rules() {
    let connection = |ready: Value| {
        json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "ProviderConnection",
            "metadata": {"name": "coveo", "generation": 1},
            "status": {"observedGeneration": 1, "backend": "coveo", "conditions": [ready]},
        })
    };
    assert_eq!(
        health(&connection(condition("Ready", "True", "Connected", ""))).0,
        "Healthy"
    );
    let (s, message) = health(&connection(condition(
        "Ready",
        "False",
        "SecretNotFound",
        "Secret \"coveo-api-key\" not found in this namespace",
    )));
    assert_eq!(s, "Degraded");
    assert!(message.starts_with("SecretNotFound"), "{message}");
}

#[test]
fn argocd_cm_snippet_carries_the_script_for_both_kinds() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/argocd/argocd-cm.yaml"
    ))
    .unwrap();
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for kind in ["SecurityProvider", "ProviderConnection"] {
        let key = format!("resource.customizations.health.secprov.dev_{kind}");
        let embedded = cm["data"][key.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(
            embedded.trim_end(),
            script().trim_end(),
            "{key} differs from health.lua"
        );
    }
}
