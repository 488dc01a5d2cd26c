//! In-memory simulators of the remote APIs the operator talks to.
//!
//! The operator's tests and demo run against these instead of the real SaaS systems, so each
//! simulator aims to behave like the real API (status codes, error bodies, lifecycles), not like
//! our client happens to expect. Every simulator is an axum server on the current tokio runtime.
//!
//! This module holds the pieces every simulator shares: request counters, request ids, a server
//! handle with graceful shutdown, and the Ctrl-C/SIGTERM wait used by standalone binaries.
#![forbid(unsafe_code)]
// Handlers return a ready axum `Response` as their error: built on the error path only.
#![allow(clippy::result_large_err)]

pub mod coveo;
pub mod faults;
mod harness;
pub mod hostile;
pub mod jitsudo;
pub mod keystone;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long `ServerHandle::shutdown` waits for in-flight requests before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Locks a mutex, ignoring poisoning: a panicking test thread must not take the simulator down
/// for every other test sharing it, and all guarded state stays structurally valid between
/// statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Thread-safe request counters keyed by HTTP method and operation name (e.g. `"get"`,
/// `"create"`). Cheap to clone; clones share the same counts.
#[derive(Clone, Debug, Default)]
pub struct RequestCounters {
    counts: Arc<Mutex<HashMap<(String, String), u64>>>,
}

/// A point-in-time copy of [`RequestCounters`], shaped for JSON (`GET /_sim/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterSnapshot {
    pub total: u64,
    pub by_method: BTreeMap<String, u64>,
    pub by_operation: BTreeMap<String, u64>,
    /// Keys are `"<METHOD> <operation>"`, e.g. `"GET get"`.
    pub by_method_and_operation: BTreeMap<String, u64>,
}

impl RequestCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one request. Methods are case-insensitive (stored upper-case).
    pub fn record(&self, method: &str, operation: &str) {
        let key = (method.to_ascii_uppercase(), operation.to_owned());
        *lock(&self.counts).entry(key).or_insert(0) += 1;
    }

    /// Requests with this HTTP method, whatever the operation.
    pub fn count(&self, method: &str) -> u64 {
        self.sum_where(|m, _| m.eq_ignore_ascii_case(method))
    }

    /// Requests with this HTTP method and operation name.
    pub fn count_for(&self, method: &str, operation: &str) -> u64 {
        self.sum_where(|m, op| m.eq_ignore_ascii_case(method) && op == operation)
    }

    /// Requests for this operation name, whatever the method.
    pub fn count_operation(&self, operation: &str) -> u64 {
        self.sum_where(|_, op| op == operation)
    }

    pub fn total(&self) -> u64 {
        self.sum_where(|_, _| true)
    }

    pub fn reset(&self) {
        lock(&self.counts).clear();
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let mut snapshot = CounterSnapshot::default();
        for ((method, operation), count) in lock(&self.counts).iter() {
            snapshot.total += count;
            *snapshot.by_method.entry(method.clone()).or_insert(0) += count;
            *snapshot.by_operation.entry(operation.clone()).or_insert(0) += count;
            let both = format!("{method} {operation}");
            *snapshot.by_method_and_operation.entry(both).or_insert(0) += count;
        }
        snapshot
    }

    fn sum_where(&self, matches: impl Fn(&str, &str) -> bool) -> u64 {
        lock(&self.counts)
            .iter()
            .filter(|((method, operation), _)| matches(method, operation))
            .map(|(_, count)| count)
            .sum()
    }
}

/// A random, UUID-v4-shaped request id, as real APIs return in `X-Request-ID`.
pub fn new_request_id() -> String {
    let bits: u128 = rand::random();
    // Set the version (4) and variant (10xx) bits so the value parses as a real UUID v4.
    let bits = (bits & !(0xF << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `http://HOST:PORT` for a bound address. A wildcard bind (0.0.0.0 / ::) is reported as
/// loopback, since the wildcard is not a connectable address.
pub fn base_url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A running axum server with graceful shutdown. Shared by all simulators.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl ServerHandle {
    /// Binds `addr` (port 0 picks a free port) and serves `router` on a spawned tokio task.
    pub async fn spawn(addr: SocketAddr, router: axum::Router) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // An error means the handle was dropped: stop serving then too.
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        Ok(Self {
            local_addr,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn base_url(&self) -> String {
        base_url_for(self.local_addr)
    }

    /// Stops accepting connections and waits (bounded) for in-flight requests to finish.
    /// Idempotent: later calls return at once.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        let Some(mut task) = task else { return };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "simulator server stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "simulator server task failed"),
            Err(_) => {
                tracing::warn!("simulator server did not stop in time; aborting it");
                task.abort();
            }
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM, for standalone simulator processes.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_by_method_and_operation() {
        let counters = RequestCounters::new();
        counters.record("get", "get");
        counters.record("GET", "list");
        counters.record("POST", "create");
        assert_eq!(counters.count("GET"), 2);
        assert_eq!(counters.count_for("get", "list"), 1);
        assert_eq!(counters.count_operation("create"), 1);
        assert_eq!(counters.total(), 3);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.by_method["GET"], 2);
        assert_eq!(snapshot.by_method_and_operation["POST create"], 1);
        counters.reset();
        assert_eq!(counters.total(), 0);
    }

    #[test]
    fn request_ids_look_like_uuid_v4() {
        let id = new_request_id();
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'));
        assert!(matches!(
            groups[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn wildcard_bind_is_reported_as_loopback() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().expect("valid address");
        assert_eq!(base_url_for(addr), "http://127.0.0.1:8080");
        let addr: SocketAddr = "[::]:81".parse().expect("valid address");
        assert_eq!(base_url_for(addr), "http://[::1]:81");
    }
}
