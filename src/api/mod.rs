//! The custom resource types: `SecurityProvider` and `ProviderConnection` (group `secprov.dev`).
//! Types only; behaviour lives in `backend` and `controller`.

pub mod common;
pub mod provider_connection;
pub mod remote_system;
pub mod security_provider;

pub use common::{ConditionStatus, SecretKeyRef};
pub use provider_connection::{
    ProviderConnection, ProviderConnectionSpec, ProviderConnectionStatus,
};
pub use security_provider::{SecurityProvider, SecurityProviderSpec, SecurityProviderStatus};

/// API group of every kind this operator serves.
pub const GROUP: &str = "secprov.dev";
/// Finalizer that makes deletion wait for the remote cleanup.
pub const FINALIZER: &str = "secprov.dev/cleanup";
/// Usage finalizer on a ProviderConnection and on the Secrets it reads, present while a
/// SecurityProvider that may still need them for its remote cleanup references the connection
/// (Crossplane's ProviderConfig usage pattern): deleting a namespace, or pruning an app, then
/// cannot take the credentials away before the providers are deleted remotely.
pub const IN_USE_FINALIZER: &str = "secprov.dev/in-use";
/// Annotation whose changed value triggers a remote refresh (echoed in `status.lastHandledRefreshAt`).
pub const REFRESH_ANNOTATION: &str = "secprov.dev/refresh-requested-at";
/// Annotation that suspends remote writes while set to "true".
pub const PAUSED_ANNOTATION: &str = "secprov.dev/paused";
/// Annotation set just before a remote create and removed once the remote id is recorded in
/// status. If the operator dies in between, the next reconcile knows the provider it finds is
/// its own (not someone else's) and adopts it instead of creating a second one.
pub const CREATE_PENDING_ANNOTATION: &str = "secprov.dev/create-pending";
/// Annotation that confirms a change of remote system: when status.remoteId was recorded in
/// another remote system than the connection reaches now, nothing is created or adopted in the
/// new one until this annotation names the new system exactly as the `RemoteSystemChanged`
/// condition shows it. The provider in the old system is left there (status.leftBehind).
pub const REMOTE_SYSTEM_CHANGE_ANNOTATION: &str = "secprov.dev/remote-system-change";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "secprov-operator";

/// Every CRD this operator owns, in the order they are printed and stored in `crds/`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![ProviderConnection::crd(), SecurityProvider::crd()]
        .into_iter()
        .map(|crd| {
            // Doc comments are wrapped at 100 columns; unwrap them so `kubectl explain` can
            // wrap for the terminal instead of breaking lines mid-sentence.
            let mut value = serde_json::to_value(&crd).unwrap_or_default();
            unwrap_descriptions(&mut value);
            drop_null_from_enums(&mut value);
            serde_json::from_value(value).unwrap_or(crd)
        })
        .collect()
}

fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| {
                                paragraph
                                    .split('\n')
                                    .map(str::trim)
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// schemars lists `null` among the values of an optional enum that is shared through `$defs`
/// (kube inlines it, but only hoists `null` out of enums it sees directly), so `kubectl explain`
/// would offer a literal "null". Nullability is already said by `nullable: true`.
fn drop_null_from_enums(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(values)) = map.get_mut("enum")
                && values.iter().any(serde_json::Value::is_null)
            {
                values.retain(|v| !v.is_null());
                map.insert("nullable".into(), serde_json::Value::Bool(true));
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// Every CRD as one YAML stream: the exact content of `crds/secprov.dev.yaml` and the output
/// of `secprov-operator crd`.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
