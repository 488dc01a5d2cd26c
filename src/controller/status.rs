//! Computing the status from a reconcile's outcome: a pure function. The result depends only
//! on the previous status and the outcome, so an unchanged world yields an identical status
//! and no write (condition timestamps move only when a condition's status flips).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::ConditionStatus;
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::{CreateAttempt, LeftBehind, Ownership, SecurityProviderStatus};
use crate::backend;
use crate::backend::{ObservedProvider, RemoteHealth};

/// Condition types.
pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
/// kstatus: present (True) only while work is in progress.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: present (True) only while progress is impossible without a change.
pub const STALLED: &str = "Stalled";

/// What happened in one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Backend of the provider, once known.
    pub backend: Option<BackendKind>,
    /// Remote id of the provider this object owns (created or adopted); None keeps what
    /// status recorded (a known remote id is never dropped).
    pub remote_id: Option<String>,
    /// The remote system `remote_id` belongs to (set together with `remote_id`).
    pub ownership: Option<Ownership>,
    /// The create attempt (create-pending marker token) that made `remote_id`, when this
    /// reconcile created it or found it carrying that attempt's evidence: status records it,
    /// and the marker is spent.
    pub create_attempt: Option<String>,
    /// The provider left in the previous remote system, when this reconcile records a provider
    /// in a new one after a confirmed change of remote system.
    pub left_behind: Option<LeftBehind>,
    /// The latest remote view, after any write.
    pub observed: Option<ObservedProvider>,
    /// The result.
    pub result: OutcomeResult,
    /// Refresh annotation value whose refresh was triggered now.
    pub refresh_handled: Option<String>,
    /// Keyed hash of the secret values the remote provider last received from this object
    /// (in the backend's status block, for a backend that sends any): the one sent now after a
    /// write, else the recorded one.
    pub secrets_hash: Option<String>,
    /// The object is being deleted: a failure is about the remote delete, not about applying a
    /// generation of the spec.
    pub deleting: bool,
}

/// The result of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum OutcomeResult {
    /// The remote provider matches the spec (after a create or update, or already).
    Synced {
        reason: &'static str,
        message: String,
    },
    /// Remote writes were deliberately not made (observe-only, paused). `applied`: the remote
    /// provider matches the spec anyway.
    Withheld {
        reason: &'static str,
        message: String,
        applied: bool,
    },
    /// Managing the provider is impossible until something changes.
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// An error stopped the reconcile.
    Failed {
        reason: &'static str,
        message: String,
        terminal: bool,
    },
}

/// Builds the new status. `now` is used only for conditions that change status.
pub fn compute_status(
    previous: Option<&SecurityProviderStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: k8s_openapi::jiff::Timestamp,
) -> SecurityProviderStatus {
    let empty = SecurityProviderStatus::default();
    let prev = previous.unwrap_or(&empty);
    SecurityProviderStatus {
        observed_generation: generation,
        backend: outcome
            .backend
            .map(|b| b.as_str().to_owned())
            .or_else(|| prev.backend.clone()),
        last_handled_refresh_at: outcome
            .refresh_handled
            .clone()
            .or_else(|| prev.last_handled_refresh_at.clone()),
        conditions: conditions(prev, outcome, generation, now),
        // Kept until the next confirmed change of remote system replaces it.
        left_behind: match (&outcome.ownership, &outcome.left_behind) {
            (Some(_), Some(left)) => Some(Box::new(left.clone())),
            _ => prev.left_behind.clone(),
        },
        ..remote_fields(prev, outcome)
    }
}

/// Condition reason of the first status, written before any remote call.
pub const REASON_PROGRESSING: &str = "Progressing";

/// Ready reason of a provider that exists remotely, matches its spec and is healthy.
pub const REASON_AVAILABLE: &str = "Available";

