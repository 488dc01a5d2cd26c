//! Remote systems behind one trait. The controller only sees [`ProviderBackend`],
//! [`ProviderConfig`] (the normalized, comparable configuration) and [`ObservedProvider`].
//! A backend is one folder implementing [`Backend`] and one entry in the `backends!` list
//! below, from which the closed enum and every dispatch over it are generated.
use async_trait::async_trait;

use crate::api::provider_connection::{BackendKind, ProviderConnectionSpec};
use crate::api::security_provider::SecurityProviderStatus;
use crate::error::RemoteError;
use connect::SecretValues;
use scrub::Scrubber;

#[macro_use]
pub mod seam;
pub mod connect;
pub mod http;
pub mod scrub;
pub mod spec;

pub use connect::{ClientCache, connect_from_api, secret_refs};
pub use seam::{Backend, Member, config_for, update_configs};
pub use spec::{check_backend_match, desired_config, resolve_desired};

backends! { Coveo => coveo, Keystone => keystone, Jitsudo => jitsudo }

impl ProviderConfig {
    /// The value of one field (as named by `diff`), for showing a diff.
    pub fn field_value(&self, field: &str) -> serde_json::Value {
        if let Some(value) = self.part_value(field) {
            return value;
        }
        // `name[key]` names one entry of a map field (`refreshSchedules[<type>]`).
        let (name, key) = match field.strip_suffix(']').and_then(|f| f.split_once('[')) {
            Some((name, key)) => (name, Some(key)),
            None => (field, None),
        };
        self.to_json()
            .ok()
            .and_then(|v| v.get(name).cloned())
            .and_then(|v| match key {
                Some(key) => v.get(key).cloned(),
                None => Some(v),
            })
            .unwrap_or(serde_json::Value::Null)
    }
}

/// How the remote system judges the provider's health. Serialized (for the compact entries
/// of batch snapshots) with its reason by name: only the reasons the backends use decode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(into = "HealthRepr")]
pub enum RemoteHealth {
    /// Usable.
    Healthy,
    /// Being set up or synchronised for the first time; check again soon.
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// Exists but is failing or disabled.
    Degraded {
        reason: &'static str,
        message: String,
    },
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum HealthRepr {
    Healthy,
    Progressing { reason: String, message: String },
    Degraded { reason: String, message: String },
}

impl From<RemoteHealth> for HealthRepr {
    fn from(health: RemoteHealth) -> Self {
        match health {
            RemoteHealth::Healthy => HealthRepr::Healthy,
            RemoteHealth::Progressing { reason, message } => HealthRepr::Progressing {
                reason: reason.to_owned(),
                message,
            },
            RemoteHealth::Degraded { reason, message } => HealthRepr::Degraded {
                reason: reason.to_owned(),
                message,
            },
        }
    }
}

// By hand: derived with `try_from`, the `&'static str` fields would tie the impl to 'static
// input.
impl<'de> serde::Deserialize<'de> for RemoteHealth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = HealthRepr::deserialize(deserializer)?;
        RemoteHealth::try_from(repr).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<HealthRepr> for RemoteHealth {
    type Error = String;

    fn try_from(repr: HealthRepr) -> Result<Self, String> {
        let known = |reason: String| {
            // The reason is a `&'static str` so that it can only be one of the backends'
            // constants.
            health_reasons()
                .find(|known| *known == reason)
                .ok_or_else(|| format!("unknown health reason {reason:?}"))
        };
        Ok(match repr {
            HealthRepr::Healthy => RemoteHealth::Healthy,
            HealthRepr::Progressing { reason, message } => RemoteHealth::Progressing {
                reason: known(reason)?,
                message,
            },
            HealthRepr::Degraded { reason, message } => RemoteHealth::Degraded {
                reason: known(reason)?,
                message,
            },
        })
    }
}

/// One provider as read from the remote system. Serializable for the compact entries of batch
/// snapshots (fields a list never fills, such as ids of sub-resources, are not kept).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObservedProvider {
    /// Id in the remote system (server-assigned where the backend looks providers up by name).
    pub remote_id: String,
    /// Normalized configuration, comparable with the desired one.
    pub config: ProviderConfig,
    /// Status to mirror.
    pub state: RemoteState,
    /// Health as judged from the remote status.
    pub health: RemoteHealth,
}

/// Encodes and decodes `observed` as a batch snapshot does, asserting nothing is lost.
#[cfg(test)]
pub(crate) fn assert_survives_snapshot_encoding(observed: &ObservedProvider) {
    let encoded = serde_json::to_vec(observed).unwrap();
    let decoded: ObservedProvider = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(&decoded, observed, "{}", String::from_utf8_lossy(&encoded));
}

impl ObservedProvider {
    /// Whether the remote state is still moving (being set up, refreshed or synchronised), so
    /// the object should be read again soon rather than at the next resync.
    pub fn is_settling(&self) -> bool {
        self.state.busy || matches!(self.health, RemoteHealth::Progressing { .. })
    }
}

/// Identifies the provider a SecurityProvider manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderKey {
    /// The declared id (`spec.providerId` or metadata.name), or the provider name where the
    /// backend looks providers up by name ([`ProviderConfig::lookup_key`]).
    pub id: String,
    /// The remote id recorded in status by an earlier reconcile, if any.
    pub known_remote_id: Option<String>,
}

/// What the controller calls: operations every remote system offers, on normalized
/// configurations. Implemented by each backend's client (`Backend::Client`), by the scrubbing
/// wrapper every built client is returned in, and by test doubles. Implementations treat "already gone" on delete as success.
#[async_trait]
pub trait ProviderBackend: Send + Sync {
    /// Reads the provider; `None` when it does not exist.
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError>;

    /// Creates the provider with the desired configuration.
    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError>;

    /// Brings an existing provider to the desired configuration.
    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError>;

    /// Reads what the provider's main read does not return and `desired` compares (sub-resources
    /// such as schedules, when the spec lists some; with no `desired`, as `export` asks: all of
    /// them) into `observed`. Default: nothing more to read.
    async fn observe_details(
        &self,
        _desired: Option<&ProviderConfig>,
        _observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Deletes the provider, with what it owns remotely that `desired` (the object's
    /// configuration and its record, when it can still be built) names (such as the protocols
    /// and mappings this object created). Returns false when it was already gone.
    async fn delete(
        &self,
        remote_id: &str,
        desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError>;

    /// Starts a refresh of the provider's identities. Returns false when the remote system has
    /// no refresh operation.
    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError>;

    /// Lists every provider of the connection.
    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError>;

    /// Proves cheaply (one small read) that the endpoint is reachable and accepts the
    /// credentials, for the ProviderConnection's `Ready` condition.
    async fn verify_credentials(&self) -> Result<(), RemoteError>;

    /// Reads every provider of the connection in as few requests as the API allows (pages),
    /// handing each to `each` as its page arrives, for resyncs
    /// ([`crate::controller::snapshot`]). On an error some providers may have been handed over
    /// already.
    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<(), RemoteError> {
        self.list().await?.into_iter().for_each(each);
        Ok(())
    }
}
