//! The reconcile's paths against a mocked Kubernetes API and a fake backend: each test
//! asserts the exact Kubernetes requests and remote calls, in order.
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::execute::execute;
use super::fixtures::*;
use super::handle::Remote;
use super::observe::Observation;
use super::plan::Plan;
use super::reconcile::reconcile;
use super::status::{Outcome, OutcomeResult, compute_status};
use crate::api::provider_connection::BackendKind;
use crate::api::{
    CREATE_PENDING_ANNOTATION, PAUSED_ANNOTATION, REFRESH_ANNOTATION, SecurityProvider,
};
use crate::backend::{ObservedProvider, ProviderKey};

const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// `sp` as the reconcile of `observed` left it: remoteId, Synced and Ready True for its
/// generation.
fn in_sync(mut sp: SecurityProvider, observed: &ObservedProvider) -> SecurityProvider {
    let outcome = Outcome {
        backend: Some(BackendKind::Coveo),
        remote_id: Some(observed.remote_id.clone()),
        observed: Some(observed.clone()),
        result: OutcomeResult::Synced {
            reason: "ReconcileSuccess",
            message: "the remote provider matches the spec".into(),
        },
        refresh_handled: None,
    };
    let now = "2026-01-01T00:00:00Z".parse().unwrap();
    sp.status = Some(compute_status(None, sp.metadata.generation, &outcome, now));
    sp
}

fn deleting(mut sp: SecurityProvider) -> SecurityProvider {
    sp.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    sp
}

fn marker(body: &Value) -> &Value {
    &body["metadata"]["annotations"][CREATE_PENDING_ANNOTATION]
}

fn condition<'a>(body: &'a Value, type_: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn create_sets_the_marker_first_and_clears_it_after_the_status_write() {
    let h = Harness::new(Some(provider()), &[]).await;
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();

    let status = status_path();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            // A fresh read: an attempt pending in a newer copy keeps its id.
            format!("GET {SP_PATH}"),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            format!("PATCH {status}"),
            format!("PATCH {SP_PATH}"),
        ]
    );
    let kube = h.timeline.kube();
    let (_, _, set_type, set) = &kube[1];
    assert_eq!(set_type, MERGE);
    let token = marker(set).as_str().expect("marker set").to_owned();
    assert!(token.starts_with("sp-uid/"), "{token}");
    // The create carries the attempt's token as evidence.
    let created = h.fake.providers.lock().unwrap()["idp"]
        .config
        .creation_token();
    assert_eq!(created.as_deref(), Some(token.as_str()));
    let (_, uri, status_type, written) = &kube[2];
    assert_eq!(status_type, APPLY);
    assert!(uri.contains("fieldManager=secprov-operator") && uri.contains("force=true"));
    assert_eq!(written["status"]["remoteId"], "idp");
    assert_eq!(condition(written, "Synced")["status"], "True");
    let (_, _, clear_type, cleared) = &kube[3];
    assert_eq!(clear_type, MERGE);
    assert!(marker(cleared).is_null() && cleared["metadata"]["annotations"].is_object());
    assert_eq!(h.metrics.status_patch_count(), 1);
    h.wait_for_event("Created").await;
}

#[tokio::test]
async fn a_409_while_create_pending_takes_over_our_earlier_create() {
    let sp = annotate(provider(), CREATE_PENDING_ANNOTATION, "sp-uid/attempt1");
    let h = Harness::with_backend(Some(sp.clone()), |timeline| {
        let fake = FakeBackend::with(timeline, &[]);
        // Our earlier create landed (with this attempt's token) but its answer was lost.
        let lost = ObservedProvider {
            config: coveo_config("idp", "Lost answer").with_creation_token("sp-uid/attempt1"),
            ..remote("idp", "Lost answer")
        };
        *fake.lost_create.lock().unwrap() = Some(lost);
        fake
    })
    .await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();

    // No second marker write (it is set), one create only, then the takeover: read, update.
    let status = status_path();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            "remote create idp".to_owned(),
            "remote observe idp".to_owned(),
            "remote update idp".to_owned(),
            format!("PATCH {status}"),
            format!("PATCH {SP_PATH}"),
        ]
    );
    let kube = h.timeline.kube();
    assert_eq!(kube[0].3["status"]["remoteId"], "idp");
    assert_eq!(condition(&kube[0].3, "Synced")["status"], "True");
    assert!(marker(&kube[1].3).is_null());
    h.wait_for_event("Updated").await;
}

