//! The status writes of both controllers: compare, then server-side apply of `status` with
//! our field manager, only when it changed; and the first status of a new object, written only
//! over the object as it was seen.
use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::FIELD_MANAGER;
use crate::error::Error;
use crate::metrics::Metrics;

/// Writes `new` as the status of the object `name` unless it equals `old`. Returns the object
/// as the API server stored it when it wrote (a field its CRD does not know is pruned there).
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
    metrics: &Metrics,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: PartialEq + Serialize,
{
    if old == Some(new) {
        return Ok(None);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    metrics.status_patched();
    Ok(Some(written))
}

/// Writes `new` as the status of the object `name` only if the object is still at
/// `resource_version` (a precondition of the apply): a write decided from a cached object that
/// has moved on since is skipped, not forced over what the API server has. Returns the object
/// as written, None when skipped.
pub async fn write_status_if_unchanged<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: &str,
    new: &S,
    metrics: &Metrics,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": resource_version},
        "status": new,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
        Ok(written) => {
            metrics.status_patched();
            Ok(Some(written))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
