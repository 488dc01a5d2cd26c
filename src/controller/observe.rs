//! Observing a SecurityProvider's remote provider: a batch snapshot for resyncs of objects in
//! sync, else a direct read; then who owns what was found, confirmed with a fresh read of the
//! object before it is called someone else's. The controller and `secprov-operator plan`
//! both go through [`observe_and_plan`], so they cannot disagree on what they find.
use kube::ResourceExt;
use kube::api::Api;

use super::handle::{ConnectionHandle, Remote};
use super::ownership;
use super::plan::{Plan, PlanInput, plan};
use crate::api::{CREATE_PENDING_ANNOTATION, PAUSED_ANNOTATION, SecurityProvider};
use crate::backend::{ObservedProvider, ProviderConfig, ProviderKey};
use crate::error::Error;

/// What one reconcile knows before it acts.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The configuration the spec asks for.
    pub desired: ProviderConfig,
    /// How the remote provider is looked up.
    pub key: ProviderKey,
    /// What was found, and from where.
    pub remote: Remote,
    /// This object created or adopted the remote provider before (status.remoteId or the
    /// create-pending marker, confirmed on a fresh read of the object).
    pub owned: bool,
}

impl Observation {
    /// The plan for this observation (pure; see [`super::plan`]).
    pub fn plan(&self, sp: &SecurityProvider) -> Plan {
        plan(&PlanInput {
            desired: &self.desired,
            observed: self.remote.provider(),
            owned: self.owned,
            adopt: sp.spec.adopt.unwrap_or(false),
            observe_only: sp.observe_only(),
            paused: is_paused(sp),
        })
    }
}

/// Whether the `secprov.dev/paused` annotation suspends remote writes.
pub fn is_paused(sp: &SecurityProvider) -> bool {
    sp.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether a create was started and its remote id not recorded yet.
pub fn create_pending(sp: &SecurityProvider) -> bool {
    sp.annotations().contains_key(CREATE_PENDING_ANNOTATION)
}

/// The remote id recorded in status.
pub fn recorded_remote_id(sp: &SecurityProvider) -> Option<String> {
    sp.status.as_ref().and_then(|s| s.remote_id.clone())
}

/// Reads the remote provider: from the connection's snapshot when `may_use_snapshot` and the
/// remote id is known and the snapshot has it, else directly.
pub async fn observe(
    sp: &SecurityProvider,
    desired: ProviderConfig,
    connection: &ConnectionHandle<'_>,
    api: &Api<SecurityProvider>,
    may_use_snapshot: bool,
) -> Result<Observation, Error> {
    let key = ProviderKey {
        id: desired.lookup_key().to_owned(),
        known_remote_id: recorded_remote_id(sp),
    };
    let snapshot_hit = match (&key.known_remote_id, may_use_snapshot) {
        (Some(remote_id), true) => connection.read_snapshot(remote_id).await,
        _ => None,
    };
    let mut remote = match snapshot_hit {
        Some(hit) => hit,
        None => Remote::Fresh(connection.read(&key).await?),
    };
    // What the main read (or the batch snapshot) does not carry is read fresh every time:
    // drift in it must be seen at every resync.
    if let Some(found) = remote.provider_mut() {
        connection.read_details(Some(&desired), found).await?;
    }
    let owned = confirm_ownership(sp, api, remote.provider()).await?;
    Ok(Observation {
        desired,
        key,
        remote,
        owned,
    })
}

/// Whether this object owns the provider it found: recorded under this id, or carrying the
/// evidence of our own pending create attempt (a provider found by name or id alone may be
/// anyone's). The cached object may lag behind our own writes (the create-pending marker,
/// status.remoteId), so before calling a found provider someone else's, read the object
/// fresh: a stale cache must never turn our own provider into a foreign one.
async fn confirm_ownership(
    sp: &SecurityProvider,
    api: &Api<SecurityProvider>,
    found: Option<&ObservedProvider>,
) -> Result<bool, Error> {
    let Some(found) = found else {
        return Ok(false);
    };
    if ownership::owns(sp, found) || sp.spec.adopt.unwrap_or(false) {
        return Ok(ownership::owns(sp, found));
    }
    Ok(api
        .get_opt(&sp.name_any())
        .await?
        .is_some_and(|fresh| ownership::owns(&fresh, found)))
}

/// Observes and plans. A write is never planned from a snapshot: when the snapshot's view
/// calls for one, the provider is read again directly and the plan made from that.
pub async fn observe_and_plan(
    sp: &SecurityProvider,
    desired: ProviderConfig,
    connection: &ConnectionHandle<'_>,
    api: &Api<SecurityProvider>,
    may_use_snapshot: bool,
) -> Result<(Observation, Plan), Error> {
    let observation = observe(sp, desired.clone(), connection, api, may_use_snapshot).await?;
    let decision = observation.plan(sp);
    if observation.remote.is_snapshot() && decision.writes() {
        let fresh = observe(sp, desired, connection, api, false).await?;
        let decision = fresh.plan(sp);
        return Ok((fresh, decision));
    }
    Ok((observation, decision))
}

/// The refresh annotation value, when it asks for a refresh not handled yet and writes are
/// allowed.
pub fn refresh_to_handle(sp: &SecurityProvider) -> Option<String> {
    let value = sp.annotations().get(crate::api::REFRESH_ANNOTATION)?;
    let handled = sp
        .status
        .as_ref()
        .and_then(|s| s.last_handled_refresh_at.as_ref());
    (handled != Some(value) && !sp.observe_only() && !is_paused(sp)).then(|| value.clone())
}