#[tokio::test]
async fn a_snapshot_showing_drift_is_read_again_before_the_update() {
    let synced = remote("idp", "idp");
    let sp = in_sync(provider(), &synced);
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "Drifted")]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    // The list (snapshot) shows the drift; the update is planned from a direct read.
    assert_eq!(
        h.timeline.remote(),
        ["list", "observe idp", "update idp"],
        "{:?}",
        h.timeline.steps()
    );
    h.wait_for_event("DriftCorrected").await;
}

#[tokio::test]
async fn a_resync_in_sync_is_served_by_the_snapshot_without_writes() {
    let synced = remote("idp", "idp");
    let sp = in_sync(provider(), &synced);
    let h = Harness::new(Some(sp.clone()), std::slice::from_ref(&synced)).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(h.timeline.steps(), ["remote list"], "no read, no write");
}

#[tokio::test]
async fn execute_refuses_a_write_planned_from_a_snapshot() {
    let sp = in_sync(provider(), &remote("idp", "idp"));
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "Drifted")]).await;
    let connection = h.ctx.connection(&sp).await.unwrap();
    let api: Api<SecurityProvider> = Api::namespaced(h.ctx.client.clone(), NAMESPACE);
    let observation = Observation {
        desired: coveo_config("idp", "idp"),
        key: ProviderKey {
            id: "idp".into(),
            known_remote_id: Some("idp".into()),
        },
        remote: Remote::Snapshot(remote("idp", "Drifted")),
        owned: true,
    };
    let decision = Plan::Update {
        fields: vec!["displayName"],
    };
    let report = execute(&sp, &connection, &api, observation.clone(), decision)
        .await
        .unwrap();
    assert!(
        matches!(
            report.outcome.result,
            OutcomeResult::Failed {
                reason: "InternalError",
                ..
            }
        ),
        "{report:?}"
    );
    let create = Observation {
        remote: Remote::Snapshot(remote("idp", "Drifted")),
        ..observation
    };
    let report = execute(&sp, &connection, &api, create, Plan::Create)
        .await
        .unwrap();
    assert!(matches!(
        report.outcome.result,
        OutcomeResult::Failed { .. }
    ));
    assert_eq!(h.timeline.steps(), Vec::<String>::new(), "nothing written");
}

#[tokio::test]
async fn a_paused_deletion_waits_and_says_paused() {
    let sp = deleting(annotate(
        in_sync(provider(), &remote("idp", "idp")),
        PAUSED_ANNOTATION,
        "true",
    ));
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
    let error = reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap_err();
    assert_eq!(error.reason(), "ReconcilePaused");
    // One status write, no finalizer removal, nothing remote.
    assert_eq!(h.timeline.steps(), [format!("PATCH {}", status_path())]);
    let written = &h.timeline.kube()[0].3;
    let synced = condition(written, "Synced");
    assert_eq!(synced["status"], "False");
    assert_eq!(synced["reason"], "ReconcilePaused");
    h.wait_for_event("ReconcilePaused").await;
}

#[tokio::test]
async fn a_refresh_request_is_started_once_and_recorded() {
    let idle = remote("idp", "idp");
    let sp = annotate(in_sync(provider(), &idle), REFRESH_ANNOTATION, "r1");
    let h = Harness::new(Some(sp.clone()), std::slice::from_ref(&idle)).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    // A refresh request reads fresh (no snapshot), refreshes, and reads the new state.
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            "remote refresh idp".to_owned(),
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path()),
        ]
    );
    let written = &h.timeline.kube()[0].3;
    assert_eq!(written["status"]["lastHandledRefreshAt"], "r1");
    h.wait_for_event("RefreshTriggered").await;
}

#[tokio::test]
async fn a_refresh_request_while_one_runs_is_recorded_without_a_second_refresh() {
    let mut busy = remote("idp", "idp");
    busy.state.busy = true;
    let sp = annotate(in_sync(provider(), &busy), REFRESH_ANNOTATION, "r2");
    let h = Harness::new(Some(sp.clone()), std::slice::from_ref(&busy)).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path()),
        ]
    );
    let written = &h.timeline.kube()[0].3;
    assert_eq!(written["status"]["lastHandledRefreshAt"], "r2");
}

