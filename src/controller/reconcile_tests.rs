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
use super::metadata::ObjectMetadata;
use super::observe::Observation;
use super::plan::Plan;
use super::reconcile::reconcile;
use super::status::{Outcome, OutcomeResult, compute_status};
use crate::api::provider_connection::BackendKind;
use crate::api::provider_connection::CoveoConnection;
use crate::api::security_provider::{CreateAttempt, ManagementPolicy};
use crate::api::{
    CREATE_PENDING_ANNOTATION, FINALIZER, PAUSED_ANNOTATION, REFRESH_ANNOTATION, SecurityProvider,
};
use crate::backend::{ObservedProvider, ProviderKey};
use crate::error::{RemoteErrorKind, TERMINAL_RECHECK};
use kube::runtime::controller::Action;

const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// `sp` as the reconcile of `observed` left it: remoteId, Synced and Ready True for its
/// generation.
fn in_sync(mut sp: SecurityProvider, observed: &ObservedProvider) -> SecurityProvider {
    let outcome = Outcome {
        backend: Some(BackendKind::Coveo),
        remote_id: Some(observed.remote_id.clone()),
        ownership: connection(1).ownership(),
        create_attempt: None,
        left_behind: None,
        observed: Some(observed.clone()),
        result: OutcomeResult::Synced {
            reason: "ReconcileSuccess",
            message: "the remote provider matches the spec".into(),
        },
        refresh_handled: None,
        secrets_hash: None,
        deleting: false,
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

/// The Kubernetes writes among the recorded requests (method, path without query).
fn writes(h: &Harness) -> Vec<(String, String)> {
    h.timeline
        .kube()
        .into_iter()
        .filter(|(method, _, _, _)| method != "GET")
        .map(|(method, uri, _, _)| (method, uri.split('?').next().unwrap_or_default().into()))
        .collect()
}

/// The creation token the fake's provider `idp` carries.
fn created_token(h: &Harness) -> Option<String> {
    h.fake.providers.lock().unwrap()["idp"]
        .config
        .creation_token()
}

/// Checks that the reconcile of an object without a Ready condition began with its first
/// status (Ready=Unknown and Reconciling=True, before any remote call, conditional on the
/// cached resourceVersion), and takes it off the timeline: the test goes on with what followed.
fn first_status_written(h: &Harness) {
    let Some(Call::Kube {
        method, uri, body, ..
    }) = h.timeline.take_first()
    else {
        panic!("no first status write: {:?}", h.timeline.steps());
    };
    assert_eq!(
        (method.as_str(), uri.split('?').next()),
        ("PATCH", Some(status_path().as_str()))
    );
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(condition(&body, "Ready")["status"], "Unknown");
    assert_eq!(condition(&body, "Reconciling")["status"], "True");
}

/// `provider()` as first seen: no finalizer yet.
fn new_provider() -> SecurityProvider {
    let mut sp = provider();
    sp.metadata.finalizers = None;
    sp
}

#[tokio::test]
async fn create_sets_the_marker_first_and_records_its_attempt_with_the_remote_id() {
    let h = Harness::new(Some(provider()), &[]).await;
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);

    // The cache shows no marker, so no attempt is pending: the write is conditional on the
    // cached resourceVersion instead of a GET first (a newer copy would answer 409).
    let status = status_path();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            format!("PATCH {status}"),
        ]
    );
    let kube = h.timeline.kube();
    let (_, _, set_type, set) = &kube[0];
    assert_eq!(set_type, MERGE);
    assert_eq!(set["metadata"]["resourceVersion"], "1");
    assert!(
        set["metadata"]["finalizers"].is_null(),
        "already there: {set}"
    );
    let token = marker(set).as_str().expect("marker set").to_owned();
    assert!(token.starts_with("sp-uid/"), "{token}");
    // The create carries the attempt's token as evidence.
    assert_eq!(created_token(&h).as_deref(), Some(token.as_str()));
    let (_, uri, status_type, written) = &kube[1];
    assert_eq!(status_type, APPLY);
    assert!(uri.contains("fieldManager=secprov-operator") && uri.contains("force=true"));
    assert_eq!(written["status"]["remoteId"], "idp");
    assert_eq!(condition(written, "Synced")["status"], "True");
    // The attempt is recorded with the remote id it made: the marker is spent, not removed.
    assert_eq!(written["status"]["createAttempt"], token.as_str());
    // The first status (taken off the timeline above), then the outcome.
    assert_eq!(h.metrics.status_patch_count(), 2);
    h.wait_for_event("Created").await;

    // The object as that reconcile left it (spent marker, status written): its resync is
    // served by the snapshot, without a direct read or any write, as if no marker were there.
    let mut left = annotate(provider(), CREATE_PENDING_ANNOTATION, &token);
    left.status = Some(serde_json::from_value(written["status"].clone()).unwrap());
    let created = h.fake.providers.lock().unwrap()["idp"].clone();
    let h = Harness::new(Some(left.clone()), &[created]).await;
    reconcile(Arc::new(left), h.ctx.clone()).await.unwrap();
    assert_eq!(h.timeline.steps(), ["remote list"], "no read, no write");
}

