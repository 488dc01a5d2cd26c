//! Prometheus metrics (prometheus-client): reconciles by result and reason, reconcile duration
//! and the reconciles in flight, remote requests and their latency by backend and status,
//! client-side rate-limit waits, status writes, SecurityProviders and ProviderConnections by
//! Ready state (in aggregate and per object), leadership and the process's memory. The
//! dashboard and alerts in deploy/monitoring/ use these names.
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::backend::http::{Observation, RequestObserver};

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
struct LatencyLabels {
    backend: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    share: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    backend: String,
    ready: String,
}

/// Labels of the per-object series. Shared strings: the namespace and name of one object are
/// allocated once for its entry in the state map and both of its gauges (separate copies were
/// a good part of the metrics' memory: BENCHMARKS.md, "Figures behind the code"), and backend
/// names once per process.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: Arc<str>,
    name: Arc<str>,
    backend: Arc<str>,
}

/// What the gauges last showed of one SecurityProvider.
#[derive(Clone, Debug, PartialEq)]
struct ProviderState {
    backend: Arc<str>,
    ready: bool,
    stalled: bool,
}

type Key = (Arc<str>, Arc<str>);
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    in_flight: Gauge,
    slot_refusals: Family<ShareLabels, Counter>,
    longest_running: Gauge<f64, AtomicU64>,
    running: Mutex<HashMap<u64, Instant>>,
    next_reconcile_id: AtomicU64,
    remote_requests: Family<RequestLabels, Counter>,
    remote_duration: HistogramFamily<LatencyLabels>,
    rate_limit_waits: Family<BackendLabels, Counter>,
    rate_limit_wait_seconds: Family<BackendLabels, Counter<f64, AtomicU64>>,
    status_patches: Counter<u64, AtomicU64>,
    providers: Family<ReadyLabels, Gauge>,
    provider_ready: Family<ObjectLabels, Gauge>,
    provider_stalled: Family<ObjectLabels, Gauge>,
    connection_ready: Family<ObjectLabels, Gauge>,
    leader: Gauge,
    resident_memory: Gauge,
    provider_states: Mutex<HashMap<Key, ProviderState>>,
    connection_backends: Mutex<HashMap<Key, Arc<str>>>,
    /// Backend names seen, each allocated once.
    backends: Mutex<BTreeSet<Arc<str>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.into(), name.into())
}

/// The key of `map` equal to (namespace, name), shared, or a new one.
fn shared_key<V>(map: &HashMap<Key, V>, namespace: &str, name: &str) -> Key {
    let probe = key(namespace, name);
    map.get_key_value(&probe)
        .map_or(probe, |(shared, _)| shared.clone())
}

fn object_labels(key: &Key, backend: &Arc<str>) -> ObjectLabels {
    ObjectLabels {
        namespace: key.0.clone(),
        name: key.1.clone(),
        backend: backend.clone(),
    }
}

fn ready_labels(backend: &str, ready: bool) -> ReadyLabels {
    ReadyLabels {
        backend: backend.to_owned(),
        ready: if ready { "True" } else { "False" }.to_owned(),
    }
}

