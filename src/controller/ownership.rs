//! Who owns a remote provider found under this object's id: the create-pending marker that
//! identifies one create attempt (object uid plus a random attempt id), the evidence a create
//! leaves on the remote provider, and which create failures provably created nothing. Pure.
use kube::ResourceExt;

use crate::api::security_provider::{Ownership, SecurityProviderStatus};
use crate::api::{CREATE_PENDING_ANNOTATION, SecurityProvider};
use crate::backend::ObservedProvider;
use crate::error::RemoteErrorKind;

/// The create-pending marker: set before a create, kept (with the same attempt id) while a
/// create may have landed without an answer. Once status records the remote id the attempt
/// made, with the attempt in `status.createAttempt`, the marker is spent: it stays on the
/// object (removing it would cost a write per create) but stands for no pending create. It is
/// removed when no send of the attempt can have created anything (see
/// [`CreateMarker::settled_by`]) or another remote id is recorded over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateMarker {
    /// uid of the object that set the marker (a marker copied onto another object is void).
    pub uid: String,
    /// Random id of the attempt.
    pub attempt: String,
    /// The marker was found on the object, not made for this create: the attempt may have
    /// been sent before, and a send whose answer was lost may still land later (a slow
    /// backend commits it after the client gave up).
    pub resumed: bool,
}

impl CreateMarker {
    /// A new attempt for `sp`.
    pub fn new(sp: &SecurityProvider) -> CreateMarker {
        CreateMarker {
            uid: sp.uid().unwrap_or_default(),
            attempt: format!("{:016x}", rand::random::<u64>()),
            resumed: false,
        }
    }

    /// The pending marker on `sp`, if it is one this object set. A marker without an attempt
    /// id (set by an earlier version) or with another object's uid identifies no attempt of
    /// ours; a spent one ([`pending_marker`]) identifies one that is over, never resumed: a
    /// new create takes a new attempt id.
    pub fn of(sp: &SecurityProvider) -> Option<CreateMarker> {
        let value = pending_marker(sp)?;
        let (uid, attempt) = value.split_once('/')?;
        (Some(uid) == sp.uid().as_deref() && !attempt.is_empty()).then(|| CreateMarker {
            uid: uid.to_owned(),
            attempt: attempt.to_owned(),
            resumed: true,
        })
    }

    /// The annotation value, also the token left on the remote provider as evidence.
    pub fn token(&self) -> String {
        format!("{}/{}", self.uid, self.attempt)
    }

    /// Whether `found` carries the evidence of this attempt.
    pub fn made(&self, found: &ObservedProvider) -> bool {
        found.config.creation_token().as_deref() == Some(self.token().as_str())
    }

    /// Whether a send of this attempt that failed with `kind` leaves nothing of the attempt
    /// that can still land remotely, so the marker may go: the send was refused and it was
    /// the attempt's first. A refusal of a resumed attempt says nothing about its earlier
    /// sends: were the marker dropped, the provider such a send makes later would carry a
    /// token the object no longer holds, and the object would take its own provider for
    /// someone else's (AlreadyExists for ever).
    pub fn settled_by(&self, kind: RemoteErrorKind) -> bool {
        !self.resumed && created_nothing(kind)
    }
}

/// The create-pending marker on `sp` unless it is spent: status records it as the attempt
/// whose create made `remoteId` (`status.createAttempt`), so that create is over.
pub fn pending_marker(sp: &SecurityProvider) -> Option<&str> {
    let value = sp.annotations().get(CREATE_PENDING_ANNOTATION)?;
    let spent = sp
        .status
        .as_ref()
        .and_then(SecurityProviderStatus::recorded_attempt);
    (spent != Some(value.as_str())).then_some(value.as_str())
}