#[tokio::test]
async fn a_new_objects_create_costs_two_writes_the_first_with_finalizer_and_marker() {
    let h = Harness::new(Some(new_provider()), &[]).await;
    let action = reconcile(Arc::new(new_provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    // One reconcile does it all (kube-runtime's finalizer helper took one of its own first).
    assert_ne!(action, Action::await_change());
    let (status, object) = (status_path(), SP_PATH.to_owned());
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {object}"),
            "remote create idp".to_owned(),
            format!("PATCH {status}"),
        ]
    );
    // Writes per created object: finalizer + marker, status (which spends the marker).
    let patch = || "PATCH".to_owned();
    assert_eq!(writes(&h), [(patch(), object.clone()), (patch(), status)]);
    let (_, _, content_type, claim) = &h.timeline.kube()[0];
    assert_eq!(content_type, MERGE);
    assert_eq!(claim["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(claim["metadata"]["resourceVersion"], "1");
    let token = marker(claim).as_str().expect("marker set");
    assert_eq!(created_token(&h).as_deref(), Some(token));
}

#[tokio::test]
async fn a_create_keeps_a_finalizer_another_controller_added() {
    let mut sp = new_provider();
    sp.metadata.finalizers = Some(vec!["other.example/keep".into()]);
    let h = Harness::new(Some(sp.clone()), &[]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    let claim = &h.timeline.kube()[0].3;
    assert_eq!(
        claim["metadata"]["finalizers"],
        json!(["other.example/keep", FINALIZER])
    );

    // Added after the cache saw the object: the conditional write fails, the object is read
    // once, and the write made again over what the API server holds.
    let mut stored = new_provider();
    stored.metadata.resource_version = Some("2".into());
    stored.metadata.finalizers = Some(vec!["other.example/late".into()]);
    let h = Harness::new(Some(stored), &[]).await;
    reconcile(Arc::new(new_provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    let object = SP_PATH.to_owned();
    assert_eq!(
        h.timeline.steps()[..5],
        [
            "remote observe idp".to_owned(),
            format!("PATCH {object}"),
            format!("GET {object}"),
            format!("PATCH {object}"),
            "remote create idp".to_owned(),
        ]
    );
    let kube = h.timeline.kube();
    let rewritten = &kube[2].3;
    assert_eq!(rewritten["metadata"]["resourceVersion"], "2");
    assert_eq!(
        rewritten["metadata"]["finalizers"],
        json!(["other.example/late", FINALIZER])
    );
    assert_eq!(
        created_token(&h).as_deref(),
        marker(rewritten).as_str(),
        "the create carries the marker written"
    );
}

#[tokio::test]
async fn a_stale_cache_keeps_the_attempt_id_the_api_server_holds() {
    // An earlier attempt set finalizer and marker; the cache shows neither yet.
    let mut stored = annotate(new_provider(), CREATE_PENDING_ANNOTATION, "sp-uid/earlier");
    stored.metadata.finalizers = Some(vec![FINALIZER.into()]);
    stored.metadata.resource_version = Some("2".into());
    let h = Harness::new(Some(stored), &[]).await;
    reconcile(Arc::new(new_provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    let (status, object) = (status_path(), SP_PATH.to_owned());
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {object}"),
            // 409: read once; marker and finalizer are there, nothing to write.
            format!("GET {object}"),
            "remote create idp".to_owned(),
            format!("PATCH {status}"),
        ]
    );
    assert_eq!(created_token(&h).as_deref(), Some("sp-uid/earlier"));
    assert_eq!(last_status(&h)["createAttempt"], "sp-uid/earlier", "spent");
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_alone_before_an_update_or_on_a_failure() {
    // Adopting (or any path but a create): the finalizer first, then the remote write.
    let mut sp = new_provider();
    sp.spec.adopt = Some(true);
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "Other name")]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    let object = SP_PATH.to_owned();
    let steps = h.timeline.steps();
    let at = |step: &str| steps.iter().position(|s| s == step).expect(step);
    assert!(
        at(&format!("PATCH {object}")) < at("remote update idp"),
        "{steps:?}"
    );
    let kube = h.timeline.kube();
    let (_, _, content_type, added) = kube
        .iter()
        .find(|(method, _, _, _)| method == "PATCH")
        .unwrap();
    assert_eq!(content_type, "application/json-patch+json");
    assert_eq!(
        added,
        &json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    );

    // A failure before any plan (no such connection): the finalizer still goes on.
    let mut sp = new_provider();
    sp.spec.connection_ref = "missing".into();
    let h = Harness::new(Some(sp.clone()), &[]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    assert_eq!(
        writes(&h),
        [
            ("PATCH".to_owned(), object),
            ("PATCH".to_owned(), status_path())
        ]
    );
    assert_eq!(h.timeline.kube()[0].2, "application/json-patch+json");
}

#[tokio::test]
async fn an_object_deleted_without_our_finalizer_is_left_alone() {
    let sp = deleting(annotate(
        new_provider(),
        CREATE_PENDING_ANNOTATION,
        "sp-uid/a1",
    ));
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
    let action = reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(h.timeline.steps().is_empty(), "{:?}", h.timeline.steps());
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
    first_status_written(&h);

    // The marker written again (a no-op over a current copy), one create only, then the
    // takeover: read, update.
    let status = status_path();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            "remote observe idp".to_owned(),
            "remote update idp".to_owned(),
            format!("PATCH {status}"),
        ]
    );
    let kube = h.timeline.kube();
    assert_eq!(marker(&kube[0].3), "sp-uid/attempt1", "the same attempt");
    assert_eq!(kube[1].3["status"]["remoteId"], "idp");
    assert_eq!(kube[1].3["status"]["createAttempt"], "sp-uid/attempt1");
    assert_eq!(condition(&kube[1].3, "Synced")["status"], "True");
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
    let metadata = ObjectMetadata::new(&api, &sp);
    let observation = Observation {
        desired: coveo_config("idp", "idp"),
        key: ProviderKey {
            id: "idp".into(),
            known_remote_id: Some("idp".into()),
        },
        remote: Remote::Snapshot(remote("idp", "Drifted")),
        owned: true,
        system: super::fixtures::connection(1).ownership(),
        retarget: None,
        managed_by: None,
    };
    let decision = Plan::Update {
        fields: vec!["displayName".to_owned()],
    };
    let report = execute(&sp, &connection, &metadata, observation.clone(), decision)
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
    let report = execute(&sp, &connection, &metadata, create, Plan::Create)
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
    // A pause is the user's decision: alerting on Warning Events must not fire.
    assert_eq!(h.events.types_of("ReconcilePaused"), ["Normal"]);
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
    h.ctx.with_record(&object, |record| {
        record.settling = true;
        record.failures = 2;
    });
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
    assert_eq!(h.ctx.records.peek(&object), Default::default());
    assert_eq!(h.ctx.records.len(), 0);
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
    assert_eq!(h.ctx.states.snapshot_slots(), 1);
    // Edit the connection: generation 1's snapshot is dropped, not kept for good.
    let edited = connection(2);
    h.update_connection(edited.clone());
    h.ctx.states.install_client(&edited, h.fake.clone()).await;
    drop(h.ctx.connection(&sp).await.unwrap());
    assert_eq!(h.ctx.states.snapshot_slots(), 0);
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(h.ctx.states.snapshot_slots(), 1);
    // Delete it: its snapshot and its client (with the credentials in it) go.
    let reference = ObjectRef::new(CONNECTION).within(NAMESPACE);
    h.ctx.forget_connection(&reference).await;
    assert_eq!(h.ctx.states.snapshot_slots(), 0);
    assert!(!h.ctx.states.has_client(&reference).await);
}

#[tokio::test]
async fn a_409_without_our_evidence_is_someone_elses_and_clears_the_marker() {
    let h = Harness::with_backend(Some(provider()), |timeline| {
        let fake = FakeBackend::with(timeline, &[]);
        // Someone else's provider appeared between our read and our create.
        *fake.lost_create.lock().unwrap() = Some(remote("idp", "theirs"));
        fake
    })
    .await;
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            "remote observe idp".to_owned(),
            // A status without remoteId: read what the API server stores first.
            format!("GET {SP_PATH}"),
            format!("PATCH {}", status_path()),
            format!("PATCH {SP_PATH}"),
        ]
    );
    let kube = h.timeline.kube();
    let synced = condition(&kube[2].3, "Synced");
    assert_eq!(synced["reason"], "AlreadyExists");
    assert!(kube[2].3["status"]["remoteId"].is_null());
    assert!(
        marker(&kube[3].3).is_null(),
        "the attempt's only send made nothing"
    );
}

/// e2e_crash's rare AlreadyExists: a send of the pending attempt went unanswered and is
/// committed late (a slow backend, or the operator was killed meanwhile); its retry is refused
/// (429, or 409) before that. The refusal says nothing about the earlier send, so the marker
/// stays, and the provider the earlier send makes is this object's own, never someone else's.
#[tokio::test]
async fn a_refused_retry_keeps_the_marker_an_earlier_send_of_the_attempt_may_land_under() {
    let sp = annotate(provider(), CREATE_PENDING_ANNOTATION, "sp-uid/attempt1");
    for refusal in [RemoteErrorKind::RateLimited, RemoteErrorKind::Conflict] {
        let h = Harness::new(Some(sp.clone()), &[]).await;
        h.fake.fail("create", refusal);
        reconcile(Arc::new(sp.clone()), h.ctx.clone())
            .await
            .unwrap();
        first_status_written(&h);
        let mut expected = vec![
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
        ];
        if refusal == RemoteErrorKind::Conflict {
            expected.push("remote observe idp".to_owned());
        }
        expected.extend([format!("GET {SP_PATH}"), format!("PATCH {}", status_path())]);
        // No write of the object after the status: the marker is not cleared.
        assert_eq!(h.timeline.steps(), expected, "{refusal:?}");
        assert_eq!(marker(&h.timeline.kube()[0].3), "sp-uid/attempt1");
    }

    // The earlier send lands: the next reconcile finds this attempt's evidence and adopts it,
    // recording the attempt (the marker is spent, no write to remove it).
    let landed = ObservedProvider {
        config: coveo_config("idp", "idp").with_creation_token("sp-uid/attempt1"),
        ..remote("idp", "idp")
    };
    let h = Harness::new(Some(sp.clone()), &[landed]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path()),
        ]
    );
    let status = last_status(&h);
    assert_eq!(status["remoteId"], "idp");
    assert_eq!(status["createAttempt"], "sp-uid/attempt1");
    assert_eq!(cond_of(&status, "Synced").1, "ReconcileSuccess");
}

