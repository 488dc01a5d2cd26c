//! Observing a SecurityProvider's remote provider: a batch snapshot for resyncs of objects in
//! sync, else a direct read; then who owns what was found, confirmed with a fresh read of the
//! object before it is called someone else's. The controller and `secprov-operator plan`
//! both go through [`observe_and_plan`], so they cannot disagree on what they find.
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::claims::{Claims, Holder};
use super::handle::{ConnectionHandle, Remote};
use super::ownership;
use super::plan::{Plan, PlanInput, plan};
use crate::api::security_provider::Ownership;
use crate::api::{PAUSED_ANNOTATION, REMOTE_SYSTEM_CHANGE_ANNOTATION, SecurityProvider};
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
    /// This object created or adopted the remote provider before (status.remoteId for this
    /// remote system, or the create-pending marker, confirmed on a fresh read of the object).
    pub owned: bool,
    /// The remote system the connection reaches now (recorded next to status.remoteId).
    pub system: Option<Ownership>,
    /// status.remoteId was recorded for another remote system than the connection reaches now
    /// (the connection, or `spec.connectionRef`, was pointed elsewhere).
    pub retarget: Option<Retarget>,
    /// Another object (`namespace/name`) that already manages the provider found, when this
    /// one would adopt it.
    pub managed_by: Option<String>,
}

