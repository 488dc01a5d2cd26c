//! What a reconcile tells the people watching it: the reconcile counter counts failures that
//! apply reports in status, and a warning is logged when an object starts failing or fails for
//! another reason, not on every retry.
use std::io::Write;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;

use super::fixtures::*;
use super::reconcile::reconcile;
use super::status::{Outcome, OutcomeResult, compute_status};
use crate::api::SecurityProvider;
use crate::api::provider_connection::BackendKind;
use crate::error::RemoteErrorKind;

/// `sp` as a failed reconcile with `reason` left it.
fn failing(mut sp: SecurityProvider, reason: &'static str) -> SecurityProvider {
    let outcome = Outcome {
        backend: Some(BackendKind::Coveo),
        remote_id: None,
        ownership: None,
        create_attempt: None,
        left_behind: None,
        observed: None,
        result: OutcomeResult::Failed {
            reason,
            message: "earlier failure".into(),
            terminal: false,
        },
        refresh_handled: None,
        secrets_hash: None,
        deleting: false,
    };
    let now = "2026-01-01T00:00:00Z".parse().unwrap();
    sp.status = Some(compute_status(None, sp.metadata.generation, &outcome, now));
    sp
}

/// A harness whose remote fails every read with `kind`.
async fn failing_remote(sp: &SecurityProvider, kind: RemoteErrorKind) -> Harness {
    let h = Harness::new(Some(sp.clone()), &[]).await;
    *h.fake.observe_failure.lock().unwrap() = Some(kind);
    h
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn remote_failures_handled_in_apply_count_as_errors_by_reason() {
    let h = failing_remote(&provider(), RemoteErrorKind::Unavailable).await;
    for _ in 0..3 {
        // The failure is written to status and retried: the reconcile itself returns Ok.
        reconcile(Arc::new(provider()), h.ctx.clone())
            .await
            .unwrap();
    }
    *h.fake.observe_failure.lock().unwrap() = Some(RemoteErrorKind::Unauthorized);
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    let text = h.metrics.encode();
    let errors = |reason: &str| {
        sample(
            &text,
            &format!(r#"secprov_reconciles_total{{result="error",reason="{reason}"}}"#),
        )
    };
    assert_eq!(errors("RemoteUnavailable"), Some(3.0), "{text}");
    assert_eq!(errors("RemoteUnauthorized"), Some(1.0), "{text}");
    assert!(!text.contains(r#"result="success""#), "{text}");
}

#[tokio::test]
async fn a_reconcile_that_syncs_counts_as_success() {
    let h = Harness::new(Some(provider()), &[]).await;
    reconcile(Arc::new(provider()), h.ctx.clone())
        .await
        .unwrap();
    let text = h.metrics.encode();
    let series = r#"secprov_reconciles_total{result="success",reason="Reconciled"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    assert!(!text.contains(r#"result="error""#), "{text}");
}

/// Everything logged while `work` runs, as plain text.
async fn logged<F: Future<Output = ()>>(work: F) -> String {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The test runtime is single-threaded: the reconcile runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    work.await;
    String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
}

async fn failure_warnings(sp: SecurityProvider, kind: RemoteErrorKind) -> usize {
    let h = failing_remote(&sp, kind).await;
    let log = logged(async {
        reconcile(Arc::new(sp), h.ctx.clone()).await.unwrap();
    })
    .await;
    log.matches("SecurityProvider failing").count()
}

#[tokio::test]
async fn a_warning_is_logged_when_failing_starts_or_changes_reason_not_on_retries() {
    // Was fine (no status yet), now fails: a warning.
    assert_eq!(
        failure_warnings(provider(), RemoteErrorKind::Unavailable).await,
        1
    );
    // Failed the same way before: a retry, no warning.
    let same = failing(provider(), "RemoteUnavailable");
    assert_eq!(
        failure_warnings(same, RemoteErrorKind::Unavailable).await,
        0
    );
    // Failed for another reason before: a warning.
    let other = failing(provider(), "RemoteUnavailable");
    assert_eq!(
        failure_warnings(other, RemoteErrorKind::Unauthorized).await,
        1
    );
}

#[tokio::test]
async fn a_deleted_connection_leaves_no_ready_gauge() {
    let h = Harness::new(Some(provider()), &[]).await;
    h.metrics
        .connection_observed(NAMESPACE, CONNECTION, "coveo", true);
    let series = format!(r#"name="{CONNECTION}""#);
    assert!(h.metrics.encode().contains(&series));
    let reference = ObjectRef::new(CONNECTION).within(NAMESPACE);
    h.ctx.forget_connection(&reference).await;
    let text = h.metrics.encode();
    assert!(!text.contains(&series), "{text}");
}

#[tokio::test]
async fn a_retry_on_a_cached_object_without_the_new_status_is_not_warned_again() {
    // The second reconcile runs before the cache shows the status the first one wrote.
    let h = failing_remote(&provider(), RemoteErrorKind::Unavailable).await;
    let log = logged(async {
        for _ in 0..2 {
            reconcile(Arc::new(provider()), h.ctx.clone())
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(log.matches("SecurityProvider failing").count(), 1, "{log}");
}
