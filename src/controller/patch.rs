//! The one status write of both controllers: compare, then server-side apply of `status`
//! with our field manager, only when it changed.
use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::FIELD_MANAGER;
use crate::error::Error;
use crate::metrics::Metrics;

/// Writes `new` as the status of the object `name` unless it equals `old`. Returns whether it
/// wrote.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
    metrics: &Metrics,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: PartialEq + Serialize,
{
    if old == Some(new) {
        return Ok(false);
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": new,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    metrics.status_patched();
    Ok(true)
}
