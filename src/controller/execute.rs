//! Carrying out a plan remotely: a create behind the create-pending marker (taking over our
//! own earlier create when it answers 409), an update, a requested refresh. Returns a
//! [`Report`] of what was done and learnt, for the status and the Events. Writes are made only
//! from a fresh read ([`Remote::Fresh`]); a plan over a snapshot is refused.

use tracing::info;

use super::handle::{ConnectionHandle, Remote};
use super::metadata::ObjectMetadata;
use super::observe::{Observation, is_paused, recorded_remote_id, refresh_to_handle};
use super::ownership::{self, CreateMarker};
use super::plan::{Plan, REASON_ALREADY_EXISTS, REASON_OBSERVE_ONLY, REASON_PAUSED};
use super::requeue::ErrorClass;
use super::status::{self, Outcome, OutcomeResult};
use crate::api::SecurityProvider;
use crate::api::security_provider::LeftBehind;
use crate::backend::ObservedProvider;
use crate::error::{Error, RemoteError, RemoteErrorKind};

/// What one reconcile did and learnt.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// What the status is computed from.
    pub outcome: Outcome,
    /// The token of the create-pending marker this reconcile set (the cached object may not
    /// show it yet).
    pub marked_pending: Option<String>,
    /// No send of the create attempt can have created anything (this one was refused, and
    /// it was the attempt's first; see [`CreateMarker::settled_by`]): the marker must go.
    pub create_refused: bool,
    /// A remote provider was created.
    pub created: bool,
    /// The fields an update wrote.
    pub updated: Option<Vec<String>>,
    /// A refresh was started.
    pub refreshed: bool,
    /// The class of the error this reconcile failed with, which decides when it is tried
    /// again (see [`super::requeue`]).
    pub failure: Option<ErrorClass>,
}

impl Report {
    /// A report of nothing done yet.
    fn new(outcome: Outcome) -> Report {
        Report {
            outcome,
            marked_pending: None,
            create_refused: false,
            created: false,
            updated: None,
            refreshed: false,
            failure: None,
        }
    }

    /// The report of a reconcile that failed before anything was read or written.
    pub fn failed(sp: &SecurityProvider, error: &Error) -> Report {
        Report {
            failure: Some(ErrorClass::of(error)),
            ..Report::new(Outcome {
                backend: sp.spec.backend(),
                remote_id: recorded_remote_id(sp),
                ownership: None,
                create_attempt: None,
                left_behind: None,
                observed: None,
                result: failure(error),
                refresh_handled: None,
                secrets_hash: recorded_secrets_hash(sp),
                deleting: sp.metadata.deletion_timestamp.is_some(),
            })
        }
    }
}

/// The hash of the secret values recorded in status by an earlier write.
pub(crate) fn recorded_secrets_hash(sp: &SecurityProvider) -> Option<String> {
    crate::backend::recorded_fingerprint(sp.status.as_ref()?)
}

/// The outcome result of an error.
pub fn failure(error: &Error) -> OutcomeResult {
    OutcomeResult::Failed {
        reason: error.reason(),
        message: error.to_string(),
        terminal: error.is_terminal(),
    }
}

/// Carries out `decision`, the cleanup finalizer on the object before any remote write.
/// Remote failures end up in the report (with whatever was learnt before them); only a failed
/// Kubernetes API call is returned as an error.
pub async fn execute(
    sp: &SecurityProvider,
    connection: &ConnectionHandle<'_>,
    metadata: &ObjectMetadata<'_>,
    observation: Observation,
    decision: Plan,
) -> Result<Report, Error> {
    let mut run = Execution::new(sp, connection, metadata, observation, &decision);
    match run.perform(decision).await {
        Ok(()) => Ok(run.report),
        Err(error @ Error::Kube(_)) => Err(error),
        Err(error) => {
            run.report.failure = Some(ErrorClass::of(&error));
            run.report.outcome.result = failure(&error);
            Ok(run.report)
        }
    }
}

/// One execution in progress: the report grows as steps succeed, so a failure midway still
/// reports what was learnt.
struct Execution<'a, 'c> {
    sp: &'a SecurityProvider,
    connection: &'a ConnectionHandle<'c>,
    metadata: &'a ObjectMetadata<'c>,
    observation: Observation,
    report: Report,
}