/// The status to write before the first remote call of an object the operator has not reported
/// on yet (no `Ready` condition: no status, or only the CRD's default `observedGeneration: 0`):
/// `Ready=Unknown` and `Reconciling=True`, so that kstatus, Argo CD and `kubectl wait` see work
/// in progress while the remote calls run. None once a `Ready` condition exists, so an object at
/// rest gets no extra write.
pub fn first_status(
    previous: Option<&SecurityProviderStatus>,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<SecurityProviderStatus> {
    if find(previous, READY).is_some() {
        return None;
    }
    let message = "the operator is reading the remote provider (and creating or adopting it when the spec says so)";
    let conditions = [
        (READY, ConditionStatus::Unknown),
        (RECONCILING, ConditionStatus::True),
    ]
    .into_iter()
    .map(|(type_, cstatus)| {
        let reason = REASON_PROGRESSING.to_owned();
        condition(&[], type_, cstatus, reason, message, generation, now)
    })
    .collect();
    Some(SecurityProviderStatus {
        observed_generation: generation,
        conditions,
        ..previous.cloned().unwrap_or_default()
    })
}

/// What status records about the remote provider this object owns.
struct Recorded {
    remote_id: Option<String>,
    ownership: Option<Ownership>,
    create_attempt: Option<String>,
}

/// The remote id, its remote system and the create attempt that made it: the outcome's when it
/// has a remote id, else what status recorded. A known remote id is never dropped: a write
/// that omitted it (server-side apply) would disown the provider. The attempt is the
/// outcome's, else the recorded one while id and remote system stay; a remote id recorded
/// otherwise (adopted, another remote system) comes from no create attempt.
fn ownership_fields(prev: &SecurityProviderStatus, outcome: &Outcome) -> Recorded {
    let Some(id) = &outcome.remote_id else {
        return Recorded {
            remote_id: prev.remote_id.clone(),
            ownership: prev.ownership.clone(),
            create_attempt: prev.recorded_attempt().map(str::to_owned),
        };
    };
    let same_id = prev.remote_id.as_ref() == Some(id);
    let ownership = outcome
        .ownership
        .clone()
        .or_else(|| prev.ownership.clone().filter(|_| same_id));
    let unchanged = same_id && ownership == prev.ownership;
    let recorded = prev.recorded_attempt().filter(|_| unchanged);
    let create_attempt = (outcome.create_attempt.clone()).or_else(|| recorded.map(str::to_owned));
    Recorded {
        remote_id: Some(id.clone()),
        ownership,
        create_attempt,
    }
}

/// The remote fields of the status: the latest observation mirrored, or the last known values
/// when the remote system could not be read this time.
fn remote_fields(prev: &SecurityProviderStatus, outcome: &Outcome) -> SecurityProviderStatus {
    let transient_failure = matches!(
        outcome.result,
        OutcomeResult::Failed {
            terminal: false,
            ..
        }
    );
    let Recorded {
        remote_id,
        ownership,
        create_attempt,
    } = ownership_fields(prev, outcome);
    let mut mirrored = match &outcome.observed {
        Some(observed) => {
            let mut status = SecurityProviderStatus {
                remote_id,
                ownership,
                current_status: observed.state.current_status.clone(),
                last_refresh_operation: observed.state.last_refresh_operation.clone(),
                statistics: observed.state.statistics.clone(),
                ..Default::default()
            };
            observed.state.mirror_blocks(&mut status);
            status
        }
        None if transient_failure => {
            let mut status = SecurityProviderStatus {
                remote_id,
                ownership,
                current_status: prev.current_status.clone(),
                last_refresh_operation: prev.last_refresh_operation.clone(),
                statistics: prev.statistics.clone(),
                ..Default::default()
            };
            backend::copy_status_blocks(prev, &mut status);
            status
        }
        None => SecurityProviderStatus {
            remote_id,
            ownership,
            ..Default::default()
        },
    };
    mirrored.create_attempt = create_attempt.map(|attempt| Box::new(CreateAttempt(attempt)));
    backend::record_fingerprint(&mut mirrored, outcome.secrets_hash.clone());
    mirrored
}

/// The conditions for an outcome, keeping transition times from `prev`.
fn conditions(
    prev: &SecurityProviderStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<Condition> {
    let (synced, ready, reconciling, stalled) = conditions_for(prev, outcome, generation);
    [
        (READY, Some(ready)),
        (SYNCED, Some(synced)),
        (RECONCILING, reconciling),
        (STALLED, stalled),
    ]
    .into_iter()
    .filter_map(|(type_, value)| {
        let (cstatus, reason, message) = value?;
        Some(condition(
            &prev.conditions,
            type_,
            cstatus,
            reason,
            &message,
            generation,
            now,
        ))
    })
    .collect()
}

type ConditionValue = (ConditionStatus, String, String);

/// Ready from the remote provider's health.
fn health_ready(observed: &ObservedProvider) -> ConditionValue {
    match &observed.health {
        RemoteHealth::Healthy => (
            ConditionStatus::True,
            REASON_AVAILABLE.into(),
            "the remote provider exists and matches the spec".into(),
        ),
        RemoteHealth::Progressing { reason, message }
        | RemoteHealth::Degraded { reason, message } => {
            (ConditionStatus::False, (*reason).into(), message.clone())
        }
    }
}

/// Reconciling (remote progressing) and Stalled (remote degraded) from the observation. A
/// remote provider in a failed state will not get better by reconciling again: say so with
/// Stalled, or kstatus (Flux) would call a Ready=False object Current.
fn remote_signals(outcome: &Outcome) -> (Option<ConditionValue>, Option<ConditionValue>) {
    let signal = |o: &ObservedProvider, progressing: bool| match &o.health {
        RemoteHealth::Progressing { reason, message } if progressing => {
            Some((ConditionStatus::True, (*reason).to_owned(), message.clone()))
        }
        RemoteHealth::Degraded { reason, message } if !progressing => {
            Some((ConditionStatus::True, (*reason).to_owned(), message.clone()))
        }
        _ => None,
    };
    let observed = outcome.observed.as_ref();
    (
        observed.and_then(|o| signal(o, true)),
        observed.and_then(|o| signal(o, false)),
    )
}

/// (Synced, Ready, Reconciling, Stalled) for an outcome. Ready is True for a generation only
/// once that generation is applied remotely (and the provider is healthy).
fn conditions_for(
    prev: &SecurityProviderStatus,
    outcome: &Outcome,
    generation: Option<i64>,
) -> (
    ConditionValue,
    ConditionValue,
    Option<ConditionValue>,
    Option<ConditionValue>,
) {
    let (progressing, degraded) = remote_signals(outcome);
    let value =
        |status, reason: &str, message: &String| (status, reason.to_owned(), message.clone());
    match &outcome.result {
        OutcomeResult::Synced { reason, message } => {
            let ready = match &outcome.observed {
                Some(o) => health_ready(o),
                None => (
                    ConditionStatus::Unknown,
                    "NotObserved".into(),
                    "the remote provider has not been read yet".into(),
                ),
            };
            let synced = value(ConditionStatus::True, reason, message);
            (synced, ready, progressing, degraded)
        }
        OutcomeResult::Withheld {
            reason,
            message,
            applied,
        } => {
            let synced = value(ConditionStatus::False, reason, message);
            // A difference not written means the spec is not applied: never "matches", and
            // for kstatus Stalled (only a change, unpausing included, lets it progress).
            match &outcome.observed {
                Some(observed) if *applied => {
                    (synced, health_ready(observed), progressing, degraded)
                }
                _ => (
                    synced.clone(),
                    synced.clone(),
                    None,
                    Some(value(ConditionStatus::True, reason, message)),
                ),
            }
        }
        OutcomeResult::Blocked { reason, message } => {
            failure_conditions(prev, outcome, generation, reason, message, true)
        }
        OutcomeResult::Failed {
            reason,
            message,
            terminal,
        } => failure_conditions(prev, outcome, generation, reason, message, *terminal),
    }
}

/// (Synced, Ready, Reconciling, Stalled) for a failure or a block. Terminal: Stalled, nothing
/// in progress. Transient: retried, so in progress only while the generation is not applied (a
/// remote outage under a Ready provider is reported by Synced=False, a Warning and the metrics,
/// not as an endless rollout: docs/gitops.md). While deleting, Ready says the delete waits.
fn failure_conditions(
    prev: &SecurityProviderStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    terminal: bool,
) -> (
    ConditionValue,
    ConditionValue,
    Option<ConditionValue>,
    Option<ConditionValue>,
) {
    let value = |status, text: &str| (status, reason.to_owned(), text.to_owned());
    let failed = value(ConditionStatus::False, message);
    let ready = if outcome.deleting {
        being_deleted(reason, message)
    } else if terminal {
        failed.clone()
    } else {
        ready_through_failure(prev, generation, reason, message).unwrap_or_else(|| failed.clone())
    };
    if terminal {
        return (
            failed,
            ready,
            None,
            Some(value(ConditionStatus::True, message)),
        );
    }
    let retrying = format!("retrying: {message}");
    let reconciling =
        (ready.0 != ConditionStatus::True).then(|| value(ConditionStatus::True, &retrying));
    (failed, ready, reconciling, None)
}

/// Ready while the object is being deleted and the remote delete fails: what is happening,
/// not which generation is applied (the deletion itself bumped the generation).
fn being_deleted(reason: &str, message: &str) -> ConditionValue {
    let deleting = format!("being deleted; the remote provider is not deleted yet: {message}");
    (ConditionStatus::False, reason.to_owned(), deleting)
}

/// Ready through a passing failure: kept as it was (the failure says nothing new about the
/// provider), except that a Ready=True of an earlier generation does not carry over to a spec
/// change that could not be applied. None: no Ready yet.
fn ready_through_failure(
    prev: &SecurityProviderStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
) -> Option<ConditionValue> {
    let c = prev.conditions.iter().find(|c| c.type_ == READY)?;
    if c.status == "True" && c.observed_generation != generation {
        let waiting = format!(
            "generation {} is not applied remotely yet: {message}",
            generation.unwrap_or_default()
        );
        return Some((ConditionStatus::False, reason.to_owned(), waiting));
    }
    Some((parse_status(&c.status), c.reason.clone(), c.message.clone()))
}

fn parse_status(s: &str) -> ConditionStatus {
    match s {
        "True" => ConditionStatus::True,
        "False" => ConditionStatus::False,
        _ => ConditionStatus::Unknown,
    }
}

/// A condition whose `lastTransitionTime` is kept from `previous` unless its status flips.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: ConditionStatus,
    reason: String,
    message: &str,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status.as_str())
        .map(|c| c.last_transition_time.clone())
        // The API server stores whole seconds; round now so the stored value reads back equal.
        .unwrap_or_else(|| {
            Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
        });
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason,
        message: clip(message, CONDITION_MESSAGE_MAX_BYTES),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Longest condition message kept (bytes): remote text can be anything, and a status is read
/// by every `kubectl get`.
pub const CONDITION_MESSAGE_MAX_BYTES: usize = 2048;

/// Longest Event note sent (bytes): the API server refuses a note over 1024 bytes, and the
/// Warning Event would be lost, not shortened.
pub const EVENT_NOTE_MAX_BYTES: usize = 1000;

/// `text` cut to at most `max_bytes` bytes on a character boundary, with `...` marking a cut.
/// (Remote text is scrubbed of credentials before it gets here, so a cut never leaves a
/// recognisable part of a secret.)
pub fn clip(text: &str, max_bytes: usize) -> String {
    const MARK: &str = "...";
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// The condition of a type, if present.
pub fn find<'a>(status: Option<&'a SecurityProviderStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::{
        CoveoProviderSpec, CoveoStatus, CurrentStatus, Statistics,
    };
    use crate::backend::coveo::CoveoConfig;
    use crate::backend::{ProviderConfig, RemoteState};

    #[test]
    fn remote_text_is_clipped_in_conditions_and_event_notes() {
        assert_eq!(clip("short", 10), "short");
        let huge = "é".repeat(1_000_000);
        let cut = clip(&huge, EVENT_NOTE_MAX_BYTES);
        assert!(
            cut.len() <= EVENT_NOTE_MAX_BYTES && cut.len() > 900,
            "{}",
            cut.len()
        );
        assert!(cut.ends_with("..."));
        let c = condition(
            &[],
            READY,
            ConditionStatus::False,
            "RemoteBadResponse".into(),
            &huge,
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        assert!(c.message.len() <= CONDITION_MESSAGE_MAX_BYTES);
        assert!(c.message.starts_with("éé"));
    }

    fn t(s: &str) -> k8s_openapi::jiff::Timestamp {
        s.parse().unwrap()
    }

    fn observed(health: RemoteHealth, total: i64) -> ObservedProvider {
        ObservedProvider {
            remote_id: "p".into(),
            config: ProviderConfig::Coveo(CoveoConfig::desired(
                "p",
                "p",
                &CoveoProviderSpec::default(),
            )),
            state: RemoteState {
                current_status: Some(CurrentStatus {
                    status_type: "IDLE".into(),
                    refresh_type: None,
                }),
                statistics: Some(Statistics {
                    total_number_of_entities: total,
                    ..Default::default()
                }),
                ..Default::default()
            },
            health,
        }
    }

    fn synced(observed: Option<ObservedProvider>) -> Outcome {
        Outcome {
            backend: Some(BackendKind::Coveo),
            remote_id: Some("p".into()),
            ownership: None,
            create_attempt: None,
            left_behind: None,
            observed,
            result: OutcomeResult::Synced {
                reason: "ReconcileSuccess",
                message: "in sync".into(),
            },
            refresh_handled: None,
            secrets_hash: None,
            deleting: false,
        }
    }

    fn cond<'a>(s: &'a SecurityProviderStatus, type_: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn healthy_synced_provider_is_ready_and_mirrors_remote_fields() {
        let s = compute_status(
            None,
            Some(3),
            &synced(Some(observed(RemoteHealth::Healthy, 10))),
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.backend.as_deref(), Some("coveo"));
        assert_eq!(s.remote_id.as_deref(), Some("p"));
        assert_eq!(s.statistics.as_ref().unwrap().total_number_of_entities, 10);
        let ready = cond(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Available")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(cond(&s, SYNCED).unwrap().status, "True");
        assert!(cond(&s, RECONCILING).is_none() && cond(&s, STALLED).is_none());
    }

    #[test]
    fn same_outcome_later_gives_an_identical_status() {
        let outcome = synced(Some(observed(RemoteHealth::Healthy, 10)));
        let first = compute_status(None, Some(1), &outcome, t("2026-01-01T00:00:00Z"));
        let second = compute_status(Some(&first), Some(1), &outcome, t("2026-01-01T05:00:00Z"));
        assert_eq!(first, second, "no timestamp may move while nothing changes");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 1))),
            t("2026-01-01T00:00:00Z"),
        );
        // A message/reason change without a status flip keeps the time.
        let changed = compute_status(
            Some(&first),
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 2))),
            t("2026-01-02T00:00:00Z"),
        );
        assert_eq!(
            cond(&changed, READY).unwrap().last_transition_time,
            cond(&first, READY).unwrap().last_transition_time
        );
        let degraded = RemoteHealth::Degraded {
            reason: "RemoteError",
            message: "ERROR".into(),
        };
        let flipped = compute_status(
            Some(&changed),
            Some(1),
            &synced(Some(observed(degraded, 2))),
            t("2026-01-03T00:00:00Z"),
        );
        let ready = cond(&flipped, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RemoteError")
        );
        assert_eq!(ready.last_transition_time.0, t("2026-01-03T00:00:00Z"));
        // kstatus reads Stalled: a failed remote provider must not look Current.
        let stalled = cond(&flipped, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "RemoteError")
        );
        assert!(cond(&flipped, RECONCILING).is_none());
    }

    #[test]
    fn terminal_failure_stalls_and_unreadies() {
        let prev = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 1))),
            t("2026-01-01T00:00:00Z"),
        );
        let outcome = Outcome {
            observed: None,
            result: OutcomeResult::Failed {
                reason: "RemoteInvalidConfiguration",
                message: "id too long".into(),
                terminal: true,
            },
            ..synced(None)
        };
        let s = compute_status(Some(&prev), Some(2), &outcome, t("2026-01-02T00:00:00Z"));
        for type_ in [READY, SYNCED, STALLED] {
            let c = cond(&s, type_).unwrap();
            assert_eq!(c.reason, "RemoteInvalidConfiguration", "{type_}");
            assert_eq!(c.message, "id too long");
        }
        assert_eq!(cond(&s, READY).unwrap().status, "False");
        assert_eq!(cond(&s, STALLED).unwrap().status, "True");
    }

    #[test]
    fn transient_failure_keeps_ready_and_last_known_remote_fields() {
        let prev = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 7))),
            t("2026-01-01T00:00:00Z"),
        );
        let outcome = Outcome {
            observed: None,
            remote_id: None,
            result: OutcomeResult::Failed {
                reason: "RemoteUnavailable",
                message: "503".into(),
                terminal: false,
            },
            ..synced(None)
        };
        let s = compute_status(Some(&prev), Some(1), &outcome, t("2026-01-02T00:00:00Z"));
        assert_eq!(cond(&s, READY), cond(&prev, READY));
        assert_eq!(cond(&s, SYNCED).unwrap().status, "False");
        // The generation is applied: an outage is not a rollout in progress (kstatus stays
        // Current, Argo CD Healthy); Synced=False says the remote cannot be reached.
        assert!(cond(&s, RECONCILING).is_none() && cond(&s, STALLED).is_none());
        // Not Ready yet (a first create failing): retried, so in progress.
        let first = compute_status(None, Some(1), &outcome, t("2026-01-02T00:00:00Z"));
        assert_eq!(cond(&first, READY).unwrap().status, "False");
        assert_eq!(cond(&first, RECONCILING).unwrap().status, "True");
        assert_eq!(s.statistics, prev.statistics);
        assert_eq!(s.remote_id.as_deref(), Some("p"));
    }

    #[test]
    fn progressing_remote_sets_reconciling() {
        let progressing = RemoteHealth::Progressing {
            reason: "RemoteCreating",
            message: "creating".into(),
        };
        let s = compute_status(
            None,
            Some(1),
            &synced(Some(observed(progressing, 0))),
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(cond(&s, READY).unwrap().status, "False");
        assert_eq!(cond(&s, RECONCILING).unwrap().reason, "RemoteCreating");
    }

    #[test]
    fn blocked_is_stalled_without_remote_id() {
        let outcome = Outcome {
            remote_id: None,
            observed: Some(observed(RemoteHealth::Healthy, 1)),
            result: OutcomeResult::Blocked {
                reason: "AlreadyExists",
                message: "taken".into(),
            },
            ..synced(None)
        };
        let s = compute_status(None, Some(1), &outcome, t("2026-01-01T00:00:00Z"));
        assert_eq!(s.remote_id, None);
        assert_eq!(cond(&s, READY).unwrap().reason, "AlreadyExists");
        assert_eq!(cond(&s, STALLED).unwrap().status, "True");
    }

    #[test]
    fn stored_transition_time_has_whole_seconds() {
        let s = compute_status(None, Some(1), &synced(None), t("2026-01-01T00:00:00.750Z"));
        assert_eq!(
            cond(&s, READY).unwrap().last_transition_time.0,
            t("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn coveo_status_shows_the_observed_schedules_and_the_hash_of_what_was_sent() {
        let schedule = crate::api::security_provider::CoveoScheduleStatus {
            id: Some("s1".into()),
            refresh_type: "SECURITY_PROVIDER_REFRESH".into(),
            enabled: true,
            frequency: "DAILY 04:00 UTC".into(),
            last_execution: None,
        };
        let mut observed = observed(RemoteHealth::Healthy, 1);
        observed.state.coveo = Some(CoveoStatus {
            secrets_hash: None,
            refresh_schedules: vec![schedule.clone()],
        });
        let outcome = Outcome {
            secrets_hash: Some("hmac-sha256:ab".into()),
            ..synced(Some(observed))
        };
        let now = t("2026-01-01T00:00:00Z");
        let status = compute_status(None, Some(1), &outcome, now);
        let expected = CoveoStatus {
            secrets_hash: Some("hmac-sha256:ab".into()),
            refresh_schedules: vec![schedule],
        };
        assert_eq!(status.coveo.as_deref(), Some(&expected));
        // The remote cannot be read for a moment: the last known schedules stay.
        let failed = Outcome {
            observed: None,
            result: OutcomeResult::Failed {
                reason: "RemoteUnavailable",
                message: "down".into(),
                terminal: false,
            },
            ..outcome.clone()
        };
        let kept = compute_status(Some(&status), Some(1), &failed, now);
        assert_eq!(kept.coveo.as_deref(), Some(&expected));
        // Neither schedules nor secret values: no coveo block at all.
        let plain = compute_status(None, Some(1), &synced(None), now);
        assert_eq!(plain.coveo, None);
    }

    #[test]
    fn a_known_remote_id_is_never_dropped() {
        let prev = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 1))),
            t("2026-01-01T00:00:00Z"),
        );
        for result in [
            OutcomeResult::Blocked {
                reason: "AlreadyExists",
                message: "x".into(),
            },
            OutcomeResult::Failed {
                reason: "ConnectionNotFound",
                message: "x".into(),
                terminal: true,
            },
        ] {
            let outcome = Outcome {
                remote_id: None,
                observed: None,
                result,
                ..synced(None)
            };
            let s = compute_status(Some(&prev), Some(1), &outcome, t("2026-01-02T00:00:00Z"));
            assert_eq!(s.remote_id.as_deref(), Some("p"));
        }
    }

    #[test]
    fn a_create_records_its_attempt_until_the_remote_id_is_recorded_otherwise() {
        let system = |scope: &str| Ownership {
            connection_uid: "conn-uid".into(),
            endpoint: "https://platform.cloud.coveo.com".into(),
            scope: scope.into(),
        };
        let now = t("2026-01-01T00:00:00Z");
        let healthy = || Some(observed(RemoteHealth::Healthy, 1));
        let created = Outcome {
            ownership: Some(system("org")),
            create_attempt: Some("uid/a1".into()),
            ..synced(healthy())
        };
        let prev = compute_status(None, Some(1), &created, now);
        assert_eq!(prev.recorded_attempt(), Some("uid/a1"));

        // Later reconciles of the same provider (a resync, a failure that reads nothing) keep
        // it: the marker stays spent, and the status unchanged (no write).
        let resync = Outcome {
            ownership: Some(system("org")),
            ..synced(healthy())
        };
        assert_eq!(compute_status(Some(&prev), Some(1), &resync, now), prev);
        let unread = Outcome {
            remote_id: None,
            result: OutcomeResult::Failed {
                reason: "RemoteUnavailable",
                message: "x".into(),
                terminal: false,
            },
            ..synced(None)
        };
        let failed = compute_status(Some(&prev), Some(1), &unread, now);
        assert_eq!(failed.create_attempt, prev.create_attempt);

        // A remote id recorded otherwise came from no create attempt: adopted (another id),
        // or the same id in another remote system.
        let adopted = Outcome {
            remote_id: Some("q".into()),
            ownership: Some(system("org")),
            ..synced(healthy())
        };
        assert_eq!(
            compute_status(Some(&prev), Some(1), &adopted, now).create_attempt,
            None
        );
        let retargeted = Outcome {
            ownership: Some(system("org-prod")),
            ..synced(healthy())
        };
        let moved = compute_status(Some(&prev), Some(1), &retargeted, now);
        assert_eq!(moved.create_attempt, None);

        // A new create (the provider was deleted out of band) records its own attempt.
        let recreated = Outcome {
            create_attempt: Some("uid/a2".into()),
            ..created
        };
        let again = compute_status(Some(&prev), Some(1), &recreated, now);
        assert_eq!(again.recorded_attempt(), Some("uid/a2"));
    }

    #[test]
    fn a_new_object_first_says_work_is_in_progress_and_once_only() {
        let now = t("2026-01-01T00:00:00Z");
        // The CRD's schema default, as the API server shows a status-less object.
        let defaulted = SecurityProviderStatus {
            observed_generation: Some(0),
            ..Default::default()
        };
        for previous in [None, Some(&defaulted)] {
            let first = first_status(previous, Some(1), now).expect("a first status");
            assert_eq!(first.observed_generation, Some(1));
            let ready = cond(&first, READY).unwrap();
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("Unknown", REASON_PROGRESSING)
            );
            assert_eq!(cond(&first, RECONCILING).unwrap().status, "True");
            assert!(cond(&first, SYNCED).is_none() && cond(&first, STALLED).is_none());
        }
        // At rest (a Ready condition exists, whatever its value): nothing to write.
        let reported = compute_status(None, Some(1), &synced(None), now);
        assert_eq!(first_status(Some(&reported), Some(2), now), None);
    }

    #[test]
    fn a_failing_remote_delete_says_so_in_ready() {
        let prev = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 1))),
            t("2026-01-01T00:00:00Z"),
        );
        let failing_delete = |terminal| Outcome {
            observed: None,
            deleting: true,
            result: OutcomeResult::Failed {
                reason: "RemoteUnavailable",
                message: "cannot delete the remote provider: 503".into(),
                terminal,
            },
            ..synced(None)
        };
        // The deletion bumped the generation to 2; nothing is "not applied".
        for terminal in [false, true] {
            let outcome = failing_delete(terminal);
            let s = compute_status(Some(&prev), Some(2), &outcome, t("2026-01-02T00:00:00Z"));
            let ready = cond(&s, READY).unwrap();
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "RemoteUnavailable")
            );
            assert!(
                ready.message.starts_with("being deleted; the remote provider is not deleted yet: cannot delete the remote provider: 503"),
                "{}",
                ready.message
            );
            assert!(!ready.message.contains("generation"), "{}", ready.message);
        }
    }

    #[test]
    fn ready_of_an_earlier_generation_does_not_carry_over_a_failure() {
        let prev = compute_status(
            None,
            Some(1),
            &synced(Some(observed(RemoteHealth::Healthy, 1))),
            t("2026-01-01T00:00:00Z"),
        );
        let outcome = Outcome {
            observed: None,
            result: OutcomeResult::Failed {
                reason: "RemoteUnavailable",
                message: "503".into(),
                terminal: false,
            },
            ..synced(None)
        };
        let s = compute_status(Some(&prev), Some(2), &outcome, t("2026-01-02T00:00:00Z"));
        let ready = cond(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RemoteUnavailable")
        );
        assert!(
            ready.message.contains("generation 2 is not applied"),
            "{}",
            ready.message
        );
        assert_eq!(ready.observed_generation, Some(2));
    }
}