#[tokio::test]
async fn cleanup_of_an_object_that_never_created_anything_touches_nothing_remote() {
    // Someone else's provider has our id: it must survive our deletion.
    let sp = deleting(provider());
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "theirs")]).await;
    let object = ObjectRef::from_obj(&sp);
    h.ctx.set_settling(&object, true);
    h.ctx.backoff_after_failure(&object);
    h.metrics
        .provider_observed(NAMESPACE, NAME, "coveo", true, false);
    assert!(h.metrics.encode().contains("idp"));
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    // A fresh read of the object (the cache may lag behind a create), then the finalizer.
    assert_eq!(
        h.timeline.steps(),
        [format!("GET {SP_PATH}"), format!("PATCH {SP_PATH}")]
    );
    let (_, _, content_type, body) = &h.timeline.kube()[1];
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        body.as_array().and_then(|ops| ops.last()).unwrap()["op"],
        json!("remove"),
        "the finalizer is removed: {body}"
    );
    // Per-object state goes with the object.
    assert!(!h.ctx.is_settling(&object));
    assert!(
        !h.metrics.encode().contains("idp"),
        "{}",
        h.metrics.encode()
    );
}

#[tokio::test]
async fn cleanup_deletes_the_provider_this_object_created() {
    let sp = deleting(in_sync(provider(), &remote("idp", "idp")));
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        ["remote delete idp".to_owned(), format!("PATCH {SP_PATH}")]
    );
    h.wait_for_event("Deleted").await;
}

#[tokio::test]
async fn a_new_connection_generation_or_a_deleted_connection_evicts_its_snapshots() {
    let synced = remote("idp", "idp");
    let sp = in_sync(provider(), &synced);
    let mut h = Harness::new(Some(sp.clone()), std::slice::from_ref(&synced)).await;
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(h.ctx.snapshot_slots(), 1);
    // Edit the connection: generation 1's snapshot is dropped, not kept for good.
    let edited = connection(2);
    h.update_connection(edited.clone());
    h.ctx.install_client(&edited, h.fake.clone()).await;
    drop(h.ctx.connection(&sp).await.unwrap());
    assert_eq!(h.ctx.snapshot_slots(), 0);
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(h.ctx.snapshot_slots(), 1);
    // Delete it: its snapshot and its client (with the credentials in it) go.
    let reference = ObjectRef::new(CONNECTION).within(NAMESPACE);
    h.ctx.forget_connection(&reference).await;
    assert_eq!(h.ctx.snapshot_slots(), 0);
    assert!(!h.ctx.has_client(&reference).await);
}

#[tokio::test]
async fn a_409_without_our_evidence_is_someone_elses_and_clears_the_marker() {
    let sp = annotate(provider(), CREATE_PENDING_ANNOTATION, "sp-uid/attempt1");
    let h = Harness::with_backend(Some(sp.clone()), |timeline| {
        let fake = FakeBackend::with(timeline, &[]);
        // Someone else's provider appeared between our read and our create.
        *fake.lost_create.lock().unwrap() = Some(remote("idp", "theirs"));
        fake
    })
    .await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            "remote create idp".to_owned(),
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path()),
            format!("PATCH {SP_PATH}"),
        ]
    );
    let kube = h.timeline.kube();
    let synced = condition(&kube[0].3, "Synced");
    assert_eq!(synced["reason"], "AlreadyExists");
    assert!(kube[0].3["status"]["remoteId"].is_null());
    assert!(marker(&kube[1].3).is_null(), "the create made nothing");
}

#[tokio::test]
async fn a_connection_running_its_share_of_reconciles_requeues_without_any_call() {
    let observed = remote("idp", "IdP");
    let sp = in_sync(provider(), &observed);
    let h = Harness::new(Some(sp.clone()), &[observed]).await;
    let share = h.ctx.settings.connection_share();
    assert_eq!(share, 8, "half of the default concurrency of 16");
    let held: Vec<_> = (0..share)
        .map(|_| h.ctx.connection_slot(&sp).unwrap().expect("a slot"))
        .collect();
    assert!(
        h.ctx.connection_slot(&sp).is_err(),
        "no slot past the share"
    );
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert!(
        h.timeline.steps().is_empty(),
        "a busy connection makes the reconcile requeue at once: {:?}",
        h.timeline.steps()
    );
    drop(held);
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert!(
        h.timeline.remote().contains(&"observe idp".to_owned()),
        "with a slot free it reconciles: {:?}",
        h.timeline.remote()
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_remote_ends_the_reconcile_at_its_deadline_as_remote_timeout() {
    let h = Harness::new(Some(provider()), &[]).await;
    *h.fake.observe_delay.lock().unwrap() = Some(std::time::Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(started.elapsed(), h.ctx.settings.reconcile_timeout);
    let kube = h.timeline.kube();
    let (_, uri, _, written) = kube.last().expect("a status write");
    assert!(uri.contains("/status"), "{uri}");
    let synced = condition(written, "Synced");
    assert_eq!(synced["reason"], "RemoteTimeout", "{synced}");
    assert!(
        synced["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 120s"),
        "{synced}"
    );
}