impl<'a, 'c> Execution<'a, 'c> {
    fn new(
        sp: &'a SecurityProvider,
        connection: &'a ConnectionHandle<'c>,
        metadata: &'a ObjectMetadata<'c>,
        observation: Observation,
        decision: &Plan,
    ) -> Self {
        // A provider we may not manage is neither ours to record nor to mirror.
        let observed = match decision {
            Plan::Blocked { .. } => None,
            _ => observation.remote.provider().cloned(),
        };
        // Observing never records ownership (a later switch to Manage must not take over
        // what was only watched); status keeps what an earlier Manage recorded. A provider
        // carrying the evidence of our pending attempt (its create answer was lost) is what
        // that attempt made: status records the attempt, which spends the marker.
        let (remote_id, ownership, create_attempt) = match &observed {
            Some(found) if !sp.observe_only() => (
                Some(found.remote_id.clone()),
                observation.system.clone(),
                CreateMarker::of(sp)
                    .filter(|marker| marker.made(found))
                    .map(|marker| marker.token()),
            ),
            _ => (recorded_remote_id(sp), None, None),
        };
        let report = Report::new(Outcome {
            backend: sp.spec.backend(),
            remote_id,
            ownership,
            create_attempt,
            left_behind: observation
                .retarget
                .as_ref()
                .filter(|r| r.acknowledged)
                .map(|r| LeftBehind {
                    remote_id: r.remote_id.clone(),
                    system: r.from.clone(),
                }),
            observed,
            result: OutcomeResult::Synced {
                reason: "ReconcileSuccess",
                message: String::new(),
            },
            refresh_handled: None,
            secrets_hash: observation
                .desired
                .recorded_secrets_hash()
                .map(str::to_owned),
            deleting: false,
        });
        Execution {
            sp,
            connection,
            metadata,
            observation,
            report,
        }
    }

    async fn perform(&mut self, decision: Plan) -> Result<(), Error> {
        // A create adds the finalizer with its marker, in one write.
        if decision != Plan::Create {
            self.metadata.ensure_finalizer(self.sp).await?;
        }
        match decision {
            Plan::Create => self.create().await?,
            Plan::Update { fields } => self.update(fields).await?,
            Plan::InSync => {}
            Plan::Withheld {
                reason,
                message,
                fields,
            } => {
                let applied = fields.is_empty() && self.report.outcome.observed.is_some();
                self.report.outcome.result = OutcomeResult::Withheld {
                    reason,
                    message,
                    applied,
                }
            }
            Plan::Blocked { reason, message } => {
                let found = self.observation.remote.provider();
                let attempt = ownership::pending_marker(self.sp).unwrap_or("none");
                self.log_newly_blocked(reason, &message, found, attempt);
                self.report.outcome.result = OutcomeResult::Blocked { reason, message };
                return Ok(());
            }
        }
        if matches!(self.report.outcome.result, OutcomeResult::Blocked { .. }) {
            return Ok(());
        }
        self.refresh().await?;
        self.conclude_synced();
        Ok(())
    }

    /// Logs a block that status does not show yet (else it is only an Event), with the
    /// evidence ownership was decided on: the creation token on the provider `found` and the
    /// object's pending create `attempt`. Both are uids and random ids, no secrets.
    fn log_newly_blocked(
        &self,
        reason: &'static str,
        message: &str,
        found: Option<&ObservedProvider>,
        attempt: &str,
    ) {
        let synced = status::find(self.sp.status.as_ref(), status::SYNCED);
        if synced.is_some_and(|c| c.reason == reason) {
            return;
        }
        let evidence = found.and_then(|f| f.config.creation_token());
        info!(
            reason,
            remote_id = found.map_or("none", |f| f.remote_id.as_str()),
            evidence = evidence.as_deref().unwrap_or("none"),
            attempt,
            %message,
            "remote writes blocked"
        );
    }

    /// Sets the marker (with the finalizer, in one write), then creates, leaving the marker's
    /// token on the remote provider as evidence. The marker stays: once the remote id is in
    /// status with this attempt (`status.createAttempt`) it is spent; the caller removes it
    /// after the status write when the create provably created nothing.
    async fn create(&mut self) -> Result<(), Error> {
        if self.observation.remote != Remote::Fresh(None) {
            return Err(Error::Internal(
                "a create may only follow a fresh read that found nothing",
            ));
        }
        let marker = self.metadata.mark_create_pending(self.sp).await?;
        self.report.marked_pending = Some(marker.token());
        let desired = self
            .observation
            .desired
            .with_creation_token(&marker.token());
        match self.connection.create(&desired).await {
            Ok(created) => {
                info!(remote_id = %created.remote_id, "created remote provider");
                self.report.outcome.remote_id = Some(created.remote_id.clone());
                self.report.outcome.ownership = self.observation.system.clone();
                self.report.outcome.create_attempt = Some(marker.token());
                self.report.outcome.observed = Some(created);
                self.report.outcome.secrets_hash = desired.secrets_hash().map(str::to_owned);
                self.report.created = true;
                Ok(())
            }
            Err(error) if error.kind == RemoteErrorKind::Conflict => {
                self.take_over_own_create(&marker, error).await
            }
            Err(error) => {
                // A refusal settles the attempt only if nothing of it exists: a backend whose
                // create takes several calls (Coveo: the POST, then the provider's schedules)
                // can fail after the provider was made, and that provider must stay
                // recognisable as this object's (the marker kept, it is adopted next time).
                self.report.create_refused =
                    marker.settled_by(error.kind) && !self.attempt_landed(&marker).await;
                Err(error.into())
            }
        }
    }

    /// Whether a provider made by `marker`'s attempt exists. A read that fails cannot prove
    /// that nothing landed, so it counts as landed (the marker stays).
    async fn attempt_landed(&self, marker: &CreateMarker) -> bool {
        match self.connection.read(&self.observation.key).await {
            Ok(found) => found.is_some_and(|found| marker.made(&found)),
            Err(_) => true,
        }
    }