impl Observation {
    /// The plan for this observation (pure; see [`super::plan`]).
    pub fn plan(&self, sp: &SecurityProvider) -> Plan {
        plan(&PlanInput {
            desired: &self.desired,
            observed: self.remote.provider(),
            owned: self.owned,
            retarget: self.retarget.as_ref(),
            managed_by: self.managed_by.as_deref(),
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

/// Whether a create was started and its remote id not recorded yet: a create-pending marker
/// that is not spent (see [`ownership::pending_marker`]).
pub fn create_pending(sp: &SecurityProvider) -> bool {
    ownership::pending_marker(sp).is_some()
}

/// The remote id recorded in status.
pub fn recorded_remote_id(sp: &SecurityProvider) -> Option<String> {
    sp.status.as_ref().and_then(|s| s.remote_id.clone())
}

/// The Kubernetes APIs an observation reads: the object's namespace (fresh reads of the
/// object), and who else manages a remote provider.
#[derive(Clone, Copy)]
pub struct Apis<'a> {
    /// SecurityProviders of the object's namespace.
    pub namespace: &'a Api<SecurityProvider>,
    /// How other managers are found.
    pub managers: Managers<'a>,
}

/// How an observation learns whether another object manages the provider.
#[derive(Clone, Copy)]
pub enum Managers<'a> {
    /// The controller: the claims (see [`super::claims`]), taken before any remote write or
    /// adoption and checked from their cache at every reconcile.
    Claims(&'a Claims),
    /// A dry run (`secprov-operator plan`, and the reconcile's unit tests, which have no
    /// Lease API): one LIST of the SecurityProviders the caller may see; nothing is claimed.
    Listed(&'a Api<SecurityProvider>),
}

impl<'a> Managers<'a> {
    /// The claims when there are (the controller), else a LIST through `cluster`.
    pub fn new(claims: Option<&'a Claims>, cluster: &'a Api<SecurityProvider>) -> Self {
        match claims {
            Some(claims) => Managers::Claims(claims),
            None => Managers::Listed(cluster),
        }
    }
}

/// A remote id recorded in another remote system than the connection reaches now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retarget {
    /// The remote id status records.
    pub remote_id: String,
    /// The remote system it was recorded in (canonical).
    pub from: String,
    /// The remote system the connection reaches now (canonical).
    pub to: String,
    /// The `secprov.dev/remote-system-change` annotation names `to`: manage a provider there
    /// and leave `remote_id` in `from`.
    pub acknowledged: bool,
}

/// Reads the remote provider: from the connection's snapshot when `may_use_snapshot` and the
/// remote id is known and the snapshot has it, else directly.
pub async fn observe(
    sp: &SecurityProvider,
    desired: ProviderConfig,
    connection: &ConnectionHandle<'_>,
    apis: Apis<'_>,
    may_use_snapshot: bool,
) -> Result<Observation, Error> {
    let system = connection.connection().ownership();
    let key = ProviderKey {
        id: desired.lookup_key().to_owned(),
        known_remote_id: ownership::recorded_in(sp, system.as_ref()).map(str::to_owned),
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
    let owned = confirm_ownership(sp, apis.namespace, remote.provider(), system.as_ref()).await?;
    let retarget = retarget(sp, system.as_ref());
    let managed_by = match (&system, &retarget) {
        (Some(system), None)
        | (
            Some(system),
            Some(Retarget {
                acknowledged: true, ..
            }),
        ) => {
            let found = remote.provider();
            other_manager(sp, apis.managers, system, &key.id, found, owned).await?
        }
        _ => None,
    };
    Ok(Observation {
        desired,
        key,
        remote,
        owned,
        retarget: retarget.filter(|_| !owned),
        system,
        managed_by,
    })
}

/// The remote system change status shows, if status.remoteId was recorded elsewhere.
fn retarget(sp: &SecurityProvider, system: Option<&Ownership>) -> Option<Retarget> {
    if !ownership::recorded_elsewhere(sp, system) {
        return None;
    }
    let status = sp.status.as_ref()?;
    let to = system.map(Ownership::system_key).unwrap_or_default();
    let acknowledged = sp
        .annotations()
        .get(REMOTE_SYSTEM_CHANGE_ANNOTATION)
        .is_some_and(|value| value.trim() == to);
    Some(Retarget {
        remote_id: status.remote_id.clone()?,
        from: status
            .ownership
            .as_ref()
            .map(Ownership::system_key)
            .unwrap_or_else(|| "an unrecorded remote system".into()),
        to,
        acknowledged,
    })
}

/// Another object (`namespace/name`) that manages the provider `provider` of `system`, so this
/// one must neither write nor delete it. Observe-only objects never claim (they never write).
async fn other_manager(
    sp: &SecurityProvider,
    managers: Managers<'_>,
    system: &Ownership,
    provider: &str,
    found: Option<&ObservedProvider>,
    owned: bool,
) -> Result<Option<String>, Error> {
    let adopt = sp.spec.adopt.unwrap_or(false);
    if sp.observe_only() || (found.is_some() && !owned && !adopt) {
        // Someone else's provider this object will not touch (AlreadyExists): claiming it
        // would block the object that may legitimately adopt it.
        return Ok(None);
    }
    match managers {
        Managers::Claims(claims) => {
            let own_age = match claims.acquire(sp, system, provider).await? {
                Holder::Other(holder) => return Ok(Some(holder)),
                Holder::Us(age) => age,
            };
            // Another object may have claimed this very provider first through another name
            // of the endpoint: then it is the owner, and this object keeps no claim.
            let token_uid = found
                .and_then(|f| f.config.creation_token())
                .and_then(|token| ownership::token_owner(&token).map(str::to_owned));
            let older = claims
                .alias_owner(sp, system, provider, token_uid.as_deref(), Some(&own_age))
                .await?;
            if older.is_some() {
                claims.give_back(sp, system, provider).await?;
            }
            Ok(older)
        }
        Managers::Listed(cluster) => match found {
            Some(found) if !owned => listed_manager(sp, cluster, &found.remote_id, system).await,
            _ => Ok(None),
        },
    }
}

/// Another object that manages the provider `remote_id` of `system` (`namespace/name`), from
/// one LIST: adopting it as well would make two objects overwrite each other for ever.
async fn listed_manager(
    sp: &SecurityProvider,
    cluster: &Api<SecurityProvider>,
    remote_id: &str,
    system: &Ownership,
) -> Result<Option<String>, Error> {
    let all = cluster.list(&ListParams::default()).await?;
    Ok(all
        .items
        .iter()
        .find(|other| other.uid() != sp.uid() && ownership::manages(other, remote_id, Some(system)))
        .map(|other| {
            format!(
                "{}/{}",
                other.namespace().unwrap_or_default(),
                other.name_any()
            )
        }))
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
    system: Option<&Ownership>,
) -> Result<bool, Error> {
    let Some(found) = found else {
        return Ok(false);
    };
    if ownership::owns(sp, found, system) {
        return Ok(true);
    }
    Ok(api
        .get_opt(&sp.name_any())
        .await?
        .is_some_and(|fresh| ownership::owns(&fresh, found, system)))
}

/// Observes and plans. A write is never planned from a snapshot: when the snapshot's view
/// calls for one, the provider is read again directly and the plan made from that.
pub async fn observe_and_plan(
    sp: &SecurityProvider,
    desired: ProviderConfig,
    connection: &ConnectionHandle<'_>,
    apis: Apis<'_>,
    may_use_snapshot: bool,
) -> Result<(Observation, Plan), Error> {
    let observation = observe(sp, desired.clone(), connection, apis, may_use_snapshot).await?;
    let decision = observation.plan(sp);
    if observation.remote.is_snapshot() && decision.writes() {
        let fresh = observe(sp, desired, connection, apis, false).await?;
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
