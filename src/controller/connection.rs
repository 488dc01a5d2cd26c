//! The ProviderConnection controller: resolves a connection's Secrets, checks the credentials
//! with one cheap remote read (`ProviderBackend::verify_credentials`) and reports the result as
//! `status.conditions[Ready]`, so `kubectl get providerconnections` and `kubectl wait` show
//! whether a connection works before any SecurityProvider uses it. It never writes remotely.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::Events;
use super::context::Context;
use super::patch::write_status;
use super::requeue::ErrorClass;
use super::status::{READY, RECONCILING, STALLED, condition};
use crate::api::{ConditionStatus, ProviderConnection, ProviderConnectionStatus};
use crate::error::Error;

/// Reason of `Ready=True` on a connection.
pub const REASON_CONNECTED: &str = "Connected";

/// Delay before checking again after a failure that may pass by itself (5xx, timeouts).
const TRANSIENT_RETRY: Duration = Duration::from_secs(30);

/// The status a connection should have after a check that ended with `result`.
pub fn connection_status(
    connection: &ProviderConnection,
    result: &Result<(), Error>,
    now: k8s_openapi::jiff::Timestamp,
) -> ProviderConnectionStatus {
    let previous = connection
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = connection.metadata.generation;
    let (status, reason, message) = match result {
        Ok(()) => (
            ConditionStatus::True,
            REASON_CONNECTED.to_owned(),
            "the credentials resolved and the remote system accepted them".to_owned(),
        ),
        Err(e) => (ConditionStatus::False, e.reason().to_owned(), e.to_string()),
    };
    let mut conditions = vec![condition(
        previous,
        READY,
        status,
        reason.clone(),
        &message,
        generation,
        now,
    )];
    // For kstatus (Flux): a failure that only a change can fix is Stalled, one that may pass
    // by itself is Reconciling; otherwise a Ready=False connection would count as Current.
    if let Err(e) = result {
        let type_ = if e.is_terminal() {
            STALLED
        } else {
            RECONCILING
        };
        conditions.push(condition(
            previous,
            type_,
            ConditionStatus::True,
            reason,
            &message,
            generation,
            now,
        ));
    }
    ProviderConnectionStatus {
        observed_generation: generation,
        backend: connection.spec.backend().map(|b| b.as_str().to_owned()),
        conditions,
    }
}

/// Reads the Secrets again (by name: a rotated, relabelled or deleted Secret is noticed here,
/// within the check interval), rebuilds the client when they changed, and asks the remote
/// system. A rebuilt client reconciles the connection's providers again.
async fn check(connection: &Arc<ProviderConnection>, ctx: &Context) -> Result<(), Error> {
    if connection.spec.backend().is_none() {
        return Err(Error::InvalidConnection {
            name: connection.name_any(),
            message: crate::backend::spec::one_block_message(),
        });
    }
    // The same client the providers use: one token bucket, one concurrency cap and (where the
    // backend authenticates for a token) one token per connection, as spec.rateLimit promises.
    let (handle, rebuilt) = ctx.recheck_handle(connection.clone()).await?;
    if rebuilt {
        ctx.connection_changed(ObjectRef::from_obj(connection.as_ref()));
    }
    handle.verify_credentials().await?;
    Ok(())
}

#[instrument(skip_all, fields(connection = %format!("{}/{}", connection.namespace().unwrap_or_default(), connection.name_any())))]
async fn reconcile(
    connection: Arc<ProviderConnection>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = connection.namespace().unwrap_or_default();
    if connection.metadata.deletion_timestamp.is_some() {
        // Kept only by its usage finalizer until its providers are cleaned up
        // (see `super::usage`): nothing to check, nothing to report.
        return Ok(Action::await_change());
    }
    let result = check(&connection, &ctx).await;
    if let Err(Error::Kube(_)) = &result {
        // The Kubernetes API itself failed: nothing to say about the connection.
        return result.map(|()| Action::await_change());
    }
    let new_status = connection_status(&connection, &result, k8s_openapi::jiff::Timestamp::now());
    ctx.metrics.connection_observed(
        &namespace,
        &connection.name_any(),
        connection.spec.backend().map_or("unknown", |b| b.as_str()),
        result.is_ok(),
    );
    let api: Api<ProviderConnection> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = connection.status.as_ref();
    let name = connection.name_any();
    if (write_status(&api, &name, old, &new_status, &ctx.metrics).await?).is_some() {
        match &result {
            Ok(()) => info!("connection ready"),
            Err(e) => warn!(reason = e.reason(), error = %e, "connection not ready"),
        }
        publish_transition(&ctx, &connection, &new_status).await;
        // Providers that failed on this connection's Secrets or credentials wait for a
        // change: this is it. (Not on the first check: every provider starts by itself, and a
        // second start would repeat a terminal failure, such as a refused create.)
        if ready_changed(old, &new_status) {
            ctx.connection_changed(ObjectRef::from_obj(connection.as_ref()));
        }
    }
    let interval = ctx.settings.connection_check_interval;
    Ok(match &result {
        // Secrets are not watched: a missing or unusable one is read again soon (an API-server
        // read, nothing remote), so a Secret created or fixed a moment later is picked up.
        Err(e) if !e.is_terminal() || ErrorClass::of(e) == ErrorClass::Secret => {
            Action::requeue(TRANSIENT_RETRY.min(interval))
        }
        // Terminal failures also come back at the interval: a key can be activated remotely
        // without any change in Kubernetes.
        _ => Action::requeue(interval),
    })
}