    /// The id appeared between our read and our create. Ours only if it carries the evidence
    /// of this attempt (an earlier try whose answer was lost: a timeout, a dropped connection,
    /// a crash): then take it over and never create again. Else someone else won a race.
    async fn take_over_own_create(
        &mut self,
        marker: &CreateMarker,
        error: RemoteError,
    ) -> Result<(), Error> {
        let Observation { key, desired, .. } = &self.observation;
        let Some(found) = self.connection.read(key).await? else {
            // Nothing exists under this id, so the conflict is about something else (such as a
            // remote id another identity provider already uses): report the remote's error.
            self.report.create_refused = marker.settled_by(error.kind);
            return Err(error.into());
        };
        if !marker.made(&found) {
            self.report.create_refused = marker.settled_by(error.kind);
            let message = format!(
                "a remote provider with id {:?} was created by someone else first; set spec.adopt: true to take it over",
                key.id
            );
            self.log_newly_blocked(
                REASON_ALREADY_EXISTS,
                &message,
                Some(&found),
                &marker.token(),
            );
            self.report.outcome.observed = None;
            self.report.outcome.result = OutcomeResult::Blocked {
                reason: REASON_ALREADY_EXISTS,
                message,
            };
            return Ok(());
        }
        info!(remote_id = %found.remote_id, "create answered 409 while create-pending: adopting our own earlier create");
        self.report.outcome.remote_id = Some(found.remote_id.clone());
        self.report.outcome.ownership = self.observation.system.clone();
        self.report.outcome.create_attempt = Some(marker.token());
        self.report.outcome.observed = Some(found.clone());
        let fields = desired.diff(&found.config);
        if !fields.is_empty() {
            let body = desired.with_creation_token(&marker.token());
            let updated = self
                .connection
                .update(&found, &body)
                .await
                .map_err(observe_again)?;
            self.report.outcome.observed = Some(updated);
            self.report.outcome.secrets_hash = desired.secrets_hash().map(str::to_owned);
            self.report.updated = Some(fields);
        }
        Ok(())
    }

    async fn update(&mut self, fields: Vec<String>) -> Result<(), Error> {
        let Remote::Fresh(Some(current)) = &self.observation.remote else {
            return Err(Error::Internal(
                "an update may only follow a fresh read of the provider",
            ));
        };
        // The update keeps (or, for an adopted provider, leaves) this object's evidence on
        // the provider: whoever reaches it under another name sees who manages it.
        let body = self
            .observation
            .desired
            .with_creation_token(&ownership::update_token(self.sp, current));
        let updated = self
            .connection
            .update(current, &body)
            .await
            .map_err(observe_again)?;
        info!(remote_id = %updated.remote_id, ?fields, "updated remote provider");
        self.report.outcome.observed = Some(updated);
        let sent = self.observation.desired.secrets_hash().map(str::to_owned);
        self.report.outcome.secrets_hash = sent;
        self.report.updated = Some(fields);
        Ok(())
    }

    /// Starts a requested refresh, unless one is already running or queued (it covers the
    /// request), and reads the provider again to show its new state.
    async fn refresh(&mut self) -> Result<(), Error> {
        let Some(value) = refresh_to_handle(self.sp) else {
            return Ok(());
        };
        let Some(current) = self.report.outcome.observed.clone() else {
            return Ok(());
        };
        if !current.state.busy
            && self
                .connection
                .refresh(&current.remote_id)
                .await
                .map_err(observe_again)?
        {
            self.report.refreshed = true;
            let mut reread = self.connection.read(&self.observation.key).await?;
            if let Some(found) = reread.as_mut() {
                let desired = Some(&self.observation.desired);
                self.connection.read_details(desired, found).await?;
            }
            self.report.outcome.observed = reread.or(Some(current));
        }
        self.report.outcome.refresh_handled = Some(value);
        Ok(())
    }

    fn conclude_synced(&mut self) {
        if !matches!(self.report.outcome.result, OutcomeResult::Synced { .. }) {
            return;
        }
        self.report.outcome.result = if is_paused(self.sp) {
            // Paused says so even when nothing waits: Argo CD shows it Suspended.
            OutcomeResult::Withheld {
                reason: REASON_PAUSED,
                message: "the remote provider matches the spec; remote writes are paused by the secprov.dev/paused annotation".into(),
                applied: true,
            }
        } else if self.sp.observe_only() {
            OutcomeResult::Synced {
                reason: REASON_OBSERVE_ONLY,
                message: "observing only; the remote provider matches the spec".into(),
            }
        } else {
            OutcomeResult::Synced {
                reason: "ReconcileSuccess",
                message: "the remote provider matches the spec".into(),
            }
        };
    }
}

/// A 404 or 409 answering a write to a provider just read means it changed under us (deleted
/// or replaced in the console): read it again soon rather than wait for a spec change.
fn observe_again(error: RemoteError) -> Error {
    match error.kind {
        RemoteErrorKind::NotFound | RemoteErrorKind::Conflict => Error::RemoteChanged(error),
        _ => error.into(),
    }
}