/// The create-pending marker the object holds, spent or not: the annotation, else the attempt
/// status records. The cache drops a spent marker (`watches::drop_spent_marker`), so status's
/// `createAttempt` stands for it: a remote id recorded over it otherwise than by a create (an
/// adoption after a confirmed change of remote system) must still remove it from the object.
/// Where the annotation is really gone, that removal is a write that changes nothing.
pub fn marker_on(sp: &SecurityProvider) -> Option<&str> {
    sp.annotations()
        .get(CREATE_PENDING_ANNOTATION)
        .map(String::as_str)
        .or_else(|| sp.status.as_ref()?.recorded_attempt())
}

/// Whether the create-pending marker `marker` (the one on the object after a reconcile) must
/// be removed once `recorded` is stored as status. A spent marker (`recorded` names it as the
/// attempt that made `remoteId`) stays: removing it would cost a write per create. Any other
/// marker goes once its attempt is settled: no send of it can have created anything
/// (`create_refused`), or the reconcile read the provider recorded under `remoteId`
/// (`provider_seen`), so the lookup key is taken by ours and no send can make a second one;
/// this also removes the markers an earlier version left beside a recorded remote id, and one
/// a new remote id was recorded over. A remote id recorded before a new attempt (its provider
/// deleted out of band) settles nothing while that provider is not read again: the attempt's
/// create may still land, and its provider must be found as this object's own.
pub fn marker_settled(
    marker: Option<&str>,
    create_refused: bool,
    recorded: &SecurityProviderStatus,
    provider_seen: bool,
) -> bool {
    let Some(marker) = marker else {
        return false;
    };
    let spent = recorded.recorded_attempt() == Some(marker);
    !spent && (create_refused || (recorded.remote_id.is_some() && provider_seen))
}

/// Whether a create that failed this way provably created nothing remotely: the request was
/// refused (4xx, 409 included). A timeout, a 5xx, a dropped connection or an unreadable 2xx
/// answer may hide a create that landed.
pub fn created_nothing(kind: RemoteErrorKind) -> bool {
    !matches!(
        kind,
        RemoteErrorKind::Timeout | RemoteErrorKind::Unavailable | RemoteErrorKind::BadResponse
    )
}

/// The remote id status records as this object's in the remote system `system` (the
/// connection's current one). None when nothing is recorded, or it was recorded for another
/// remote system (the connection was pointed elsewhere since): the same id there is another
/// provider.
pub fn recorded_in<'a>(sp: &'a SecurityProvider, system: Option<&Ownership>) -> Option<&'a str> {
    let status = sp.status.as_ref()?;
    let id = status.remote_id.as_deref()?;
    let ours = match (&status.ownership, system) {
        (Some(recorded), Some(current)) => recorded.same_remote_system(current),
        (Some(_), None) => false,
        (None, _) => legacy_claim(status),
    };
    ours.then_some(id)
}

/// A remote id recorded before its remote system was (an earlier version of the operator):
/// ours, unless it was recorded while only observing (which no longer records it).
fn legacy_claim(status: &SecurityProviderStatus) -> bool {
    !status
        .conditions
        .iter()
        .any(|c| c.type_ == super::status::SYNCED && c.reason == super::plan::REASON_OBSERVE_ONLY)
}

/// Whether status records a remote id for a remote system other than `system`.
pub fn recorded_elsewhere(sp: &SecurityProvider, system: Option<&Ownership>) -> bool {
    let recorded = sp.status.as_ref().and_then(|s| s.remote_id.as_deref());
    recorded.is_some() && recorded_in(sp, system).is_none()
}

/// Whether this object owns `found`, a provider under its id in the remote system `system`:
/// it recorded it in status before (for that system), or it carries the evidence of this
/// object's own pending create attempt.
pub fn owns(sp: &SecurityProvider, found: &ObservedProvider, system: Option<&Ownership>) -> bool {
    recorded_in(sp, system) == Some(found.remote_id.as_str())
        || CreateMarker::of(sp).is_some_and(|marker| marker.made(found))
        || reached_under_another_name(sp, found)
}