/// `provider()` as the create of attempt `token` left it (in sync with `idp`): status records
/// the attempt with the remote id, and the spent marker stays.
fn created_by(token: &str) -> SecurityProvider {
    let sp = in_sync(provider(), &remote("idp", "idp"));
    let mut sp = annotate(sp, CREATE_PENDING_ANNOTATION, token);
    let attempt = CreateAttempt(token.into());
    sp.status.as_mut().unwrap().create_attempt = Some(Box::new(attempt));
    sp
}

/// `idp` as a create of attempt `token` made it.
fn made_by(token: &str) -> ObservedProvider {
    ObservedProvider {
        config: coveo_config("idp", "idp").with_creation_token(token),
        ..remote("idp", "idp")
    }
}

#[tokio::test]
async fn a_provider_deleted_out_of_band_is_created_again_under_a_new_attempt() {
    let sp = created_by("sp-uid/first");
    let h = Harness::new(Some(sp.clone()), &[]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote list".to_owned(),
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            format!("PATCH {}", status_path()),
        ]
    );
    let claim = &h.timeline.kube()[0].3;
    let token = marker(claim).as_str().expect("marker set");
    assert_ne!(token, "sp-uid/first", "a spent attempt is never resumed");
    assert_eq!(
        claim["metadata"]["resourceVersion"], "1",
        "written as before any create"
    );
    assert_eq!(created_token(&h).as_deref(), Some(token));
    assert_eq!(last_status(&h)["createAttempt"], token);
}

