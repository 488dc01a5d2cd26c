//! Prometheus metrics (prometheus-client): reconciles by result and reason, reconcile
//! duration, remote requests by backend/operation/status, status writes, and Ready counts.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::backend::http::RequestObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: String,
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: String,
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    remote_requests: Family<RequestLabels, Counter>,
    remote_duration: Histogram,
    status_patches: Counter<u64, AtomicU64>,
    ready: Family<ReadyLabels, Gauge>,
    leader: Gauge,
    ready_by_object: Mutex<HashMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `secprov` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secprov");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (success, error) and reason",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let remote_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "remote_requests",
            "Remote API requests by backend, operation and HTTP status (`error` when no response arrived)",
            remote_requests.clone(),
        );
        let remote_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "remote_request_duration_seconds",
            "Duration of one remote request",
            remote_duration.clone(),
        );
        let status_patches = Counter::default();
        registry.register(
            "status_patches",
            "Status writes to the Kubernetes API",
            status_patches.clone(),
        );
        let ready = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "security_providers",
            "SecurityProviders by Ready condition status",
            ready.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (leader, or leader election off), 0 on standby",
            leader.clone(),
        );
        Metrics {
            registry,
            leader,
            reconciles,
            reconcile_duration,
            remote_requests,
            remote_duration,
            status_patches,
            ready,
            ready_by_object: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one reconcile.
    pub fn reconciled(&self, result: &str, reason: &str, duration: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                result: result.into(),
                reason: reason.into(),
            })
            .inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// Records whether this replica runs the controllers.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts one status write.
    pub fn status_patched(&self) {
        self.status_patches.inc();
    }

    /// Status writes so far.
    pub fn status_patch_count(&self) -> u64 {
        self.status_patches.get()
    }

    /// Records the Ready state of an object (None when it is gone).
    pub fn set_ready(&self, object: &str, ready: Option<bool>) {
        let mut map = self
            .ready_by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match ready {
            Some(r) => map.insert(object.to_owned(), r),
            None => map.remove(object),
        };
        let ready_count = map.values().filter(|r| **r).count() as i64;
        let total = map.len() as i64;
        self.ready
            .get_or_create(&ReadyLabels {
                ready: "True".into(),
            })
            .set(ready_count);
        self.ready
            .get_or_create(&ReadyLabels {
                ready: "False".into(),
            })
            .set(total - ready_count);
    }

    /// An observer for backend HTTP clients.
    pub fn request_observer(self: &std::sync::Arc<Self>) -> RequestObserver {
        let metrics = self.clone();
        std::sync::Arc::new(move |backend, operation, status, duration| {
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "error".into());
            metrics
                .remote_requests
                .get_or_create(&RequestLabels {
                    backend: backend.into(),
                    operation: operation.into(),
                    status,
                })
                .inc();
            metrics.remote_duration.observe(duration.as_secs_f64());
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_labels() {
        let metrics = std::sync::Arc::new(Metrics::new());
        metrics.reconciled("error", "RemoteUnavailable", Duration::from_millis(5));
        (metrics.request_observer())("coveo", "update", Some(200), Duration::from_millis(3));
        (metrics.request_observer())("coveo", "get", None, Duration::from_millis(3));
        metrics.status_patched();
        metrics.set_ready("ns/a", Some(true));
        metrics.set_ready("ns/b", Some(false));
        metrics.set_ready("ns/c", Some(true));
        metrics.set_ready("ns/c", None);
        metrics.set_leader(true);
        let text = metrics.encode();
        for expected in [
            r#"secprov_reconciles_total{result="error",reason="RemoteUnavailable"} 1"#,
            r#"secprov_remote_requests_total{backend="coveo",operation="update",status="200"} 1"#,
            r#"secprov_remote_requests_total{backend="coveo",operation="get",status="error"} 1"#,
            "secprov_status_patches_total 1",
            r#"secprov_security_providers{ready="True"} 1"#,
            r#"secprov_security_providers{ready="False"} 1"#,
            "secprov_reconcile_duration_seconds_count 1",
            "secprov_leader 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