impl Metrics {
    /// Registers every metric under the `secprov` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secprov");
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_duration: latency_histogram(),
            in_flight: Gauge::default(),
            slot_refusals: Family::default(),
            longest_running: Gauge::default(),
            running: Mutex::new(HashMap::new()),
            next_reconcile_id: AtomicU64::new(0),
            remote_requests: Family::default(),
            remote_duration: Family::new_with_constructor(latency_histogram),
            rate_limit_waits: Family::default(),
            rate_limit_wait_seconds: Family::default(),
            status_patches: Counter::default(),
            providers: Family::default(),
            provider_ready: Family::default(),
            provider_stalled: Family::default(),
            connection_ready: Family::default(),
            leader: Gauge::default(),
            resident_memory: Gauge::default(),
            provider_states: Mutex::new(HashMap::new()),
            connection_backends: Mutex::new(HashMap::new()),
            backends: Mutex::new(BTreeSet::new()),
            registry: Registry::default(),
        };
        metrics.register_reconcile(&mut registry);
        metrics.register_remote(&mut registry);
        metrics.register_objects(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    fn register_reconcile(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "SecurityProvider reconciles by result (success, error) and reason",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            self.in_flight.clone(),
        );
        registry.register(
            "reconcile_slot_refusals",
            "Reconciles requeued because their namespace or connection held its share of the slots, by share",
            self.slot_refusals.clone(),
        );
        // Both series exist from the start, so `rate()` sees them before the first refusal.
        for share in ["namespace", "connection"] {
            let _ = self.slot_refusals.get_or_create(&ShareLabels {
                share: share.into(),
            });
        }
        registry.register(
            "reconcile_longest_running_seconds",
            "Age of the oldest running reconcile (0 when none runs)",
            self.longest_running.clone(),
        );
        registry.register(
            "status_patches",
            "Status writes to the Kubernetes API",
            self.status_patches.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers (leader, or leader election off), 0 on standby",
            self.leader.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the operator process",
            self.resident_memory.clone(),
        );
    }

    fn register_remote(&self, registry: &mut Registry) {
        registry.register(
            "remote_requests",
            "Remote API requests by backend, operation and HTTP status (`error` when no response arrived)",
            self.remote_requests.clone(),
        );
        registry.register(
            "remote_request_duration_seconds",
            "Duration of one remote request by backend and HTTP status",
            self.remote_duration.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Remote requests that waited for the connection's client-side rate limit",
            self.rate_limit_waits.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "Time remote requests spent waiting for the client-side rate limit",
            self.rate_limit_wait_seconds.clone(),
        );
    }

    fn register_objects(&self, registry: &mut Registry) {
        registry.register(
            "security_providers",
            "SecurityProviders by backend and Ready condition status",
            self.providers.clone(),
        );
        registry.register(
            "security_provider_ready",
            "1 when the SecurityProvider is Ready, else 0",
            self.provider_ready.clone(),
        );
        registry.register(
            "security_provider_stalled",
            "1 when the SecurityProvider is Stalled (only a change can fix it), else 0",
            self.provider_stalled.clone(),
        );
        registry.register(
            "provider_connection_ready",
            "1 when the ProviderConnection is Ready, else 0",
            self.connection_ready.clone(),
        );
    }

    /// Creates the per-backend series at zero, so that dashboards and `rate()` see them
    /// before the first event.
    pub fn init_backends(&self, backends: &[&str]) {
        for backend in backends {
            let labels = BackendLabels {
                backend: (*backend).to_owned(),
            };
            let _ = self.rate_limit_waits.get_or_create(&labels);
            let _ = self.rate_limit_wait_seconds.get_or_create(&labels);
            self.backend_name(backend);
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

    /// Counts one reconcile refused a slot because `share` (namespace, connection) was full.
    pub fn reconcile_refused_slot(&self, share: &str) {
        self.slot_refusals
            .get_or_create(&ShareLabels {
                share: share.into(),
            })
            .inc();
    }

    /// Marks a reconcile as running until the returned guard is dropped.
    pub fn reconcile_started(self: &Arc<Self>) -> InFlight {
        let id = self.next_reconcile_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(id, Instant::now());
        self.in_flight.inc();
        InFlight {
            metrics: self.clone(),
            id,
        }
    }

    /// Age of the oldest running reconcile (None when none runs), for `/healthz`.
    pub fn longest_running(&self) -> Option<Duration> {
        lock(&self.running).values().min().map(Instant::elapsed)
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

    /// Counts one request held back by the client-side rate limit for `waited`.
    pub fn rate_limit_waited(&self, backend: &str, waited: Duration) {
        let labels = BackendLabels {
            backend: backend.to_owned(),
        };
        self.rate_limit_waits.get_or_create(&labels).inc();
        self.rate_limit_wait_seconds
            .get_or_create(&labels)
            .inc_by(waited.as_secs_f64());
    }

    /// The backend's name, allocated once per process; its provider counts are exported
    /// (at zero) from the first time it is seen.
    fn backend_name(&self, backend: &str) -> Arc<str> {
        let mut backends = lock(&self.backends);
        if let Some(known) = backends.get(backend) {
            return known.clone();
        }
        let name: Arc<str> = backend.into();
        backends.insert(name.clone());
        drop(backends);
        self.zero_counts(backend);
        name
    }

    /// Records the Ready and Stalled state of a SecurityProvider.
    pub fn provider_observed(
        &self,
        namespace: &str,
        name: &str,
        backend: &str,
        ready: bool,
        stalled: bool,
    ) {
        let backend = self.backend_name(backend);
        let mut states = lock(&self.provider_states);
        let key = shared_key(&states, namespace, name);
        let state = ProviderState {
            backend: backend.clone(),
            ready,
            stalled,
        };
        if let Some(old) = states.get(&key)
            && old.backend != backend
        {
            self.provider_ready
                .remove(&object_labels(&key, &old.backend));
            self.provider_stalled
                .remove(&object_labels(&key, &old.backend));
        }
        let labels = object_labels(&key, &backend);
        self.provider_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
        self.provider_stalled
            .get_or_create(&labels)
            .set(i64::from(stalled));
        if let Some(old) = states.insert(key, state) {
            self.count_provider(&old.backend, old.ready, -1);
        }
        self.count_provider(&backend, ready, 1);
    }

    /// Forgets a SecurityProvider that is gone: every series that named it, and its count.
    pub fn provider_forgotten(&self, namespace: &str, name: &str) {
        let key = key(namespace, name);
        let mut states = lock(&self.provider_states);
        if let Some(old) = states.remove(&key) {
            self.provider_ready
                .remove(&object_labels(&key, &old.backend));
            self.provider_stalled
                .remove(&object_labels(&key, &old.backend));
            self.count_provider(&old.backend, old.ready, -1);
        }
    }

    /// SecurityProviders the gauges count now.
    pub fn provider_count(&self) -> usize {
        lock(&self.provider_states).len()
    }

    /// Moves the count of providers of `backend` in state `ready` by `by`: counted as states
    /// change, not recounted over every provider (a recount copied every provider's labels at
    /// each reconcile).
    fn count_provider(&self, backend: &str, ready: bool, by: i64) {
        self.providers
            .get_or_create(&ready_labels(backend, ready))
            .inc_by(by);
    }

    /// Exports both counts of `backend` (0 until a provider of it is seen).
    fn zero_counts(&self, backend: &str) {
        for ready in [true, false] {
            let _ = self.providers.get_or_create(&ready_labels(backend, ready));
        }
    }

    /// Records the Ready state of a ProviderConnection.
    pub fn connection_observed(&self, namespace: &str, name: &str, backend: &str, ready: bool) {
        let backend = self.backend_name(backend);
        let mut backends = lock(&self.connection_backends);
        let key = shared_key(&backends, namespace, name);
        if let Some(old) = backends.get(&key)
            && *old != backend
        {
            self.connection_ready.remove(&object_labels(&key, old));
        }
        self.connection_ready
            .get_or_create(&object_labels(&key, &backend))
            .set(i64::from(ready));
        backends.insert(key, backend);
    }

    /// Forgets a ProviderConnection that is gone.
    pub fn connection_forgotten(&self, namespace: &str, name: &str) {
        let key = key(namespace, name);
        if let Some(old) = lock(&self.connection_backends).remove(&key) {
            self.connection_ready.remove(&object_labels(&key, &old));
        }
    }

    /// An observer for backend HTTP clients: remote requests, their latency, rate-limit waits.
    pub fn request_observer(self: &Arc<Self>) -> RequestObserver {
        let metrics = self.clone();
        Arc::new(move |backend, observation| {
            let (operation, status, duration) = match observation {
                Observation::Request {
                    operation,
                    status,
                    duration,
                } => (operation, status, duration),
                Observation::RateLimitWait(waited) => {
                    return metrics.rate_limit_waited(backend, waited);
                }
            };
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "error".into());
            metrics
                .remote_requests
                .get_or_create(&RequestLabels {
                    backend: backend.into(),
                    operation: operation.into(),
                    status: status.clone(),
                })
                .inc();
            metrics
                .remote_duration
                .get_or_create(&LatencyLabels {
                    backend: backend.into(),
                    status,
                })
                .observe(duration.as_secs_f64());
        })
    }

    /// The text exposition format, with the values read at scrape time brought up to date.
    pub fn encode(&self) -> String {
        let oldest = lock(&self.running).values().min().copied();
        self.longest_running
            .set(oldest.map_or(0.0, |started| started.elapsed().as_secs_f64()));
        self.resident_memory
            .set(resident_memory_bytes().unwrap_or(0));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A running reconcile; dropping it ends it.
pub struct InFlight {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.metrics.running).remove(&self.id);
        self.metrics.in_flight.dec();
    }
}

/// VmRSS of this process (Linux), in bytes.
fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_labels() {
        let metrics = Arc::new(Metrics::new());
        metrics.init_backends(&["coveo", "keystone"]);
        metrics.reconciled("error", "RemoteUnavailable", Duration::from_millis(5));
        let observe = metrics.request_observer();
        let request = |operation, status| Observation::Request {
            operation,
            status,
            duration: Duration::from_millis(3),
        };
        observe("coveo", request("update", Some(200)));
        observe("coveo", request("get", None));
        metrics.status_patched();
        metrics.provider_observed("ns", "a", "coveo", true, false);
        metrics.provider_observed("ns", "b", "coveo", false, true);
        metrics.connection_observed("ns", "c", "keystone", false);
        observe(
            "coveo",
            Observation::RateLimitWait(Duration::from_millis(250)),
        );
        metrics.set_leader(true);
        let _running = metrics.reconcile_started();
        let text = metrics.encode();
        for expected in [
            r#"secprov_reconciles_total{result="error",reason="RemoteUnavailable"} 1"#,
            r#"secprov_remote_requests_total{backend="coveo",operation="update",status="200"} 1"#,
            r#"secprov_remote_requests_total{backend="coveo",operation="get",status="error"} 1"#,
            r#"secprov_remote_request_duration_seconds_count{backend="coveo",status="200"} 1"#,
            "secprov_status_patches_total 1",
            r#"secprov_security_providers{backend="coveo",ready="True"} 1"#,
            r#"secprov_security_providers{backend="coveo",ready="False"} 1"#,
            r#"secprov_security_providers{backend="keystone",ready="True"} 0"#,
            r#"secprov_security_provider_ready{namespace="ns",name="b",backend="coveo"} 0"#,
            r#"secprov_security_provider_stalled{namespace="ns",name="b",backend="coveo"} 1"#,
            r#"secprov_provider_connection_ready{namespace="ns",name="c",backend="keystone"} 0"#,
            r#"secprov_rate_limit_waits_total{backend="coveo"} 1"#,
            r#"secprov_rate_limit_wait_seconds_total{backend="coveo"} 0.25"#,
            r#"secprov_rate_limit_waits_total{backend="keystone"} 0"#,
            "secprov_reconcile_duration_seconds_count 1",
            "secprov_reconciles_in_flight 1",
            "secprov_leader 1",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        let memory = text
            .lines()
            .find_map(|l| l.strip_prefix("secprov_process_resident_memory_bytes "))
            .expect("memory gauge");
        assert!(memory.parse::<i64>().unwrap() > 1 << 20, "{memory}");
    }

    #[test]
    fn a_forgotten_provider_leaves_no_series_and_no_count() {
        let metrics = Metrics::new();
        metrics.provider_observed("ns", "a", "coveo", true, false);
        metrics.provider_observed("ns", "b", "jitsudo", false, true);
        // A backend change moves the object's series.
        metrics.provider_observed("ns", "b", "keystone", false, false);
        metrics.provider_forgotten("ns", "a");
        metrics.provider_forgotten("ns", "never-seen");
        let text = metrics.encode();
        assert_eq!(metrics.provider_count(), 1);
        assert!(!text.contains(r#"name="a""#), "{text}");
        assert!(
            !text.contains(r#"backend="jitsudo",ready="False"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"name="b",backend="jitsudo""#), "{text}");
        for expected in [
            r#"secprov_security_providers{backend="coveo",ready="True"} 0"#,
            r#"secprov_security_providers{backend="keystone",ready="False"} 1"#,
            r#"secprov_security_provider_ready{namespace="ns",name="b",backend="keystone"} 0"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        metrics.connection_observed("ns", "c", "coveo", true);
        metrics.connection_forgotten("ns", "c");
        assert!(!metrics.encode().contains(r#"name="c""#));
    }

    #[test]
    fn longest_running_reconcile_is_measured_until_it_ends() {
        let metrics = Arc::new(Metrics::new());
        let running = metrics.reconcile_started();
        std::thread::sleep(Duration::from_millis(20));
        let gauge = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap()
                .parse()
                .unwrap()
        };
        let text = metrics.encode();
        assert!(gauge(&text, "secprov_reconcile_longest_running_seconds") >= 0.02);
        assert_eq!(gauge(&text, "secprov_reconciles_in_flight"), 1.0);
        drop(running);
        let text = metrics.encode();
        assert_eq!(
            gauge(&text, "secprov_reconcile_longest_running_seconds"),
            0.0
        );
        assert_eq!(gauge(&text, "secprov_reconciles_in_flight"), 0.0);
    }
}