/// Whether `found` is the very provider status records, reached through another spelling of
/// its remote system (`localhost` for `127.0.0.1`, a second DNS name): it has the recorded id
/// and carries this object's own creation evidence, which no other object's write leaves.
fn reached_under_another_name(sp: &SecurityProvider, found: &ObservedProvider) -> bool {
    let recorded = sp.status.as_ref().and_then(|s| s.remote_id.as_deref());
    recorded == Some(found.remote_id.as_str())
        && found
            .config
            .creation_token()
            .is_some_and(|token| token_of(sp, &token))
}

/// Whether the creation evidence `token` was left by `sp` (by a create or by an update).
pub fn token_of(sp: &SecurityProvider, token: &str) -> bool {
    let uid = sp.uid().unwrap_or_default();
    !uid.is_empty() && token_owner(token) == Some(uid.as_str())
}

/// The uid of the object that left the evidence `token` (`<uid>/<attempt>`).
pub fn token_owner(token: &str) -> Option<&str> {
    token.split_once('/').map(|(owner, _)| owner)
}

/// The evidence an update leaves on the provider: the token it carries if this object left
/// it, else a new one of this object (an adopted provider then names its new owner, so an
/// object reaching it under another spelling of the endpoint sees who manages it).
pub fn update_token(sp: &SecurityProvider, current: &ObservedProvider) -> String {
    match current.config.creation_token() {
        Some(token) if token_of(sp, &token) => token,
        _ => format!("{}/adopted", sp.uid().unwrap_or_default()),
    }
}

