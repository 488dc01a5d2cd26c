//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas can run with one
//! active. Follows client-go's `leaderelection` semantics: a candidate takes the Lease when it
//! has no holder, or when the holder has not renewed it for `lease_duration` **as measured on
//! the candidate's own clock since it last saw the record change** (no trust in other
//! machines' clocks); the leader renews every `retry_period` and gives up when it could not
//! renew for `renew_deadline`. Writes use the Lease's resourceVersion, so two candidates can
//! never both win the same round.
//!
//! Why not a crate: `kube-leader-election` (0.44, the maintained one) depends on kube 4, and
//! kube-runtime 5 has no elector; pulling a second kube major would duplicate the client stack
//! and its types would not mix with ours. This is the ~200 lines we need.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{debug, info, warn};

/// Timing and naming of the election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity, written as `holderIdentity`.
    pub identity: String,
    /// How long a Lease that is not renewed stays valid for the others.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up leadership.
    pub renew_deadline: Duration,
    /// Time between attempts (acquire and renew).
    pub retry_period: Duration,
}

/// The identity of this replica: `POD_NAME` in a cluster, otherwise `hostname-pid`.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "secprov-operator".into());
    format!("{host}-{}", std::process::id())
}

/// The Lease record as last seen, and when this replica saw it change.
struct Observed {
    record: Option<(String, Option<MicroTime>)>,
    at: Instant,
}

/// One candidate in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Mutex<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(Observed {
                record: None,
                at: Instant::now(),
            }),
        }
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    fn now() -> MicroTime {
        MicroTime(jiff::Timestamp::now())
    }

    fn duration_seconds(&self) -> i32 {
        self.config
            .lease_duration
            .as_secs()
            .clamp(1, i32::MAX as u64) as i32
    }

    /// Whether the current holder's term is over, judged by how long this replica has seen
    /// the same record (holder + renewTime) unchanged.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = (
            spec.holder_identity.clone().unwrap_or_default(),
            spec.renew_time.clone(),
        );
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record);
            observed.at = Instant::now();
        }
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.config.lease_duration);
        observed.at.elapsed() >= duration
    }

    /// One round: create the Lease, renew it when we hold it, or take it over when its holder
    /// is gone. Ok(true) when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let name = &self.config.lease_name;
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(Self::now()),
                    renew_time: Some(Self::now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.config.identity;
        if !ours && !holder.is_empty() && !self.expired(spec) {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(Self::now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(Self::now());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        // replace() sends our resourceVersion: a concurrent writer makes this fail with 409.
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if !ours {
                    info!(previous = %holder, "took over the leader Lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica is the leader.
    pub async fn acquire(&self) {
        info!(lease = %self.config.lease_name, namespace = %self.config.namespace, identity = %self.config.identity, "waiting for leadership");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(false) => debug!("another replica leads"),
                Err(e) => warn!(error = %e, "cannot read or write the leader Lease"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews the Lease until leadership is lost (another replica took it, or renewing failed
    /// for `renew_deadline`); then returns.
    pub async fn hold(&self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    warn!("another replica holds the leader Lease");
                    return;
                }
                Ok(Err(e)) => warn!(error = %e, "cannot renew the leader Lease"),
                Err(_) => warn!("renewing the leader Lease timed out"),
            }
            if last_renewed.elapsed() >= self.config.renew_deadline {
                warn!(deadline = ?self.config.renew_deadline, "could not renew the leader Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (at shutdown) so a standby takes over at once instead of after
    /// `lease_duration`. Best effort.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(Self::now());
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the leader Lease"),
            Err(e) => warn!(error = %e, "cannot release the leader Lease"),
        }
    }
}

/// `period` plus up to 20 % so candidates don't retry in lockstep.
fn jittered(period: Duration) -> Duration {
    let millis = period.as_millis() as u64;
    Duration::from_millis(millis + rand::random_range(0..=millis / 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elector() -> LeaderElector {
        // Never contacted: only the expiry bookkeeping is exercised.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        LeaderElector::new(
            Client::try_from(config).unwrap(),
            ElectionConfig {
                namespace: "ns".into(),
                lease_name: "secprov-operator".into(),
                identity: "me".into(),
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
            },
        )
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(1),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_lease_expires_after_its_duration_unchanged_on_our_own_clock() {
        let elector = elector();
        // The holder's renewTime is far in the past by our clock, but a first sighting still
        // waits a full duration: other machines' clocks are not trusted.
        let lease = held_by("other", "2000-01-01T00:00:00Z");
        assert!(!elector.expired(&lease));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(elector.expired(&lease), "unchanged for the lease duration");
        // A renewal restarts the wait.
        let renewed = held_by("other", "2000-01-01T00:00:05Z");
        assert!(!elector.expired(&renewed));
    }

    #[test]
    fn identity_prefers_pod_name() {
        // POD_NAME is not set in tests: hostname-pid.
        if std::env::var("POD_NAME").is_err() {
            assert!(default_identity().ends_with(&format!("-{}", std::process::id())));
        }
    }
}