/// A remote id recorded before a new attempt (its provider deleted out of band) says nothing
/// about that attempt: a create whose answer was lost may land later, so its marker stays
/// until the provider is read again, and the provider it made is then this object's own.
#[tokio::test]
async fn a_lost_create_answer_keeps_its_marker_beside_an_older_remote_id() {
    let sp = created_by("sp-uid/first");
    let h = Harness::new(Some(sp.clone()), &[]).await;
    h.fake.fail("create", RemoteErrorKind::Unavailable);
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    let steps = h.timeline.steps();
    assert_eq!(
        steps[steps.len() - 2..],
        [
            "remote create idp".to_owned(),
            format!("PATCH {}", status_path())
        ],
        "no write removes the marker"
    );
    let token = marker(&h.timeline.kube()[0].3).as_str().unwrap().to_owned();
    let status = last_status(&h);
    assert_eq!(status["remoteId"], "idp");
    assert_eq!(status["createAttempt"], "sp-uid/first");

    // The send lands late: the next reconcile reads fresh (a create is pending), finds the
    // attempt's evidence and records the attempt, which spends the marker without a write.
    let mut pending = annotate(sp, CREATE_PENDING_ANNOTATION, &token);
    pending.status = Some(serde_json::from_value(status).unwrap());
    let h = Harness::new(Some(pending.clone()), &[made_by(&token)]).await;
    reconcile(Arc::new(pending), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path())
        ]
    );
    let status = last_status(&h);
    assert_eq!(status["createAttempt"], token.as_str());
    assert_eq!(cond_of(&status, "Ready").1, "Available");
}

/// After an upgrade: a marker an earlier version left beside status.remoteId (it crashed
/// between the status write and the marker's removal) is recorded as spent when the provider
/// carries its evidence, else removed as that version would have; either way one write.
#[tokio::test]
async fn a_marker_an_earlier_version_left_beside_the_remote_id_converges() {
    let legacy = annotate(
        in_sync(provider(), &remote("idp", "idp")),
        CREATE_PENDING_ANNOTATION,
        "sp-uid/a1",
    );
    let h = Harness::new(Some(legacy.clone()), &[made_by("sp-uid/a1")]).await;
    reconcile(Arc::new(legacy.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {}", status_path())
        ]
    );
    assert_eq!(last_status(&h)["createAttempt"], "sp-uid/a1");

    // Without its evidence on the provider (the oldest markers carry no attempt id).
    let oldest = annotate(legacy, CREATE_PENDING_ANNOTATION, "2026-12-01T10:00:00Z");
    let h = Harness::new(Some(oldest.clone()), &[remote("idp", "idp")]).await;
    reconcile(Arc::new(oldest), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        ["remote observe idp".to_owned(), format!("PATCH {SP_PATH}")]
    );
    let cleared = &h.timeline.kube()[0].3;
    assert!(marker(cleared).is_null() && cleared["metadata"]["annotations"].is_object());
}

/// The operator upgraded before its CRD (Helm never upgrades CRDs): the API server prunes
/// createAttempt, so the marker is not spent and is removed after the create, as before.
#[tokio::test]
async fn under_a_crd_without_create_attempt_the_marker_is_removed_as_before() {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(SecurityProvider::crd()).unwrap();
    let status = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"];
    assert!(
        status
            .as_object_mut()
            .unwrap()
            .remove("createAttempt")
            .is_some()
    );
    let raw = vec![(SP_CRD_PATH.to_owned(), crd)];
    let h = Harness::with_raw_objects(vec![provider()], raw, |timeline| {
        FakeBackend::with(timeline, &[])
    })
    .await;
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    assert_eq!(
        h.timeline.steps(),
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            format!("PATCH {}", status_path()),
            format!("PATCH {SP_PATH}"),
        ]
    );
    let cleared = &h.timeline.kube()[2].3;
    assert!(marker(cleared).is_null() && cleared["metadata"]["annotations"].is_object());
}

