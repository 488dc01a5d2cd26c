//! What `/healthz` and `/readyz` answer. Ready: the caches are filled (or this replica is a
//! standby, whose job is to wait). Healthy: not wedged. Wedged means a watch has only failed
//! for [`WATCH_DEAD_AFTER`] (its cache no longer follows the cluster), or a reconcile has been
//! running far past its deadline (the reconcile machinery is stuck, and with it the work
//! queued behind it). Kubernetes restarts a container whose liveness probe fails, which also
//! makes a wedged leader give up its Lease.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A watch that has seen only errors for this long is dead.
pub const WATCH_DEAD_AFTER: Duration = Duration::from_secs(300);

/// Readiness and liveness of the controller.
pub struct Health {
    ready: AtomicBool,
    /// Per watch: since when it has failed without a success in between (None: fine).
    watches: Mutex<HashMap<&'static str, Option<Instant>>>,
    /// A reconcile running longer than this is stuck (it has a deadline well below).
    stall_limit: Duration,
}

impl Health {
    /// Not ready, no watch yet; `reconcile_timeout` is the deadline of one reconcile's remote
    /// work: a reconcile is stuck at twice that plus a minute (Kubernetes calls included).
    pub fn new(reconcile_timeout: Duration) -> Self {
        Health {
            ready: AtomicBool::new(false),
            watches: Mutex::new(HashMap::new()),
            stall_limit: reconcile_timeout * 2 + Duration::from_secs(60),
        }
    }

    /// Sets readiness (caches synced, or waiting as a standby).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers ok.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records one event of watch `name`: a success, or an error.
    pub fn watch_event(&self, name: &'static str, ok: bool, now: Instant) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let failing_since = watches.entry(name).or_insert(None);
        match (ok, *failing_since) {
            (true, _) => *failing_since = None,
            (false, None) => *failing_since = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// Why the controller is wedged, if it is. `longest_running` is the age of the oldest
    /// running reconcile.
    pub fn wedged(&self, longest_running: Option<Duration>, now: Instant) -> Option<String> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for (name, failing_since) in watches.iter() {
            if let Some(since) = failing_since
                && now.saturating_duration_since(*since) >= WATCH_DEAD_AFTER
            {
                return Some(format!(
                    "the {name} watch has failed for {}s without a success",
                    now.saturating_duration_since(*since).as_secs()
                ));
            }
        }
        match longest_running {
            Some(age) if age >= self.stall_limit => Some(format!(
                "a reconcile has been running for {}s (stuck past its deadline)",
                age.as_secs()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_for_five_minutes_is_wedged_and_one_success_heals_it() {
        let health = Health::new(Duration::from_secs(120));
        let t0 = Instant::now();
        health.watch_event("providers", true, t0);
        assert_eq!(health.wedged(None, t0), None);
        health.watch_event("providers", false, t0);
        health.watch_event("providers", false, t0 + Duration::from_secs(200));
        assert_eq!(health.wedged(None, t0 + Duration::from_secs(299)), None);
        let why = health.wedged(None, t0 + Duration::from_secs(300)).unwrap();
        assert!(why.contains("providers watch"), "{why}");
        health.watch_event("providers", true, t0 + Duration::from_secs(301));
        assert_eq!(health.wedged(None, t0 + Duration::from_secs(900)), None);
    }

    #[test]
    fn a_reconcile_stuck_past_its_deadline_is_wedged() {
        let health = Health::new(Duration::from_secs(120));
        let now = Instant::now();
        assert_eq!(health.wedged(Some(Duration::from_secs(299)), now), None);
        let why = health.wedged(Some(Duration::from_secs(300)), now).unwrap();
        assert!(why.contains("running for 300s"), "{why}");
    }

    #[test]
    fn not_ready_until_told() {
        let health = Health::new(Duration::from_secs(1));
        assert!(!health.is_ready());
        health.set_ready(true);
        assert!(health.is_ready());
    }
}
