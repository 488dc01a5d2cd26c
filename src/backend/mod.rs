//! Remote systems behind one trait. The controller only sees [`ProviderBackend`],
//! [`ProviderConfig`] (the normalized, comparable configuration) and [`ObservedProvider`].
use async_trait::async_trait;

use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::{
    CoveoStatus, CurrentStatus, JitsudoStatus, KeystoneStatus, LastRefreshOperation, Statistics,
};
use crate::error::{RemoteError, RemoteErrorKind};

pub mod connect;
pub mod coveo;
pub mod creation_token;
pub mod http;
pub mod jitsudo;
pub mod keystone;
pub mod scrub;
pub mod spec;

pub use connect::{ClientCache, connect_from_api, secret_refs};
pub use spec::{check_backend_match, desired_config, resolve_desired};

/// Normalized configuration of one provider, desired or observed. Two values are equal exactly
/// when no remote update is needed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
// A handful live at a time (one per reconcile); boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
pub enum ProviderConfig {
    Coveo(coveo::CoveoConfig),
    Keystone(keystone::KeystoneConfig),
    Jitsudo(jitsudo::JitsudoConfig),
}

impl ProviderConfig {
    /// Backend this configuration belongs to.
    pub fn backend(&self) -> BackendKind {
        match self {
            ProviderConfig::Coveo(_) => BackendKind::Coveo,
            ProviderConfig::Keystone(_) => BackendKind::Keystone,
            ProviderConfig::Jitsudo(_) => BackendKind::Jitsudo,
        }
    }

    /// What the provider is looked up by: the id for Coveo and Keystone, the unique name for
    /// JITSudo (whose ids are assigned by the server).
    pub fn lookup_key(&self) -> &str {
        match self {
            ProviderConfig::Coveo(c) => &c.id,
            ProviderConfig::Keystone(c) => &c.id,
            ProviderConfig::Jitsudo(c) => &c.name,
        }
    }

    /// The value of one field (as named by `diff`), for showing a diff.
    pub fn field_value(&self, field: &str) -> serde_json::Value {
        if let ProviderConfig::Keystone(c) = self
            && let Some(value) = c.part_value(field)
        {
            return value;
        }
        let whole = match self {
            ProviderConfig::Coveo(c) => serde_json::to_value(c),
            ProviderConfig::Keystone(c) => serde_json::to_value(c),
            ProviderConfig::Jitsudo(c) => serde_json::to_value(c),
        };
        // `name[key]` names one entry of a map field (Coveo `refreshSchedules[<type>]`).
        let (name, key) = match field.strip_suffix(']').and_then(|f| f.split_once('[')) {
            Some((name, key)) => (name, Some(key)),
            None => (field, None),
        };
        whole
            .ok()
            .and_then(|v| v.get(name).cloned())
            .and_then(|v| match key {
                Some(key) => v.get(key).cloned(),
                None => Some(v),
            })
            .unwrap_or(serde_json::Value::Null)
    }

    /// Writes this configuration into a SecurityProvider spec (the backend block and the
    /// display name), so that applying the spec plans no update. Used by `export`.
    pub fn write_spec(&self, spec: &mut crate::api::SecurityProviderSpec) -> Result<(), String> {
        match self {
            ProviderConfig::Coveo(c) => {
                spec.coveo = Some(c.to_spec()?);
                spec.display_name = (c.display_name != c.id).then(|| c.display_name.clone());
            }
            ProviderConfig::Keystone(c) => spec.keystone = Some(Box::new(c.to_spec())),
            // The name is the lookup key; export puts it in providerId (or metadata.name).
            ProviderConfig::Jitsudo(c) => spec.jitsudo = Some(Box::new(c.to_spec()?)),
        }
        Ok(())
    }

    /// Keyed hash of the secret values resolved into this desired configuration (Coveo
    /// `sensitiveParameters` and `userIdentities`); None when it has none. A write of this
    /// configuration sends exactly these values.
    pub fn secrets_hash(&self) -> Option<&str> {
        match self {
            ProviderConfig::Coveo(c) => c.secrets_hash.as_deref(),
            _ => None,
        }
    }