/// e2e_crash's other AlreadyExists: a first send refused (429) let the marker go, and the retry
/// ran on a cached copy that still showed it. Created under that marker without writing it, the
/// provider (its answer lost) carried evidence the object no longer held. The marker the cache
/// shows is written conditionally: stale, it is read fresh and written back before the create.
#[tokio::test]
async fn a_marker_only_the_stale_cache_still_shows_is_written_back_before_the_create() {
    let cached = annotate(provider(), CREATE_PENDING_ANNOTATION, "sp-uid/attempt1");
    let mut stored = provider();
    stored.metadata.resource_version = Some("2".into());
    let h = Harness::new(Some(stored), &[]).await;
    h.fake.fail("create", RemoteErrorKind::Unavailable);
    reconcile(Arc::new(cached), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    assert_eq!(
        h.timeline.steps()[..5],
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            format!("GET {SP_PATH}"),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
        ]
    );
    let written = &h.timeline.kube()[2].3;
    assert_eq!(written["metadata"]["resourceVersion"], "2");
    assert_eq!(
        marker(written),
        "sp-uid/attempt1",
        "on the object before the create that may land"
    );
}

/// The status body of the `n`th Kubernetes request (a status PATCH).
fn status_of(h: &Harness, n: usize) -> Value {
    let (method, uri, _, body) = &h.timeline.kube()[n];
    assert_eq!(
        (method.as_str(), uri.split('?').next().unwrap()),
        ("PATCH", status_path().as_str())
    );
    body["status"].clone()
}

/// The status written last.
fn last_status(h: &Harness) -> Value {
    let kube = h.timeline.kube();
    let n = kube
        .iter()
        .rposition(|(_, uri, _, _)| uri.starts_with(&status_path()))
        .expect("a status write");
    status_of(h, n)
}

fn cond_of<'a>(status: &'a Value, type_: &str) -> (&'a Value, &'a Value) {
    let found = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .expect("condition");
    (&found["status"], &found["reason"])
}