/// Whether the Ready condition of a connection that had one changed status or reason.
fn ready_changed(old: Option<&ProviderConnectionStatus>, new: &ProviderConnectionStatus) -> bool {
    let ready = |s: &ProviderConnectionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    old.and_then(ready)
        .is_some_and(|before| Some(before) != ready(new))
}

/// One Event when the Ready condition changes status or reason (not on every check).
async fn publish_transition(
    ctx: &Context,
    connection: &ProviderConnection,
    new_status: &ProviderConnectionStatus,
) {
    let ready_of = |s: Option<&ProviderConnectionStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let Some((status, reason, message)) = ready_of(Some(new_status)) else {
        return;
    };
    let previous = ready_of(connection.status.as_ref());
    if previous
        .as_ref()
        .is_some_and(|(s, r, _)| *s == status && *r == reason)
    {
        return;
    }
    let type_ = if status == "True" {
        // A first successful check is the normal case: say nothing.
        if previous.is_none() {
            return;
        }
        EventType::Normal
    } else {
        EventType::Warning
    };
    let event = Event {
        type_,
        reason: reason.clone(),
        note: Some(super::status::clip(
            &message,
            super::status::EVENT_NOTE_MAX_BYTES,
        )),
        action: "VerifyCredentials".into(),
        secondary: None,
    };
    if let Err(e) = ctx
        .recorder
        .publish(&event, &connection.object_ref(&()))
        .await
    {
        warn!(error = %e, reason, "cannot publish event");
    }
}

fn error_policy(_connection: Arc<ProviderConnection>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(reason = error.reason(), %error, "connection check failed");
    Action::requeue(TRANSIENT_RETRY.min(ctx.settings.connection_check_interval))
}

/// Runs the connection controller on the shared connection watch (whose cache is
/// `ctx.connections`) until `shutdown` resolves. Each connection is checked again every
/// `connection_check_interval`.
pub async fn run(
    ctx: Arc<Context>,
    connection_events: Events<ProviderConnection>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Status writes (our own included) do not change the generation: ignore them.
    let changed_connections = connection_events
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    info!("starting connection controller");
    Controller::for_stream(changed_connections, ctx.connections.clone())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection controller event");
            }
        })
        .await;
    info!("connection controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProviderConnectionSpec;
    use crate::api::SecretKeyRef;
    use crate::api::provider_connection::CoveoConnection;
    use crate::error::{RemoteError, RemoteErrorKind};

    fn connection() -> ProviderConnection {
        let mut c = ProviderConnection::new(
            "coveo",
            ProviderConnectionSpec {
                coveo: Some(CoveoConnection {
                    organization_id: "org".into(),
                    endpoint: None,
                    api_key_secret_ref: SecretKeyRef {
                        name: "k".into(),
                        key: "apiKey".into(),
                    },
                }),
                keystone: None,
                jitsudo: None,
                rate_limit: None,
                timeout_seconds: None,
                max_response_bytes: None,
                ca_bundle_secret_ref: None,
            },
        );
        c.metadata.generation = Some(4);
        c
    }

    #[test]
    fn providers_are_triggered_by_a_ready_change_not_by_the_first_check() {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let c = connection();
        let denied = Err(Error::SecretNotFound("k".into()));
        let first = connection_status(&c, &denied, now);
        assert!(!ready_changed(None, &first), "the first check is no change");
        assert!(!ready_changed(Some(&first), &first));
        let connected = connection_status(&c, &Ok(()), now);
        assert!(ready_changed(Some(&first), &connected));
        let unauthorized = Err(Error::Remote(RemoteError::transport(
            "coveo",
            "verify",
            RemoteErrorKind::Unauthorized,
            "401",
        )));
        let other_reason = connection_status(&c, &unauthorized, now);
        assert!(ready_changed(Some(&first), &other_reason), "a new reason");
    }

    #[test]
    fn success_is_ready_connected_with_backend_and_generation() {
        let s = connection_status(
            &connection(),
            &Ok(()),
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.backend.as_deref(), Some("coveo"));
        assert_eq!(s.conditions[0].type_, "Ready");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, REASON_CONNECTED);
        assert_eq!(
            s.conditions.len(),
            1,
            "no Reconciling/Stalled when connected"
        );
    }

    #[test]
    fn failures_carry_their_reason_and_keep_transition_time_while_unchanged() {
        let mut c = connection();
        let unauthorized = Err(Error::Remote(RemoteError::transport(
            "coveo",
            "verify",
            RemoteErrorKind::Unauthorized,
            "401",
        )));
        let first = connection_status(&c, &unauthorized, "2026-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(first.conditions[0].status, "False");
        assert_eq!(first.conditions[0].reason, "RemoteUnauthorized");
        assert_eq!(first.conditions[1].type_, "Stalled");
        assert_eq!(first.conditions[1].status, "True");
        c.status = Some(first.clone());
        let later = connection_status(&c, &unauthorized, "2026-01-02T00:00:00Z".parse().unwrap());
        assert_eq!(
            first, later,
            "an unchanged result must not cause a status write"
        );
        let missing = Err(Error::SecretNotFound("k".into()));
        let s = connection_status(&c, &missing, "2026-01-03T00:00:00Z".parse().unwrap());
        assert_eq!(s.conditions[0].reason, "SecretNotFound");
        let unavailable = Err(Error::Remote(RemoteError::transport(
            "coveo",
            "verify",
            RemoteErrorKind::Unavailable,
            "503",
        )));
        let s = connection_status(&c, &unavailable, "2026-01-04T00:00:00Z".parse().unwrap());
        assert_eq!(s.conditions[1].type_, "Reconciling");
        assert_eq!(s.conditions.len(), 2);
    }
}
