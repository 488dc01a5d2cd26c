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
            {"type": "Ready", "status": "False", "reason": "RemoteConflict"},
            {"type": "Stalled", "status": "True"},
        ]}});
        assert_eq!(
            conditions_summary(&obj),
            "Ready=False/RemoteConflict, Stalled=True/?"
        );
        assert_eq!(conditions_summary(&json!({})), "no conditions");
    }
}
