//! The object metadata the controller writes: the cleanup finalizer [`FINALIZER`] and the
//! create-pending marker [`CREATE_PENDING_ANNOTATION`]. Finalizer handling is our own rather
//! than kube-runtime's `finalizer()` helper, which adds the finalizer in a reconcile of its
//! own: a create sets finalizer and marker in one write before its POST, and every other path
//! adds the finalizer alone, before its first remote write (or at the end of a reconcile that
//! made none), so the reconcile that adds it also does the work.
use std::sync::atomic::{AtomicBool, Ordering};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::debug;

use super::ownership::CreateMarker;
use crate::api::{CREATE_PENDING_ANNOTATION, FINALIZER, SecurityProvider};
use crate::error::Error;

/// Whether `sp` carries the cleanup finalizer.
pub fn has_finalizer(sp: &SecurityProvider) -> bool {
    sp.finalizers().iter().any(|f| f == FINALIZER)
}

/// The metadata writes of one apply of one object. Knows whether the cleanup finalizer is on
/// the object (the cached copy has it, or this reconcile added it), so that it is added once.
pub struct ObjectMetadata<'a> {
    api: &'a Api<SecurityProvider>,
    finalizer_on: AtomicBool,
}

impl<'a> ObjectMetadata<'a> {
    /// The metadata writes of an apply of `sp` (the cached copy) through `api`.
    pub fn new(api: &'a Api<SecurityProvider>, sp: &SecurityProvider) -> Self {
        ObjectMetadata {
            api,
            finalizer_on: AtomicBool::new(has_finalizer(sp)),
        }
    }

    /// The SecurityProviders of the object's namespace.
    pub fn api(&self) -> &'a Api<SecurityProvider> {
        self.api
    }

    /// Whether the cleanup finalizer is on the object.
    pub fn finalizer_on(&self) -> bool {
        self.finalizer_on.load(Ordering::Relaxed)
    }

    /// Adds the cleanup finalizer alone unless it is on, as kube-runtime's helper does: a JSON
    /// patch that first tests the finalizers are still those cached, so another controller's
    /// finalizer added meanwhile is never replaced (the test fails, the reconcile is retried).
    pub async fn ensure_finalizer(&self, sp: &SecurityProvider) -> Result<(), Error> {
        if self.finalizer_on() {
            return Ok(());
        }
        let operations = match sp.finalizers() {
            [] => json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]),
            cached => json!([
                {"op": "test", "path": "/metadata/finalizers", "value": cached},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ]),
        };
        let params = PatchParams::default();
        let name = sp.name_any();
        let patch = json_patch(operations)?;
        self.api.patch_metadata(&name, &params, &patch).await?;
        self.finalizer_on.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the create-pending marker, with the cleanup finalizer when it is missing, in one
    /// write before a create, and returns the marker. The write is conditional on the
    /// resourceVersion the decision was made from, so it never replaces finalizers or a marker
    /// the cached copy does not show. When that copy is stale, the object is read once and the
    /// decision made again from the fresh copy: an attempt pending there keeps its id, so the
    /// evidence of an earlier try whose answer was lost is still recognised. A marker the
    /// cached copy shows is written too (a no-op when the copy is current): it may be gone
    /// already (cleared after a refused first send the cache does not show yet), and a create
    /// under it would leave evidence the object no longer holds.
    pub async fn mark_create_pending(&self, sp: &SecurityProvider) -> Result<CreateMarker, Error> {
        let marker = CreateMarker::of(sp).unwrap_or_else(|| CreateMarker::new(sp));
        let conflict = match self.claim(sp, &marker).await {
            Ok(()) => return Ok(marker),
            Err(error) if is_conflict(&error) => error,
            Err(error) => return Err(error),
        };
        debug!("the cached object is stale; deciding the create-pending marker from a fresh read");
        let fresh = match self.api.get_opt(&sp.name_any()).await? {
            // Gone, or going: no create for it; the deletion's own reconcile follows.
            Some(fresh) if fresh.metadata.deletion_timestamp.is_none() => fresh,
            _ => return Err(conflict),
        };
        match CreateMarker::of(&fresh) {
            Some(pending) if has_finalizer(&fresh) => {
                self.finalizer_on.store(true, Ordering::Relaxed);
                Ok(pending)
            }
            pending => {
                let marker = pending.unwrap_or(marker);
                self.claim(&fresh, &marker).await?;
                Ok(marker)
            }
        }
    }

    /// One write of `marker`, and of the cleanup finalizer when `seen` lacks it, conditional on
    /// `seen`'s resourceVersion (a 409 when the object changed since).
    async fn claim(&self, seen: &SecurityProvider, marker: &CreateMarker) -> Result<(), Error> {
        let Some(version) = seen.resource_version() else {
            return Err(Error::Internal(
                "a SecurityProvider without resourceVersion cannot be written conditionally",
            ));
        };
        let mut metadata = json!({
            "resourceVersion": version,
            "annotations": {CREATE_PENDING_ANNOTATION: marker.token()},
        });
        if !has_finalizer(seen) {
            let mut finalizers = seen.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            metadata["finalizers"] = json!(finalizers);
        }
        let patch = json!({ "metadata": metadata });
        let params = PatchParams::default();
        let name = seen.name_any();
        self.api
            .patch_metadata(&name, &params, &Patch::Merge(&patch))
            .await?;
        // Written over `seen` exactly: the finalizer was there, or is now.
        self.finalizer_on.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Removes the create-pending marker (once its attempt is settled: see
/// [`super::ownership::marker_settled`]).
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

/// Removes the cleanup finalizer after the cleanup, as kube-runtime's helper does: a JSON
/// patch that tests the finalizer is still at the index the cached copy shows it.
pub async fn remove_finalizer(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
) -> Result<(), Error> {
    let Some(index) = sp.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json_patch(json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))?;
    api.patch_metadata(&sp.name_any(), &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// A JSON patch (RFC 6902) of `operations`.
fn json_patch(operations: Value) -> Result<Patch<()>, Error> {
    serde_json::from_value(operations)
        .map(Patch::Json)
        .map_err(|_| Error::Internal("a JSON patch of the object's metadata did not parse"))
}

/// Whether `error` is the API server's 409: a write's resourceVersion precondition failed.
fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Kube(e) if matches!(&**e, kube::Error::Api(status) if status.code == 409))
}