    /// The secret values resolved into this desired configuration (for scrubbing remote text).
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            ProviderConfig::Coveo(c) => c.secrets.as_ref().map_or_else(Vec::new, |s| s.values()),
            _ => Vec::new(),
        }
    }

    /// The hash of the secret values the remote provider last received, as this desired
    /// configuration was told (see [`Self::set_recorded_secrets_hash`]).
    pub fn recorded_secrets_hash(&self) -> Option<&str> {
        match self {
            ProviderConfig::Coveo(c) => c.recorded_secrets_hash.as_deref(),
            _ => None,
        }
    }

    /// Tells this desired configuration which secret values the remote provider last received
    /// (by their hash), so that a change of them is a difference.
    pub fn set_recorded_secrets_hash(&mut self, hash: Option<String>) {
        if let ProviderConfig::Coveo(c) = self {
            c.recorded_secrets_hash = hash;
        }
    }

    /// Why the observed provider can never match the desired one: a create-only field (set
    /// only when the provider is created, never updated) differs. None when none does.
    pub fn create_only_mismatch(&self, observed: &ProviderConfig) -> Option<String> {
        match (self, observed) {
            (ProviderConfig::Keystone(d), ProviderConfig::Keystone(o)) => d.create_only_mismatch(o),
            _ => None,
        }
    }

    /// Names of the spec fields whose observed value differs from the desired one (`self` is
    /// desired). Empty means in sync.
    pub fn diff(&self, observed: &ProviderConfig) -> Vec<String> {
        let named = |fields: Vec<&'static str>| fields.into_iter().map(String::from).collect();
        // A create-attempt token on the remote provider is evidence, not configuration.
        match (self, &observed.without_creation_token()) {
            (ProviderConfig::Coveo(d), ProviderConfig::Coveo(o)) => named(d.diff(o)),
            (ProviderConfig::Keystone(d), ProviderConfig::Keystone(o)) => d.diff(o),
            (ProviderConfig::Jitsudo(d), ProviderConfig::Jitsudo(o)) => named(d.diff(o)),
            _ => vec!["backend".to_owned()],
        }
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

/// The condition reasons of [`RemoteHealth`] the backends use (the reason is a `&'static str`
/// so that it can only be one of the backends' constants).
const HEALTH_REASONS: &[&str] = &[
    coveo::REASON_REMOTE_CREATING,
    coveo::REASON_REMOTE_ERROR,
    coveo::REASON_REMOTE_SUSPENDED,
    jitsudo::REASON_SYNC_FAILED,
    jitsudo::REASON_SYNC_PENDING,
    jitsudo::REASON_SYNCING,
    keystone::REASON_FEDERATION_PENDING,
];

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
            HEALTH_REASONS
                .iter()
                .find(|known| **known == reason)
                .copied()
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

/// What the remote system reports about a provider, to mirror into the CR status.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteState {
    pub current_status: Option<CurrentStatus>,
    pub last_refresh_operation: Option<LastRefreshOperation>,
    pub statistics: Option<Statistics>,
    /// Coveo: the refresh schedules, when they were read (`secretsHash` is the controller's).
    pub coveo: Option<CoveoStatus>,
    pub keystone: Option<KeystoneStatus>,
    pub jitsudo: Option<JitsudoStatus>,
    /// A refresh or sync is running or queued: start no other one, and read again soon.
    pub busy: bool,
}

/// One provider as read from the remote system. Serializable for the compact entries of batch
/// snapshots (fields a list never fills, such as Coveo's schedule ids, are not kept).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObservedProvider {
    /// Id in the remote system (for JITSudo a server-assigned UUID).
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
    /// The declared id (`spec.providerId` or metadata.name); for JITSudo the provider name.
    pub id: String,
    /// The remote id recorded in status by an earlier reconcile, if any.
    pub known_remote_id: Option<String>,
}

/// What the controller calls: operations every remote system offers, on normalized
/// configurations. Implemented by [`Backend`] (the closed set of real backends) and by test
/// doubles. Implementations treat "already gone" on delete as success.
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

    /// Reads what the provider's main read does not return and `desired` compares (Coveo: its
    /// refresh schedules, when the spec lists some; with no `desired`, as `export` asks: all
    /// of them) into `observed`. Default: nothing more to read.
    async fn observe_details(
        &self,
        _desired: Option<&ProviderConfig>,
        _observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Deletes the provider, with what it owns remotely that `desired` (the object's
    /// configuration and its record, when it can still be built) names (Keystone: the
    /// protocols and the mappings this object created). Returns false when it was already gone.
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
    /// ([`crate::controller::snapshot`]). False when the backend has no cheaper bulk read than
    /// one GET per provider. On an error some providers may have been handed over already.
    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<bool, RemoteError> {
        self.list().await?.into_iter().for_each(each);
        Ok(true)
    }
}

/// What one backend's client implements, in its own configuration type: a configuration of
/// another backend cannot be handed to it. [`Backend`] lifts it to [`ProviderBackend`].
#[async_trait]
pub trait BackendClient: Send + Sync {
    /// The backend's normalized configuration (a [`ProviderConfig`] variant's payload).
    type Config: Send + Sync;

    /// Reads the provider; `None` when it does not exist.
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError>;

    /// Creates the provider.
    async fn create(&self, desired: &Self::Config) -> Result<ObservedProvider, RemoteError>;

    /// Brings provider `remote_id`, now configured as `current`, to `desired`. `None` when
    /// nothing had to be sent.
    async fn update(
        &self,
        remote_id: &str,
        current: &Self::Config,
        desired: &Self::Config,
    ) -> Result<Option<ObservedProvider>, RemoteError>;

    /// See [`ProviderBackend::observe_details`]. Default: nothing more to read.
    async fn observe_details(
        &self,
        _desired: Option<&Self::Config>,
        _observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Deletes the provider; false when it was already gone.
    async fn delete(&self, remote_id: &str) -> Result<bool, RemoteError>;

    /// Deletes the provider and what `desired` says it owns (see [`ProviderBackend::delete`]).
    /// Default: [`Self::delete`].
    async fn delete_with(
        &self,
        remote_id: &str,
        _desired: Option<&Self::Config>,
    ) -> Result<bool, RemoteError> {
        self.delete(remote_id).await
    }

    /// Starts a refresh; false when the remote system has no refresh operation.
    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError>;

    /// Every provider the operator may manage.
    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError>;

    /// One small authenticated read (see [`ProviderBackend::verify_credentials`]).
    async fn verify_credentials(&self) -> Result<(), RemoteError>;

    /// Every provider, in as few round trips as the API allows, each handed to `each` as it
    /// arrives (default: [`Self::list`]).
    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<(), RemoteError> {
        self.list().await?.into_iter().for_each(each);
        Ok(())
    }
}

/// The remote system of one connection. The set is closed: one arm per backend folder.
#[derive(Debug)]
pub enum Backend {
    Coveo(coveo::CoveoClient),
    Keystone(keystone::KeystoneClient),
    Jitsudo(jitsudo::JitsudoClient),
}

/// Runs `$body` with `$client` bound to whichever client `$backend` holds.
macro_rules! with_client {
    ($backend:expr, $client:ident => $body:expr) => {
        match $backend {
            Backend::Coveo($client) => $body,
            Backend::Keystone($client) => $body,
            Backend::Jitsudo($client) => $body,
        }
    };
}

impl Backend {
    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Coveo(_) => BackendKind::Coveo,
            Backend::Keystone(_) => BackendKind::Keystone,
            Backend::Jitsudo(_) => BackendKind::Jitsudo,
        }
    }

    /// A configuration of another backend: [`check_backend_match`] rejects such a pair before
    /// any remote call, so this is only a guard.
    fn mismatch(&self, operation: &'static str, config: &ProviderConfig) -> RemoteError {
        RemoteError::transport(
            self.kind().as_str(),
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "a {} configuration was given to the {} backend",
                config.backend(),
                self.kind()
            ),
        )
    }
}

