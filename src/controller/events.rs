//! The Events of a SecurityProvider reconcile: one per remote change (created, updated, drift
//! corrected, refresh triggered) and one Warning per change of a failure (Normal for a pause).
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use std::time::Instant;

use tracing::warn;

use super::context::Context;
use super::event_budget::Admission;
use super::execute::Report;
use super::status;
use crate::api::{ProviderConnection, SecurityProvider, SecurityProviderStatus};

/// The `Created` Event of a create, within its connection's budget
/// ([`super::event_budget`]): on the provider, or counted in the summary that the first
/// create held in a window publishes on the connection when the window ends.
async fn publish_created(
    ctx: &Context,
    sp: &SecurityProvider,
    connection: Option<&ProviderConnection>,
    new_status: &SecurityProviderStatus,
) {
    let id = new_status.remote_id.clone().unwrap_or_default();
    let note = format!("created remote provider {id:?}");
    let Some(connection) = connection else {
        return publish(ctx, sp, EventType::Normal, "Created", "Create", note).await;
    };
    let key = format!(
        "{}/{}",
        connection.metadata.namespace.as_deref().unwrap_or_default(),
        connection.metadata.name.as_deref().unwrap_or_default()
    );
    let budget = &ctx.created_events;
    match budget.admit(
        &key,
        &sp.metadata.name.clone().unwrap_or_default(),
        Instant::now(),
    ) {
        Admission::Publish => publish(ctx, sp, EventType::Normal, "Created", "Create", note).await,
        Admission::Held { summary_due: None } => {}
        Admission::Held {
            summary_due: Some(due),
        } => {
            let (client, budget) = (ctx.client.clone(), budget.clone());
            let reference = connection.object_ref(&());
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                if let Some(summary) = budget.take_summary(&key) {
                    let event = event(EventType::Normal, "Created", "Create", &summary.note());
                    send(client, event, reference, "Created").await;
                }
            });
        }
    }
}

/// The Events for what one reconcile did.
pub async fn publish_events(
    ctx: &Context,
    sp: &SecurityProvider,
    report: &Report,
    new_status: &SecurityProviderStatus,
    connection: Option<&ProviderConnection>,
) {
    if report.created {
        publish_created(ctx, sp, connection, new_status).await;
    }
    if let Some(fields) = &report.updated {
        let (reason, note) = update_event(sp, fields);
        publish(ctx, sp, EventType::Normal, reason, "Update", note).await;
    }
    if report.refreshed {
        let note = "triggered a refresh of the provider's identities".to_owned();
        publish(
            ctx,
            sp,
            EventType::Normal,
            "RefreshTriggered",
            "Refresh",
            note,
        )
        .await;
    }
    let before = sp.status.as_ref().and_then(|s| s.left_behind.as_deref());
    if let Some(left) = new_status
        .left_behind
        .as_deref()
        .filter(|l| Some(*l) != before)
    {
        let note = format!(
            "left remote provider {:?} in {} (not deleted, no longer managed): the connection now reaches another remote system",
            left.remote_id, left.system
        );
        publish(
            ctx,
            sp,
            EventType::Warning,
            "RemoteProviderLeftBehind",
            "Reconcile",
            note,
        )
        .await;
    }
    // Failures and blocks: one Warning per change of the Synced condition, not per retry.
    let old = status::find(sp.status.as_ref(), status::SYNCED);
    if let Some(new) = status::find(Some(new_status), status::SYNCED)
        && new.status != "True"
        && old.is_none_or(|o| o.reason != new.reason || o.message != new.message)
    {
        let note = new.message.clone();
        let type_ = failure_event_type(&new.reason);
        publish(ctx, sp, type_, &new.reason, "Reconcile", note).await;
    }
}

/// The type of the Event reporting a failure or a withheld write with `reason`: Normal for a
/// pause, which is the user's decision (alerting must not page on it), else Warning.
pub fn failure_event_type(reason: &str) -> EventType {
    if reason == super::plan::REASON_PAUSED {
        EventType::Normal
    } else {
        EventType::Warning
    }
}

/// Reason and note of an update: a drift correction when the spec was already synced at
/// this generation (the spec didn't change, so the remote did).
fn update_event(sp: &SecurityProvider, fields: &[String]) -> (&'static str, String) {
    let prev_synced_generation = sp
        .status
        .as_ref()
        .filter(|s| status::find(Some(s), status::SYNCED).is_some_and(|c| c.status == "True"))
        .and_then(|s| s.observed_generation);
    if let Some(note) = crate::backend::secret_values_note(fields) {
        return ("Updated", note);
    }
    let fields = fields.join(", ");
    if prev_synced_generation.is_some() && prev_synced_generation == sp.metadata.generation {
        (
            "DriftCorrected",
            format!("remote provider had drifted in {fields}; restored"),
        )
    } else {
        (
            "Updated",
            format!("updated remote provider fields {fields}"),
        )
    }
}

/// Publishes one Event about `sp`, in the background.
pub async fn publish(
    ctx: &Context,
    sp: &SecurityProvider,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference: ObjectReference = sp.object_ref(&());
    let event = event(type_, reason, action, &note);
    tokio::spawn({
        let (client, reason) = (ctx.client.clone(), reason.to_owned());
        async move { send(client, event, reference, &reason).await }
    });
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(status::clip(note, status::EVENT_NOTE_MAX_BYTES)),
        action: action.into(),
        secondary: None,
    }
}

/// Writes one Event about `reference`.
async fn send(client: kube::Client, event: Event, reference: ObjectReference, reason: &str) {
    // In the background: an Event is informational, and waiting for its write would hold a
    // reconcile slot for one more API-server round trip. A recorder of its own: kube's
    // Recorder keeps every Event it published for 6 minutes (to aggregate repeats, which ours
    // never are: one per change) and scans that cache on every publish, so with thousands of
    // providers a shared one costs megabytes at rest and quadratic time while converging.
    let recorder = Recorder::new(client, super::reporter());
    if let Err(e) = recorder.publish(&event, &reference).await {
        warn!(error = %e, reason, "cannot publish event");
    }
}
