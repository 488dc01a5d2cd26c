//! Carrying out a plan remotely: a create behind the create-pending marker (taking over our
//! own earlier create when it answers 409), an update, a requested refresh. Returns a
//! [`Report`] of what was done and learnt, for the status and the Events. Writes are made only
//! from a fresh read ([`Remote::Fresh`]); a plan over a snapshot is refused.
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::info;

use super::handle::{ConnectionHandle, Remote};
use super::observe::{Observation, create_pending, recorded_remote_id, refresh_to_handle};
use super::plan::{Plan, REASON_OBSERVE_ONLY};
use super::status::{Outcome, OutcomeResult};
use crate::api::{CREATE_PENDING_ANNOTATION, SecurityProvider};
use crate::error::{Error, RemoteError, RemoteErrorKind};

/// What one reconcile did and learnt.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// What the status is computed from.
    pub outcome: Outcome,
    /// This reconcile set the create-pending marker (the cached object doesn't show it yet).
    pub marked_pending: bool,
    /// A remote provider was created.
    pub created: bool,
    /// The fields an update wrote.
    pub updated: Option<Vec<&'static str>>,
    /// A refresh was started.
    pub refreshed: bool,
    /// How long the remote system asked us to wait after its failure.
    pub retry_after: Option<Duration>,
}

impl Report {
    /// A report of nothing done yet.
    fn new(outcome: Outcome) -> Report {
        Report {
            outcome,
            marked_pending: false,
            created: false,
            updated: None,
            refreshed: false,
            retry_after: None,
        }
    }

    /// The report of a reconcile that failed before anything was read or written.
    pub fn failed(sp: &SecurityProvider, error: &Error) -> Report {
        Report {
            retry_after: error.retry_after(),
            ..Report::new(Outcome {
                backend: sp.spec.backend(),
                remote_id: recorded_remote_id(sp),
                observed: None,
                result: failure(error),
                refresh_handled: None,
            })
        }
    }
}

/// The outcome result of an error.
pub fn failure(error: &Error) -> OutcomeResult {
    OutcomeResult::Failed {
        reason: error.reason(),
        message: error.to_string(),
        terminal: error.is_terminal(),
    }
}

/// Carries out `decision`. Remote failures end up in the report (with whatever was learnt
/// before them); only a failed Kubernetes API call is returned as an error.
pub async fn execute(
    sp: &SecurityProvider,
    connection: &ConnectionHandle<'_>,
    api: &Api<SecurityProvider>,
    observation: Observation,
    decision: Plan,
) -> Result<Report, Error> {
    let mut run = Execution::new(sp, connection, api, observation, &decision);
    match run.perform(decision).await {
        Ok(()) => Ok(run.report),
        Err(error @ Error::Kube(_)) => Err(error),
        Err(error) => {
            run.report.retry_after = error.retry_after();
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
    api: &'a Api<SecurityProvider>,
    observation: Observation,
    report: Report,
}

impl<'a, 'c> Execution<'a, 'c> {
    fn new(
        sp: &'a SecurityProvider,
        connection: &'a ConnectionHandle<'c>,
        api: &'a Api<SecurityProvider>,
        observation: Observation,
        decision: &Plan,
    ) -> Self {
        // A provider we may not manage is neither ours to record nor to mirror.
        let observed = match decision {
            Plan::Blocked { .. } => None,
            _ => observation.remote.provider().cloned(),
        };
        let remote_id = observed
            .as_ref()
            .map(|o| o.remote_id.clone())
            .or_else(|| recorded_remote_id(sp));
        let report = Report::new(Outcome {
            backend: sp.spec.backend(),
            remote_id,
            observed,
            result: OutcomeResult::Synced {
                reason: "ReconcileSuccess",
                message: String::new(),
            },
            refresh_handled: None,
        });
        Execution {
            sp,
            connection,
            api,
            observation,
            report,
        }
    }

    async fn perform(&mut self, decision: Plan) -> Result<(), Error> {
        match decision {
            Plan::Create => self.create().await?,
            Plan::Update { fields } => self.update(fields).await?,
            Plan::InSync => {}
            Plan::Withheld {
                reason, message, ..
            } => self.report.outcome.result = OutcomeResult::Withheld { reason, message },
            Plan::Blocked { reason, message } => {
                self.report.outcome.result = OutcomeResult::Blocked { reason, message };
                return Ok(());
            }
        }
        self.refresh().await?;
        self.conclude_synced();
        Ok(())
    }

    /// Sets the marker, then creates. The marker stays until the remote id is in status
    /// (cleared by the caller after the status write).
    async fn create(&mut self) -> Result<(), Error> {
        if self.observation.remote != Remote::Fresh(None) {
            return Err(Error::Internal(
                "a create may only follow a fresh read that found nothing",
            ));
        }
        mark_create_pending(self.api, self.sp).await?;
        self.report.marked_pending = true;
        match self.connection.create(&self.observation.desired).await {
            Ok(created) => {
                info!(remote_id = %created.remote_id, "created remote provider");
                self.report.outcome.remote_id = Some(created.remote_id.clone());
                self.report.outcome.observed = Some(created);
                self.report.created = true;
                Ok(())
            }
            Err(error) if error.kind == RemoteErrorKind::Conflict => {
                self.take_over_own_create(error).await
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The marker is set and the id appeared between our read and our create: that is our own
    /// earlier create whose answer was lost (a timeout, a dropped connection, a crash). Take it
    /// over instead of failing, and never create again.
    async fn take_over_own_create(&mut self, conflict: RemoteError) -> Result<(), Error> {
        let Observation { key, desired, .. } = &self.observation;
        let Some(found) = self.connection.read(key).await? else {
            return Err(conflict.into());
        };
        info!(remote_id = %found.remote_id, "create answered 409 while create-pending: adopting our own earlier create");
        self.report.outcome.remote_id = Some(found.remote_id.clone());
        self.report.outcome.observed = Some(found.clone());
        let fields = desired.diff(&found.config);
        if !fields.is_empty() {
            let updated = self.connection.update(&found, desired).await?;
            self.report.outcome.observed = Some(updated);
            self.report.updated = Some(fields);
        }
        Ok(())
    }

    async fn update(&mut self, fields: Vec<&'static str>) -> Result<(), Error> {
        let Remote::Fresh(Some(current)) = &self.observation.remote else {
            return Err(Error::Internal(
                "an update may only follow a fresh read of the provider",
            ));
        };
        let updated = self
            .connection
            .update(current, &self.observation.desired)
            .await?;
        info!(remote_id = %updated.remote_id, ?fields, "updated remote provider");
        self.report.outcome.observed = Some(updated);
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
        if !current.state.busy && self.connection.refresh(&current.remote_id).await? {
            self.report.refreshed = true;
            let reread = self.connection.read(&self.observation.key).await?;
            self.report.outcome.observed = reread.or(Some(current));
        }
        self.report.outcome.refresh_handled = Some(value);
        Ok(())
    }

    fn conclude_synced(&mut self) {
        if !matches!(self.report.outcome.result, OutcomeResult::Synced { .. }) {
            return;
        }
        self.report.outcome.result = if self.sp.observe_only() {
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

async fn mark_create_pending(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
) -> Result<(), Error> {
    if create_pending(sp) {
        return Ok(());
    }
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {CREATE_PENDING_ANNOTATION: now}}});
    api.patch_metadata(
        &sp.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Removes the create-pending marker (once status.remoteId is stored).
pub async fn clear_create_pending(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {CREATE_PENDING_ANNOTATION: null}}});
    api.patch_metadata(
        &sp.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