#[async_trait]
impl ProviderBackend for Backend {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        with_client!(self, c => BackendClient::observe(c, key).await)
    }

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        match (self, desired) {
            (Backend::Coveo(c), ProviderConfig::Coveo(d)) => BackendClient::create(c, d).await,
            (Backend::Keystone(c), ProviderConfig::Keystone(d)) => {
                BackendClient::create(c, d).await
            }
            (Backend::Jitsudo(c), ProviderConfig::Jitsudo(d)) => BackendClient::create(c, d).await,
            _ => Err(self.mismatch("create", desired)),
        }
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let id = observed.remote_id.as_str();
        let sent = match (self, &observed.config, desired) {
            (Backend::Coveo(c), ProviderConfig::Coveo(o), ProviderConfig::Coveo(d)) => {
                BackendClient::update(c, id, o, d).await?
            }
            (Backend::Keystone(c), ProviderConfig::Keystone(o), ProviderConfig::Keystone(d)) => {
                BackendClient::update(c, id, o, d).await?
            }
            (Backend::Jitsudo(c), ProviderConfig::Jitsudo(o), ProviderConfig::Jitsudo(d)) => {
                BackendClient::update(c, id, o, d).await?
            }
            _ => return Err(self.mismatch("update", desired)),
        };
        Ok(sent.unwrap_or_else(|| observed.clone()))
    }

    async fn observe_details(
        &self,
        desired: Option<&ProviderConfig>,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        match (self, desired) {
            (Backend::Coveo(c), Some(ProviderConfig::Coveo(d))) => {
                BackendClient::observe_details(c, Some(d), observed).await
            }
            (Backend::Keystone(c), Some(ProviderConfig::Keystone(d))) => {
                BackendClient::observe_details(c, Some(d), observed).await
            }
            (Backend::Jitsudo(c), Some(ProviderConfig::Jitsudo(d))) => {
                BackendClient::observe_details(c, Some(d), observed).await
            }
            (_, None) => {
                with_client!(self, c => BackendClient::observe_details(c, None, observed).await)
            }
            (_, Some(desired)) => Err(self.mismatch("observe", desired)),
        }
    }

    async fn delete(
        &self,
        remote_id: &str,
        desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        match (self, desired) {
            (Backend::Coveo(c), Some(ProviderConfig::Coveo(d))) => {
                BackendClient::delete_with(c, remote_id, Some(d)).await
            }
            (Backend::Keystone(c), Some(ProviderConfig::Keystone(d))) => {
                BackendClient::delete_with(c, remote_id, Some(d)).await
            }
            (Backend::Jitsudo(c), Some(ProviderConfig::Jitsudo(d))) => {
                BackendClient::delete_with(c, remote_id, Some(d)).await
            }
            _ => with_client!(self, c => BackendClient::delete_with(c, remote_id, None).await),
        }
    }

    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        with_client!(self, c => BackendClient::refresh(c, remote_id).await)
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        with_client!(self, c => BackendClient::list(c).await)
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        with_client!(self, c => BackendClient::verify_credentials(c).await)
    }

    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<bool, RemoteError> {
        with_client!(self, c => BackendClient::observe_each(c, each).await.map(|()| true))
    }
}