/// Whether `other`, another object, manages the provider `remote_id` of `system`: its status
/// records that id for that remote system (or, recorded by an earlier version, without one).
pub fn manages(other: &SecurityProvider, remote_id: &str, system: Option<&Ownership>) -> bool {
    let Some(status) = other.status.as_ref() else {
        return false;
    };
    status.remote_id.as_deref() == Some(remote_id)
        && match (&status.ownership, system) {
            (Some(recorded), Some(current)) => recorded.same_remote_system(current),
            (None, _) => legacy_claim(status),
            (Some(_), None) => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::{CoveoProviderSpec, CreateAttempt};
    use crate::backend::coveo::CoveoConfig;
    use crate::backend::{ProviderConfig, RemoteHealth, RemoteState};

    fn object(uid: &str, marker: Option<&str>) -> SecurityProvider {
        let mut sp = SecurityProvider::new(
            "p",
            serde_json::from_value(serde_json::json!({"connectionRef": "c", "coveo": {}})).unwrap(),
        );
        sp.metadata.uid = Some(uid.into());
        if let Some(value) = marker {
            sp.metadata.annotations =
                Some([(CREATE_PENDING_ANNOTATION.to_owned(), value.to_owned())].into());
        }
        sp
    }

    fn found(token: Option<&str>) -> ObservedProvider {
        let config = ProviderConfig::Coveo(CoveoConfig::desired(
            "p",
            "p",
            &CoveoProviderSpec::default(),
        ));
        ObservedProvider {
            remote_id: "p".into(),
            config: token.map_or(config.clone(), |t| config.with_creation_token(t)),
            state: RemoteState::default(),
            health: RemoteHealth::Healthy,
        }
    }

    #[test]
    fn a_pending_marker_owns_only_the_provider_its_attempt_made() {
        let sp = object("uid-a", Some("uid-a/0001"));
        assert!(owns(&sp, &found(Some("uid-a/0001")), None));
        assert!(!owns(&sp, &found(None), None), "made by someone else");
        assert!(
            !owns(&sp, &found(Some("uid-b/0009")), None),
            "another object's create"
        );
        assert!(
            !owns(&sp, &found(Some("uid-a/0002")), None),
            "another attempt"
        );
    }

    #[test]
    fn a_marker_without_attempt_id_or_copied_from_another_object_claims_nothing() {
        let legacy = object("uid-a", Some("2026-12-01T10:00:00Z"));
        assert_eq!(CreateMarker::of(&legacy), None);
        assert!(!owns(&legacy, &found(None), None));
        let copied = object("uid-b", Some("uid-a/0001"));
        assert_eq!(CreateMarker::of(&copied), None);
        assert!(!owns(&copied, &found(Some("uid-a/0001")), None));
    }

    /// `object(uid, marker)` recording remote id `p` made by `attempt`.
    fn created_by(marker: Option<&str>, attempt: Option<&str>) -> SecurityProvider {
        let mut sp = object("uid-a", marker);
        sp.status = Some(SecurityProviderStatus {
            remote_id: Some("p".into()),
            ownership: Some(system("org")),
            create_attempt: attempt.map(|a| Box::new(CreateAttempt(a.into()))),
            ..Default::default()
        });
        sp
    }

    #[test]
    fn a_spent_marker_is_no_pending_create_and_is_never_resumed() {
        let spent = created_by(Some("uid-a/0001"), Some("uid-a/0001"));
        assert_eq!(pending_marker(&spent), None);
        assert_eq!(
            CreateMarker::of(&spent),
            None,
            "a new create takes a new id"
        );
        // It claims nothing beyond the provider recorded: that attempt made `p`.
        let other = ObservedProvider {
            remote_id: "q".into(),
            ..found(Some("uid-a/0001"))
        };
        assert!(!owns(&spent, &other, Some(&system("org"))));

        // A new attempt over the recorded remote id (its provider was deleted out of band),
        // and a marker left by an earlier version beside a remote id: both pending.
        let fresh = created_by(Some("uid-a/0002"), Some("uid-a/0001"));
        assert_eq!(pending_marker(&fresh), Some("uid-a/0002"));
        let resumed = CreateMarker::of(&fresh).unwrap();
        assert_eq!(
            (resumed.token().as_str(), resumed.resumed),
            ("uid-a/0002", true)
        );
        let legacy = created_by(Some("uid-a/0001"), None);
        assert_eq!(pending_marker(&legacy), Some("uid-a/0001"));
    }

    /// The cache drops a spent marker (its map node was most of the growth of the cache); what
    /// it stood for is read from status, so it is still removed when another id is recorded.
    #[test]
    fn a_spent_marker_the_cache_dropped_is_still_removed_when_another_id_is_recorded() {
        let mut cached = created_by(Some("uid-a/0001"), Some("uid-a/0001"));
        super::super::watches::strip_provider(&mut cached);
        assert_eq!(cached.metadata.annotations, None, "dropped from the cache");
        assert_eq!(pending_marker(&cached), None);
        assert_eq!(marker_on(&cached), Some("uid-a/0001"));
        // The same provider recorded again: spent, no write.
        let same = cached.status.clone().unwrap();
        assert!(!marker_settled(marker_on(&cached), false, &same, true));
        // Another remote id adopted over it: the marker on the object goes.
        let adopted = SecurityProviderStatus {
            remote_id: Some("q".into()),
            ownership: Some(system("org-2")),
            ..Default::default()
        };
        assert!(marker_settled(marker_on(&cached), false, &adopted, true));

        // A pending marker (a new attempt over the recorded id) stays in the cache.
        let mut pending = created_by(Some("uid-a/0002"), Some("uid-a/0001"));
        super::super::watches::strip_provider(&mut pending);
        assert_eq!(pending_marker(&pending), Some("uid-a/0002"));
        assert_eq!(marker_on(&pending), Some("uid-a/0002"));
    }

    #[test]
    fn a_marker_goes_once_its_attempt_is_settled_and_a_spent_one_stays() {
        let status = |attempt: Option<&str>| created_by(None, attempt).status.unwrap();
        let none = SecurityProviderStatus::default();
        let a1 = Some("uid-a/0001");
        // Spent: recorded with the remote id it made. No write, whatever was seen.
        assert!(!marker_settled(a1, false, &status(a1), true));
        // No marker, nothing to remove.
        assert!(!marker_settled(None, true, &status(None), true));
        // Refused: the attempt made nothing.
        assert!(marker_settled(a1, true, &none, false));
        // Beside a remote id read this time (another attempt's, an adoption's, or recorded
        // by an earlier version): the key is taken by ours, no send can make a second.
        assert!(marker_settled(a1, false, &status(Some("uid-a/0000")), true));
        assert!(marker_settled(a1, false, &status(None), true));
        // Not read this time (create answer lost, remote unreachable, blocked): it may land.
        assert!(!marker_settled(
            a1,
            false,
            &status(Some("uid-a/0000")),
            false
        ));
        assert!(!marker_settled(a1, false, &none, true));
    }

    #[test]
    fn a_refusal_settles_only_the_first_send_of_an_attempt() {
        let resumed = CreateMarker::of(&object("uid-a", Some("uid-a/0001"))).unwrap();
        let first = CreateMarker::new(&object("uid-a", None));
        for kind in [RemoteErrorKind::RateLimited, RemoteErrorKind::Conflict] {
            assert!(first.settled_by(kind), "{kind:?}");
            assert!(
                !resumed.settled_by(kind),
                "an earlier send may land: {kind:?}"
            );
        }
        assert!(!first.settled_by(RemoteErrorKind::Timeout));
    }

    #[test]
    fn refused_creates_created_nothing_lost_answers_may_have() {
        for kind in [
            RemoteErrorKind::InvalidConfiguration,
            RemoteErrorKind::Unauthorized,
            RemoteErrorKind::Forbidden,
            RemoteErrorKind::Conflict,
            RemoteErrorKind::Rejected,
        ] {
            assert!(created_nothing(kind), "{kind:?}");
        }
        for kind in [
            RemoteErrorKind::Timeout,
            RemoteErrorKind::Unavailable,
            RemoteErrorKind::BadResponse,
        ] {
            assert!(!created_nothing(kind), "{kind:?}");
        }
    }

    fn system(scope: &str) -> Ownership {
        Ownership {
            connection_uid: "conn-uid".into(),
            endpoint: "https://platform.cloud.coveo.com".into(),
            scope: scope.into(),
        }
    }

    fn recorded(ownership: Option<Ownership>, synced_reason: &str) -> SecurityProvider {
        let mut sp = object("uid-a", None);
        let condition = super::super::status::condition(
            &[],
            super::super::status::SYNCED,
            crate::api::ConditionStatus::True,
            synced_reason.into(),
            "",
            Some(1),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        sp.status = Some(SecurityProviderStatus {
            remote_id: Some("p".into()),
            ownership,
            conditions: vec![condition],
            ..Default::default()
        });
        sp
    }

    #[test]
    fn a_remote_id_recorded_for_another_remote_system_is_not_owned() {
        let staging = recorded(Some(system("org-staging")), "ReconcileSuccess");
        assert!(owns(&staging, &found(None), Some(&system("org-staging"))));
        let production = system("org-prod");
        assert!(!owns(&staging, &found(None), Some(&production)));
        assert_eq!(recorded_in(&staging, Some(&production)), None);
        assert!(recorded_elsewhere(&staging, Some(&production)));
        assert!(!manages(&staging, "p", Some(&production)));
        assert!(manages(&staging, "p", Some(&system("org-staging"))));
    }

    #[test]
    fn a_legacy_record_is_owned_unless_it_was_only_observed() {
        let managed = recorded(None, "ReconcileSuccess");
        assert!(owns(&managed, &found(None), Some(&system("org"))));
        let observed = recorded(None, "ObserveOnly");
        assert!(!owns(&observed, &found(None), Some(&system("org"))));
        assert!(!manages(&observed, "p", Some(&system("org"))));
    }
}