#[tokio::test]
async fn observe_only_records_no_ownership_so_a_later_manage_does_not_take_over() {
    let mut sp = provider();
    sp.spec.management_policy = Some(ManagementPolicy::Observe);
    let theirs = remote("idp", "theirs");
    let h = Harness::new(Some(sp.clone()), std::slice::from_ref(&theirs)).await;
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    let observed = last_status(&h);
    assert!(observed["remoteId"].is_null(), "{observed}");
    assert!(observed["ownership"].is_null(), "{observed}");
    assert_eq!(observed["currentStatus"], Value::Null);

    // Switch to Manage: the provider that was only watched is not ours.
    sp.status = Some(serde_json::from_value(observed).unwrap());
    sp.spec.management_policy = None;
    sp.metadata.generation = Some(2);
    let h = Harness::new(Some(sp.clone()), &[theirs]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(h.timeline.remote(), ["observe idp"], "no write");
    assert_eq!(cond_of(&last_status(&h), "Synced").1, "AlreadyExists");
}

/// The test connection pointed at another Coveo organization.
fn connection_to(organization: &str) -> crate::api::ProviderConnection {
    let mut c = connection(2);
    c.spec.coveo = Some(CoveoConnection {
        organization_id: organization.into(),
        ..c.spec.coveo.clone().unwrap()
    });
    c
}

#[tokio::test]
async fn a_connection_moved_to_another_organization_owns_nothing_there() {
    let sp = in_sync(provider(), &remote("idp", "idp"));
    assert_eq!(
        sp.status
            .as_ref()
            .unwrap()
            .ownership
            .as_ref()
            .unwrap()
            .scope,
        "org"
    );
    // In the new organization someone else has a provider with our id.
    let mut h = Harness::new(Some(sp.clone()), &[remote("idp", "production's own")]).await;
    let production = connection_to("org-prod");
    h.update_connection(production.clone());
    h.ctx
        .states
        .install_client(&production, h.fake.clone())
        .await;
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(h.timeline.remote(), ["observe idp"], "no update");
    let status = last_status(&h);
    assert_eq!(cond_of(&status, "Synced").1, "RemoteSystemChanged");
    assert_eq!(
        status["ownership"]["scope"], "org",
        "the record stays as it was"
    );

    // Deleting the object leaves that provider alone.
    let h2_sp = deleting(sp);
    reconcile(Arc::new(h2_sp), h.ctx.clone()).await.unwrap();
    assert!(!h.timeline.remote().iter().any(|c| c.starts_with("delete")));
    assert!(h.fake.providers.lock().unwrap().contains_key("idp"));
    h.wait_for_event("Orphaned").await;
}

/// The cache drops a spent marker (status's createAttempt stands for it): a provider adopted
/// over it after a confirmed change of remote system still removes the marker from the object.
#[tokio::test]
async fn a_spent_marker_the_cache_dropped_is_removed_when_another_provider_is_adopted() {
    let production = connection_to("org-prod");
    let to = production.ownership().unwrap().system_key();
    let mut sp = created_by("sp-uid/first");
    super::watches::strip_provider(&mut sp);
    assert_eq!(
        sp.metadata.annotations, None,
        "the cache dropped the spent marker"
    );
    sp.spec.adopt = Some(true);
    let sp = annotate(sp, crate::api::REMOTE_SYSTEM_CHANGE_ANNOTATION, &to);
    let mut h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
    h.update_connection(production.clone());
    h.ctx
        .states
        .install_client(&production, h.fake.clone())
        .await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    let status = last_status(&h);
    assert_eq!(status["ownership"]["scope"], "org-prod", "adopted there");
    assert!(status["createAttempt"].is_null());
    let cleared = h.timeline.kube().iter().any(|(method, uri, _, body)| {
        method == "PATCH"
            && !uri.contains("/status")
            && marker(body).is_null()
            && body["metadata"]["annotations"].is_object()
    });
    assert!(cleared, "{:?}", h.timeline.steps());
}

#[tokio::test]
async fn a_recorded_id_that_disappeared_is_not_replaced_by_one_found_by_name() {
    // JITSudo-like: the recorded id is gone; another provider has our name.
    let mut sp = in_sync(provider(), &remote("uuid-1", "idp"));
    sp.status.as_mut().unwrap().remote_id = Some("uuid-1".into());
    let by_name = ObservedProvider {
        remote_id: "uuid-2".into(),
        config: coveo_config("idp", "someone else's"),
        ..remote("uuid-2", "")
    };
    let h = Harness::new(Some(sp.clone()), &[by_name]).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert!(
        !h.timeline.remote().iter().any(|c| c.starts_with("update")),
        "{:?}",
        h.timeline.steps()
    );
    let status = last_status(&h);
    assert_eq!(cond_of(&status, "Synced").1, "AlreadyExists");
    assert_eq!(status["remoteId"], "uuid-1");
}

#[tokio::test]
async fn a_status_write_from_a_stale_cache_keeps_the_stored_remote_id() {
    // The API server stores remoteId; the cached copy does not show it yet.
    let mut stored = in_sync(provider(), &remote("idp", "idp"));
    stored.metadata.resource_version = Some("2".into());
    let mut cached = provider();
    cached.spec.connection_ref = "missing".into();
    let h = Harness::new(Some(stored), &[]).await;
    reconcile(Arc::new(cached), h.ctx.clone()).await.unwrap();
    first_status_written(&h);
    let steps = h.timeline.steps();
    assert_eq!(
        steps,
        [format!("GET {SP_PATH}"), format!("PATCH {}", status_path())]
    );
    let status = last_status(&h);
    assert_eq!(cond_of(&status, "Ready").1, "ConnectionNotFound");
    assert_eq!(status["remoteId"], "idp");
    assert_eq!(status["ownership"]["scope"], "org");
}

#[tokio::test]
async fn cleanup_reads_the_object_again_and_deletes_what_a_stale_cache_hid() {
    let stored = deleting(in_sync(provider(), &remote("idp", "idp")));
    let cached = deleting(provider());
    let h = Harness::new(Some(stored), &[remote("idp", "idp")]).await;
    reconcile(Arc::new(cached), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps(),
        [
            format!("GET {SP_PATH}"),
            "remote delete idp".to_owned(),
            format!("PATCH {SP_PATH}")
        ]
    );
}

#[tokio::test]
async fn cleanup_with_a_pending_create_not_found_waits_once_for_a_late_commit() {
    let sp = deleting(annotate(provider(), CREATE_PENDING_ANNOTATION, "sp-uid/a1"));
    let h = Harness::new(Some(sp.clone()), &[]).await;
    let error = reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "WaitingForPendingCreate");
    assert_eq!(h.timeline.steps(), ["remote observe idp"], "finalizer kept");
    let action = super::reconcile::error_policy(Arc::new(sp.clone()), &error, h.ctx.clone());
    assert_eq!(action, Action::requeue(h.ctx.settings.progress_interval));

    // The create committed late, with our attempt's evidence: the next try deletes it.
    let late = ObservedProvider {
        config: coveo_config("idp", "idp").with_creation_token("sp-uid/a1"),
        ..remote("idp", "idp")
    };
    h.fake.providers.lock().unwrap().insert("idp".into(), late);
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert!(h.fake.providers.lock().unwrap().is_empty());
    assert_eq!(
        h.timeline.steps().last().unwrap(),
        &format!("PATCH {SP_PATH}")
    );

    // Without a late commit, the second try lets the object go.
    let h = Harness::new(Some(sp.clone()), &[]).await;
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap_err();
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(
        h.timeline.steps().last().unwrap(),
        &format!("PATCH {SP_PATH}")
    );
}

