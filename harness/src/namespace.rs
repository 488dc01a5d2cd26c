//! A namespace of its own for each test.
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{kubeconfig, kubectl, run_kubectl};
use crate::manifests::WITNESS;
use crate::operator::Operator;
use crate::wait::{condition, conditions_summary};

/// A namespace of its own for one test.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        kubectl(&["create", "namespace", &name]).expect("create namespace");
        TestNamespace { name }
    }

    /// kubectl with `-n <namespace>`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        kubectl(&full)
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        run_kubectl(
            kubeconfig(),
            &["-n", &self.name, "apply", "-f", "-"],
            Some(yaml),
        )
    }

    /// The object as JSON.
    pub fn get_json(&self, resource: &str) -> Option<Value> {
        self.kubectl(&["get", resource, "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// `kubectl wait --for=condition=<c>`.
    pub fn wait_condition(
        &self,
        resource: &str,
        condition: &str,
        timeout: &str,
    ) -> Result<String, String> {
        self.kubectl(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("--timeout={timeout}"),
            resource,
        ])
    }

    /// Waits (up to `timeout`, as kubectl spells it) until `resource` is Ready and returns it;
    /// panics with `operator`'s log when it is not.
    pub fn wait_ready(&self, resource: &str, timeout: &str, operator: &Operator) -> Value {
        self.wait_condition(resource, "Ready", timeout)
            .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_text()));
        self.get_json(resource)
            .unwrap_or_else(|| panic!("{resource} is gone after being Ready"))
    }

    /// `kubectl delete <resource>`, waiting (up to 60 s) until it is gone, finalizers included;
    /// panics when it is not.
    pub fn delete(&self, resource: &str) {
        self.kubectl(&["delete", resource, "--timeout=60s"])
            .unwrap_or_else(|e| panic!("delete {}/{resource}: {e}", self.name));
    }

    /// Polls `resource` (up to `timeout`) until its condition `type_` has `reason` and returns
    /// the object; the error names the conditions last seen (or that the object was not found).
    pub fn try_wait_reason(
        &self,
        resource: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let obj = self.get_json(resource);
            if let Some(obj) = &obj
                && condition(obj, type_).is_some_and(|c| c["reason"] == reason)
            {
                return Ok(obj.clone());
            }
            if Instant::now() >= deadline {
                let seen = obj.as_ref().map_or("not found".into(), conditions_summary);
                return Err(format!(
                    "{}/{resource}: no {type_} reason {reason} within {timeout:?}; last seen: {seen}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Self::try_wait_reason`], panicking with the conditions last seen.
    pub fn wait_reason(
        &self,
        resource: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> Value {
        self.try_wait_reason(resource, type_, reason, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::try_wait_reason`], panicking with the conditions last seen and `operator`'s log.
    pub fn wait_reason_logged(
        &self,
        resource: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
        operator: &Operator,
    ) -> Value {
        self.try_wait_reason(resource, type_, reason, timeout)
            .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", operator.log_text()))
    }

    /// Applies [`WITNESS`].
    pub fn apply_witness(&self) {
        self.apply(WITNESS).expect("apply the witness provider");
    }

    /// Events of an object, as (reason, message) pairs.
    pub fn events_for(&self, name: &str) -> Vec<(String, String)> {
        let json = self
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "json",
            ])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .unwrap_or(Value::Null);
        json["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        (
                            e["reason"].as_str().unwrap_or("").to_owned(),
                            e["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
