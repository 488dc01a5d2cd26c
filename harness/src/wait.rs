//! Polling waits.
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `check` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A condition of an object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The message of an object's condition `type_`; panics when there is none (the tests call it
/// on a condition they have just waited for).
pub fn condition_message(obj: &Value, type_: &str) -> String {
    condition(obj, type_)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no {type_} message in {}", obj["status"]))
        .to_owned()
}

/// The conditions of an object's status as `Type=Status/Reason`, for failure messages (what a
/// wait last saw says more than "timed out").
pub fn conditions_summary(obj: &Value) -> String {
    let Some(conditions) = obj["status"]["conditions"].as_array() else {
        return "no conditions".into();
    };
    conditions
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or("?").to_owned();
            format!("{}={}/{}", field("type"), field("status"), field("reason"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_names_each_condition_with_status_and_reason() {
        let obj = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "RemoteConflict", "message": "HTTP 409"},
            {"type": "Stalled", "status": "True"},
        ]}});
        assert_eq!(
            conditions_summary(&obj),
            "Ready=False/RemoteConflict, Stalled=True/?"
        );
        assert_eq!(conditions_summary(&json!({})), "no conditions");
        assert_eq!(condition_message(&obj, "Ready"), "HTTP 409");
    }
}