#[tokio::test]
async fn adopting_a_provider_another_object_manages_is_refused_naming_it() {
    let ours = remote("idp", "idp");
    let mut other = in_sync(provider(), &ours);
    other.metadata.name = Some("first".into());
    other.metadata.namespace = Some("team-a".into());
    other.metadata.uid = Some("other-uid".into());
    let mut sp = provider();
    sp.spec.adopt = Some(true);
    sp.spec.display_name = Some("Exported copy".into());
    let h = Harness::with_objects(vec![sp.clone(), other], |t| {
        FakeBackend::with(t, std::slice::from_ref(&ours))
    })
    .await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_eq!(h.timeline.remote(), ["observe idp"], "no write");
    let status = last_status(&h);
    let (ready, reason) = cond_of(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        (Some("False"), Some("AlreadyManaged"))
    );
    let message = status["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("team-a/first"), "{message}");
    assert!(status["remoteId"].is_null());
}

async fn action_after_create_failure(kind: RemoteErrorKind) -> (Action, Value) {
    let h = Harness::new(Some(provider()), &[]).await;
    h.fake.fail("create", kind);
    let action = reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    (action, last_status(&h))
}

#[tokio::test]
async fn only_an_invalid_configuration_waits_for_a_spec_change() {
    let (action, status) = action_after_create_failure(RemoteErrorKind::InvalidConfiguration).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(cond_of(&status, "Stalled").0, "True");
    for kind in [
        RemoteErrorKind::Unauthorized,
        RemoteErrorKind::Forbidden,
        RemoteErrorKind::Rejected,
    ] {
        let (action, status) = action_after_create_failure(kind).await;
        assert_eq!(action, Action::requeue(TERMINAL_RECHECK), "{kind:?}");
        assert_eq!(cond_of(&status, "Ready").1, kind.reason());
    }
}

#[tokio::test]
async fn a_404_on_update_observes_again_soon() {
    let mut sp = in_sync(provider(), &remote("idp", "idp"));
    sp.metadata.generation = Some(2);
    sp.spec.display_name = Some("New".into());
    let h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
    h.fake.fail("update", RemoteErrorKind::NotFound);
    let action = reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert_ne!(action, Action::await_change());
    assert_ne!(action, Action::requeue(TERMINAL_RECHECK));
    let status = last_status(&h);
    assert_eq!(cond_of(&status, "Synced").1, "RemoteChanged");
    assert_eq!(cond_of(&status, "Reconciling").0, "True");
    // Generation 2 was not applied: Ready no longer says it matches.
    let (ready, _) = cond_of(&status, "Ready");
    assert_eq!(ready, "False");
}

#[tokio::test]
async fn a_paused_object_in_sync_says_paused_and_stays_ready() {
    let synced = remote("idp", "idp");
    let sp = annotate(in_sync(provider(), &synced), PAUSED_ANNOTATION, "true");
    let h = Harness::new(Some(sp.clone()), std::slice::from_ref(&synced)).await;
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    let status = last_status(&h);
    let (synced_status, synced_reason) = cond_of(&status, "Synced");
    assert_eq!(
        (synced_status.as_str(), synced_reason.as_str()),
        (Some("False"), Some("ReconcilePaused"))
    );
    assert_eq!(cond_of(&status, "Ready").0, "True");
    h.wait_for_event("ReconcilePaused").await;
    assert_eq!(h.events.types_of("ReconcilePaused"), ["Normal"]);
}

#[tokio::test]
async fn a_spec_change_withheld_is_not_ready_for_its_generation() {
    for paused in [true, false] {
        let mut sp = in_sync(provider(), &remote("idp", "idp"));
        sp.metadata.generation = Some(2);
        sp.spec.display_name = Some("New".into());
        if paused {
            sp = annotate(sp, PAUSED_ANNOTATION, "true");
        } else {
            sp.spec.management_policy = Some(ManagementPolicy::Observe);
        }
        let h = Harness::new(Some(sp.clone()), &[remote("idp", "idp")]).await;
        reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
        assert_eq!(h.timeline.remote(), ["observe idp"], "nothing written");
        let status = last_status(&h);
        let (ready, reason) = cond_of(&status, "Ready");
        let expected = if paused {
            "ReconcilePaused"
        } else {
            "ObserveOnly"
        };
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            (Some("False"), Some(expected))
        );
        assert_eq!(status["observedGeneration"], 2);
        // kstatus: not Current while the change waits.
        assert_eq!(
            cond_of(&status, "Stalled"),
            (&json!("True"), &json!(expected))
        );
    }
}

