//! Who owns a remote provider found under this object's id: the create-pending marker that
//! identifies one create attempt (object uid plus a random attempt id), the evidence a create
//! leaves on the remote provider, and which create failures provably created nothing. Pure.
use kube::ResourceExt;

use crate::api::{CREATE_PENDING_ANNOTATION, SecurityProvider};
use crate::backend::ObservedProvider;
use crate::error::RemoteErrorKind;

/// The create-pending marker: set before a create, kept (with the same attempt id) while a
/// create may have landed without an answer, removed once the remote id is recorded or a
/// create provably created nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateMarker {
    /// uid of the object that set the marker (a marker copied onto another object is void).
    pub uid: String,
    /// Random id of the attempt.
    pub attempt: String,
}

impl CreateMarker {
    /// A new attempt for `sp`.
    pub fn new(sp: &SecurityProvider) -> CreateMarker {
        CreateMarker {
            uid: sp.uid().unwrap_or_default(),
            attempt: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// The marker on `sp`, if it is one this object set. A marker without an attempt id (set
    /// by an earlier version) or with another object's uid identifies no attempt of ours.
    pub fn of(sp: &SecurityProvider) -> Option<CreateMarker> {
        let value = sp.annotations().get(CREATE_PENDING_ANNOTATION)?;
        let (uid, attempt) = value.split_once('/')?;
        (Some(uid) == sp.uid().as_deref() && !attempt.is_empty()).then(|| CreateMarker {
            uid: uid.to_owned(),
            attempt: attempt.to_owned(),
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

/// Whether this object owns `found`, a provider under its id: it recorded it in status
/// before, or it carries the evidence of this object's own pending create attempt.
pub fn owns(sp: &SecurityProvider, found: &ObservedProvider) -> bool {
    let recorded = sp.status.as_ref().and_then(|s| s.remote_id.as_deref());
    recorded == Some(found.remote_id.as_str())
        || CreateMarker::of(sp).is_some_and(|marker| marker.made(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::CoveoProviderSpec;
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
        assert!(owns(&sp, &found(Some("uid-a/0001"))));
        assert!(!owns(&sp, &found(None)), "made by someone else");
        assert!(
            !owns(&sp, &found(Some("uid-b/0009"))),
            "another object's create"
        );
        assert!(!owns(&sp, &found(Some("uid-a/0002"))), "another attempt");
    }

    #[test]
    fn a_marker_without_attempt_id_or_copied_from_another_object_claims_nothing() {
        let legacy = object("uid-a", Some("2026-12-01T10:00:00Z"));
        assert_eq!(CreateMarker::of(&legacy), None);
        assert!(!owns(&legacy, &found(None)));
        let copied = object("uid-b", Some("uid-a/0001"));
        assert_eq!(CreateMarker::of(&copied), None);
        assert!(!owns(&copied, &found(Some("uid-a/0001"))));
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
}