#[tokio::test]
async fn a_connection_running_its_share_of_reconciles_requeues_without_any_call() {
    let observed = remote("idp", "IdP");
    let sp = in_sync(provider(), &observed);
    let h = Harness::new(Some(sp.clone()), &[observed]).await;
    let share = h.ctx.settings.slot_limits().connection;
    assert_eq!(share, 8, "half of the default concurrency of 16");
    let held: Vec<_> = (0..share)
        .map(|_| h.ctx.reconcile_slot(&sp).unwrap().expect("a slot"))
        .collect();
    assert!(h.ctx.reconcile_slot(&sp).is_err(), "no slot past the share");
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

/// A connection named `name` in the test namespace, like the test connection.
fn another_connection(name: &str) -> crate::api::ProviderConnection {
    let mut c = connection(1);
    c.metadata.name = Some(name.into());
    c.metadata.uid = Some(format!("{name}-uid"));
    c
}

#[tokio::test]
async fn a_namespace_holding_its_share_through_other_connections_requeues_without_any_call() {
    let observed = remote("idp", "IdP");
    let sp = in_sync(provider(), &observed);
    let mut h = Harness::new(Some(sp.clone()), &[observed]).await;
    let limits = h.ctx.settings.slot_limits();
    assert_eq!(limits.namespace, 8, "half of the default concurrency of 16");
    // Two other connections of the namespace (a tenant's hanging remotes) take its share
    // between them; neither reaches its own connection share.
    let mut held = Vec::new();
    for name in ["hang-a", "hang-b"] {
        h.update_connection(another_connection(name));
        let mut greedy = provider();
        greedy.spec.connection_ref = name.into();
        let slots = (0..limits.namespace / 2).map(|_| h.ctx.reconcile_slot(&greedy));
        held.extend(slots.map(|slot| slot.unwrap().expect("a slot")));
    }
    let refused = h.ctx.reconcile_slot(&sp).unwrap_err();
    assert_eq!(refused, super::slots::SlotRefused::NamespaceShare);
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    assert!(
        h.timeline.steps().is_empty(),
        "its own connection is idle, yet the namespace holds its share: {:?}",
        h.timeline.steps()
    );
    assert!(
        h.metrics
            .encode()
            .contains("secprov_reconcile_slot_refusals_total{share=\"namespace\"} 1"),
        "refusals are counted by share"
    );
    held.pop();
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert!(
        h.timeline.remote().contains(&"observe idp".to_owned()),
        "one slot of the namespace's share free: it reconciles: {:?}",
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

/// The test provider sending the value of Secret `creds` key `token` as a sensitive parameter,
/// and that Secret (opted in) as the mocked API server holds it.
fn provider_with_a_secret_value() -> (SecurityProvider, (String, Value)) {
    let mut sp = provider();
    let coveo = sp.spec.coveo.as_mut().unwrap();
    coveo.sensitive_parameters.insert(
        "ApiToken".into(),
        crate::api::SecretKeyRef {
            name: "creds".into(),
            key: "token".into(),
        },
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NAMESPACE,
                     "labels": {"secprov.dev/credential": "true"}},
        "data": {"token": "dG9rLTE="}});
    let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/creds");
    (sp, (path, secret))
}

#[tokio::test]
async fn secret_values_are_sent_once_even_when_the_cache_does_not_show_the_recorded_hash() {
    let (sp, secret) = provider_with_a_secret_value();
    let sp = in_sync(sp, &remote("idp", "idp"));
    let h = Harness::with_raw_objects(vec![sp.clone()], vec![secret], |timeline| {
        FakeBackend::with(timeline, &[remote("idp", "idp")])
    })
    .await;
    reconcile(Arc::new(sp.clone()), h.ctx.clone())
        .await
        .unwrap();
    // The resync snapshot shows the values unsent; the update follows a direct read.
    assert_eq!(h.timeline.remote(), ["list", "observe idp", "update idp"]);
    let written = h
        .timeline
        .kube()
        .into_iter()
        .rev()
        .find(|(method, uri, _, _)| method == "PATCH" && uri.contains("/status"))
        .map(|(_, _, _, body)| body)
        .expect("a status write");
    let hash = written["status"]["coveo"]["secretsHash"]
        .as_str()
        .unwrap_or("");
    assert!(hash.starts_with("hmac-sha256:"), "{written}");
    assert!(!written.to_string().contains("tok-1"), "{written}");
    // The cache still shows the status from before that write: no second PUT.
    let before = h.timeline.steps().len();
    reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    assert!(
        h.timeline.steps().len() > before,
        "the second reconcile ran"
    );
    let updates = h
        .timeline
        .remote()
        .iter()
        .filter(|c| c.starts_with("update"))
        .count();
    assert_eq!(updates, 1, "{:?}", h.timeline.steps());
}

/// A create refused after its provider was made (Coveo: the POST succeeded, the schedules'
/// PUT was refused) must not settle the attempt: the marker stays, and the next reconcile
/// adopts the provider as this object's own instead of calling it someone else's for ever.
#[tokio::test]
async fn a_create_refused_after_its_provider_was_made_keeps_the_marker() {
    let h = Harness::new(Some(provider()), &[]).await;
    *h.fake.fail_after_create.lock().unwrap() = Some(RemoteErrorKind::InvalidConfiguration);
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    first_status_written(&h);
    let steps = h.timeline.steps();
    assert_eq!(
        steps[..4],
        [
            "remote observe idp".to_owned(),
            format!("PATCH {SP_PATH}"),
            "remote create idp".to_owned(),
            "remote observe idp".to_owned(),
        ],
        "the refusal is checked against what the attempt may have made"
    );
    let token = marker(&h.timeline.kube()[0].3).as_str().unwrap().to_owned();
    let clears: Vec<_> = h
        .timeline
        .kube()
        .into_iter()
        .filter(|(method, uri, _, body)| {
            method == "PATCH" && !uri.contains("/status") && marker(body).is_null()
        })
        .collect();
    assert!(clears.is_empty(), "the marker was removed: {clears:?}");
    assert_eq!(created_token(&h).as_deref(), Some(token.as_str()));

    // The next reconcile finds the attempt's evidence and records the provider as its own.
    let pending = annotate(provider(), CREATE_PENDING_ANNOTATION, &token);
    let made = h.fake.providers.lock().unwrap()["idp"].clone();
    let h = Harness::new(Some(pending.clone()), &[made]).await;
    reconcile(Arc::new(pending), h.ctx.clone()).await.unwrap();
    let status = last_status(&h);
    assert_eq!(status["remoteId"], "idp");
    assert_eq!(status["createAttempt"], token.as_str());
}
