//! The seam between the controller and the backends: the [`Backend`] trait one folder
//! implements, and the `backends!` macro that generates, from the one list in
//! `backend/mod.rs`, the closed enum [`super::ProviderConfig`], the per-backend blocks of
//! [`super::RemoteState`] and every dispatch over them.
//!
//! Every operation of [`Backend`] and [`SentSecrets`] is required (no default bodies; a backend
//! that sends no secret values names [`NoSecretValues`]) and every generated dispatch
//! is a `match` over the closed enum or a loop unrolled over the list: a backend that does
//! not answer an operation, or a list entry without a folder, does not compile. That is the
//! check that every backend answers every seam operation.
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::connect::SecretValues;
use super::http::{HttpOptions, RequestObserver};
use super::scrub::Scrubber;
use super::{ObservedProvider, ProviderBackend, ProviderConfig};
use crate::api::provider_connection::{BackendKind, ProviderConnectionSpec};
use crate::api::security_provider::SecurityProviderStatus;
use crate::api::{SecretKeyRef, SecurityProvider, SecurityProviderSpec};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::fingerprint_key::FingerprintKey;

/// Everything particular to one remote system, implemented once in its folder
/// (`src/backend/<name>/seam.rs`). The controller never sees it: it sees the generated
/// [`ProviderConfig`] and [`ProviderBackend`].
// Used only on concrete types through the generated dispatch, where the futures' auto traits
// (Send) are known: no `dyn`, no boxing needed.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// Which backend this is; its `as_str` is the name in status, metrics, events and errors.
    const KIND: BackendKind;
    /// The condition reasons its [`super::RemoteHealth`] may carry.
    const HEALTH_REASONS: &'static [&'static str];

    /// The normalized configuration: two equal values need no remote update.
    type Config: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// Its block of the ProviderConnection spec.
    type Connection;
    /// Its block of the SecurityProvider status, mirrored from the remote system.
    type Status: Clone + std::fmt::Debug + PartialEq + Default + Serialize + DeserializeOwned;
    /// Its client, connected to one remote system.
    type Client: ProviderBackend + 'static;
    /// The secret values its desired configuration sends and their fingerprint;
    /// [`NoSecretValues`] for a backend that sends none.
    type Secrets: SentSecrets<Self>;

    // --- Spec block and desired configuration

    /// The desired configuration from its block of the spec; None when the block is not set.
    fn desired_config(sp: &SecurityProvider) -> Option<Self::Config>;
    /// Writes the configuration into a spec (its block, and what else it maps to), so that
    /// applying the spec plans no update.
    fn write_spec(config: &Self::Config, spec: &mut SecurityProviderSpec) -> Result<(), String>;
    /// What the provider is looked up by.
    fn lookup_key(config: &Self::Config) -> &str;
    /// Names of the fields whose observed value differs from the desired one.
    fn diff(desired: &Self::Config, observed: &Self::Config) -> Vec<String>;
    /// The value of a field `diff` names that is not a top-level field of the serialized
    /// configuration; None for top-level fields.
    fn part_value(config: &Self::Config, field: &str) -> Option<Value>;
    /// Why the observed provider can never match: a create-only field differs.
    fn create_only_mismatch(desired: &Self::Config, observed: &Self::Config) -> Option<String>;

    // --- Creation evidence (see `ProviderConfig::with_creation_token`)

    /// Puts the create-attempt token into the configuration (the body of a create).
    fn put_creation_token(config: &mut Self::Config, token: &str);
    /// The create-attempt token an observed configuration carries.
    fn creation_token(config: &Self::Config) -> Option<String>;
    /// Removes any create-attempt token.
    fn remove_creation_token(config: &mut Self::Config);

    // --- Connection block, credentials, connect

    /// Its block of a ProviderConnection spec; None when not set.
    fn connection_block(spec: &ProviderConnectionSpec) -> Option<&Self::Connection>;
    /// The Secret keys the block reads (credentials; the CA bundle is generic).
    fn secret_refs(block: &Self::Connection) -> Vec<&SecretKeyRef>;
    /// Checks that what goes into HTTP headers (credentials, ids) is a valid header value:
    /// otherwise every request would fail alike (see [`check_header_value`]).
    fn check_header_values(block: &Self::Connection, secrets: &SecretValues) -> Result<(), String>;
    /// The client of the block, with the credentials in `secrets`.
    fn connect(
        block: &Self::Connection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<Self::Client, String>;
    /// The client calling `observer` after every request attempt.
    fn with_observer(client: Self::Client, observer: RequestObserver) -> Self::Client;

    // --- Status mirror and scrubbing

    /// Its block of a SecurityProvider status.
    fn status_block(status: &SecurityProviderStatus) -> Option<&Self::Status>;
    /// Sets its block of a SecurityProvider status.
    fn set_status_block(status: &mut SecurityProviderStatus, block: Option<Self::Status>);
    /// Scrubs the remote text its status block carries of the connection's secret values.
    fn scrub_status(block: &mut Self::Status, scrubber: &Scrubber);
}

/// The secret values a desired configuration of backend `B` sends (resolved from Secrets,
/// never serialized), their keyed fingerprint, and where its status block records the
/// fingerprint of the values last sent, so that a rotated Secret is a difference.
#[allow(async_fn_in_trait)]
pub trait SentSecrets<B: Backend + ?Sized> {
    /// Resolves the values from Secrets read through `api` (the object's namespace), with
    /// their fingerprint under `key`.
    async fn resolve(
        config: &mut B::Config,
        sp: &SecurityProvider,
        api: &Api<Secret>,
        key: Option<&FingerprintKey>,
    ) -> Result<(), Error>;
    /// The values resolved into a desired configuration (for scrubbing remote text).
    fn values(config: &B::Config) -> Vec<&str>;
    /// Keyed hash of the values a write of this desired configuration sends.
    fn fingerprint(config: &B::Config) -> Option<&str>;
    /// The hash of the values the remote provider last received, as the configuration was told.
    fn recorded(config: &B::Config) -> Option<&str>;
    /// Tells the desired configuration which values the remote provider last received.
    fn set_recorded(config: &mut B::Config, fingerprint: Option<String>);
    /// The status block with the fingerprint of the values last sent recorded in it.
    fn status_with_fingerprint(
        block: Option<B::Status>,
        fingerprint: Option<String>,
    ) -> Option<B::Status>;
    /// The fingerprint recorded in the status block.
    fn status_fingerprint(block: &B::Status) -> Option<&str>;
    /// The note of an update event when `fields` says only the secret values changed.
    fn update_note(fields: &[String]) -> Option<String>;
}

/// The answer of a backend whose configuration sends no secret values: nothing to resolve,
/// no fingerprint.
pub struct NoSecretValues;

impl<B: Backend + ?Sized> SentSecrets<B> for NoSecretValues {
    async fn resolve(
        _: &mut B::Config,
        _: &SecurityProvider,
        _: &Api<Secret>,
        _: Option<&FingerprintKey>,
    ) -> Result<(), Error> {
        Ok(())
    }

    fn values(_: &B::Config) -> Vec<&str> {
        Vec::new()
    }

    fn fingerprint(_: &B::Config) -> Option<&str> {
        None
    }

    fn recorded(_: &B::Config) -> Option<&str> {
        None
    }

    fn set_recorded(_: &mut B::Config, _: Option<String>) {}

    fn status_with_fingerprint(block: Option<B::Status>, _: Option<String>) -> Option<B::Status> {
        block
    }

    fn status_fingerprint(_: &B::Status) -> Option<&str> {
        None
    }

    fn update_note(_: &[String]) -> Option<String> {
        None
    }
}

/// Generated by `backends!` for every listed backend: its variant of [`ProviderConfig`].
pub trait Member: Backend {
    /// The configuration, when `config` is of this backend.
    fn config_of(config: &ProviderConfig) -> Option<&Self::Config>;
    /// The configuration, when `config` is of this backend.
    fn config_of_mut(config: &mut ProviderConfig) -> Option<&mut Self::Config>;
}

/// The configuration of backend `B` in `config`. A configuration of another backend is
/// rejected before any remote call (`check_backend_match`), so this is only a guard.
pub fn config_for<'a, B: Member>(
    config: &'a ProviderConfig,
    operation: &'static str,
) -> Result<&'a B::Config, RemoteError> {
    B::config_of(config).ok_or_else(|| {
        RemoteError::transport(
            B::KIND.as_str(),
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "a {} configuration was given to the {} backend",
                config.backend(),
                B::KIND
            ),
        )
    })
}

/// The observed and the desired configuration of an update, both of backend `B`.
pub fn update_configs<'a, B: Member>(
    observed: &'a ObservedProvider,
    desired: &'a ProviderConfig,
) -> Result<(&'a B::Config, &'a B::Config), RemoteError> {
    let desired_config = config_for::<B>(desired, "update")?;
    let current = config_for::<B>(&observed.config, "update")?;
    Ok((current, desired_config))
}

/// A value sent in HTTP header `header` must be visible ASCII or spaces (no control
/// characters, no line breaks): otherwise every request fails the same way, so the connection
/// is `InvalidConnection` at once rather than retried forever. The message never shows it.
pub fn check_header_value(
    reference: &SecretKeyRef,
    header: &str,
    secrets: &SecretValues,
) -> Result<(), String> {
    match secrets.get(reference) {
        Some(value) if !is_header_value(value) => Err(format!(
            "the value of Secret {:?} key {:?} is not a valid {header} header value (only visible ASCII characters and spaces are allowed)",
            reference.name, reference.key
        )),
        _ => Ok(()),
    }
}

/// Whether `value` can be sent as an HTTP header value as is.
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// "a, b or c" of the spec blocks `spec.<name>`.
fn one_of(names: &[&str]) -> String {
    let blocks: Vec<String> = names.iter().map(|n| format!("spec.{n}")).collect();
    match blocks.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// The message of a spec with no backend block, or several.
pub fn one_block_message() -> String {
    let names: Vec<&str> = super::KINDS.iter().map(|k| k.as_str()).collect();
    format!("exactly one of {} must be set", one_of(&names))
}

/// Generates, from one list `Variant => module` (the folder `module` defines the type
/// `module::Variant`, which implements [`Backend`]; `Variant` is also its [`BackendKind`]),
/// the closed enum [`ProviderConfig`], [`super::RemoteState`] with one status block per
/// backend, and every dispatch over them.
macro_rules! backends {
    ($($variant:ident => $module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every backend, in the order of the list.
        pub const KINDS: &[BackendKind] = &[$(<$module::$variant as Backend>::KIND),+];

        /// Normalized configuration of one provider, desired or observed. Two values are equal
        /// exactly when no remote update is needed.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        // A handful live at a time (one per reconcile); boxing would only add indirection.
        #[allow(clippy::large_enum_variant)]
        pub enum ProviderConfig {
            $(
                #[doc = concat!("A configuration of [`", stringify!($module), "`].")]
                $variant(<$module::$variant as Backend>::Config),
            )+
        }

        $(
            impl seam::Member for $module::$variant {
                fn config_of(config: &ProviderConfig) -> Option<&Self::Config> {
                    #[allow(unreachable_patterns)]
                    match config {
                        ProviderConfig::$variant(c) => Some(c),
                        _ => None,
                    }
                }

                fn config_of_mut(config: &mut ProviderConfig) -> Option<&mut Self::Config> {
                    #[allow(unreachable_patterns)]
                    match config {
                        ProviderConfig::$variant(c) => Some(c),
                        _ => None,
                    }
                }
            }
        )+

        impl ProviderConfig {
            /// The desired configuration from the backend block of the spec (secret values not
            /// resolved); None when no block, or several, are set.
            pub fn from_spec(sp: &crate::api::SecurityProvider) -> Option<ProviderConfig> {
                match sp.spec.backend()? {
                    $(BackendKind::$variant => {
                        <$module::$variant as Backend>::desired_config(sp).map(ProviderConfig::$variant)
                    })+
                }
            }

            /// Backend this configuration belongs to.
            pub fn backend(&self) -> BackendKind {
                match self {
                    $(ProviderConfig::$variant(_) => <$module::$variant as Backend>::KIND,)+
                }
            }

            /// What the provider is looked up by (an id, or a unique name where the remote
            /// system assigns the ids).
            pub fn lookup_key(&self) -> &str {
                match self {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::lookup_key(c),)+
                }
            }

            /// The value of a field `diff` names below the top level; None for others.
            fn part_value(&self, field: &str) -> Option<serde_json::Value> {
                match self {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::part_value(c, field),)+
                }
            }

            /// The configuration as JSON, for showing a diff.
            fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self {
                    $(ProviderConfig::$variant(c) => serde_json::to_value(c),)+
                }
            }

            /// Writes this configuration into a SecurityProvider spec (the backend block and
            /// what else it maps to), so that applying the spec plans no update. Used by
            /// `export`.
            pub fn write_spec(&self, spec: &mut crate::api::SecurityProviderSpec) -> Result<(), String> {
                match self {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::write_spec(c, spec),)+
                }
            }

            /// Resolves the secret values this desired configuration sends (see
            /// [`SentSecrets::resolve`]).
            pub async fn resolve_secrets(
                &mut self,
                sp: &crate::api::SecurityProvider,
                api: &kube::api::Api<k8s_openapi::api::core::v1::Secret>,
                key: Option<&crate::fingerprint_key::FingerprintKey>,
            ) -> Result<(), crate::error::Error> {
                match self {
                    $(ProviderConfig::$variant(c) => {
                        <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::resolve(c, sp, api, key).await
                    })+
                }
            }

            /// Keyed hash of the secret values resolved into this desired configuration; None
            /// when it has none. A write of this configuration sends exactly these values.
            pub fn secrets_hash(&self) -> Option<&str> {
                match self {
                    $(ProviderConfig::$variant(c) => <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::fingerprint(c),)+
                }
            }

            /// The secret values resolved into this desired configuration (for scrubbing
            /// remote text).
            pub fn secret_values(&self) -> Vec<&str> {
                match self {
                    $(ProviderConfig::$variant(c) => <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::values(c),)+
                }
            }

            /// The hash of the secret values the remote provider last received, as this
            /// desired configuration was told (see [`Self::set_recorded_secrets_hash`]).
            pub fn recorded_secrets_hash(&self) -> Option<&str> {
                match self {
                    $(ProviderConfig::$variant(c) => <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::recorded(c),)+
                }
            }

            /// Tells this desired configuration which secret values the remote provider last
            /// received (by their hash), so that a change of them is a difference.
            pub fn set_recorded_secrets_hash(&mut self, hash: Option<String>) {
                match self {
                    $(ProviderConfig::$variant(c) => <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::set_recorded(c, hash),)+
                }
            }

            /// Why the observed provider can never match the desired one: a create-only field
            /// (set only when the provider is created, never updated) differs. None when none
            /// does.
            pub fn create_only_mismatch(&self, observed: &ProviderConfig) -> Option<String> {
                #[allow(unreachable_patterns)]
                match (self, observed) {
                    $((ProviderConfig::$variant(d), ProviderConfig::$variant(o)) => {
                        <$module::$variant as Backend>::create_only_mismatch(d, o)
                    })+
                    _ => None,
                }
            }

            /// Names of the spec fields whose observed value differs from the desired one
            /// (`self` is desired). Empty means in sync.
            pub fn diff(&self, observed: &ProviderConfig) -> Vec<String> {
                // A create-attempt token on the remote provider is evidence, not configuration.
                #[allow(unreachable_patterns)]
                match (self, &observed.without_creation_token()) {
                    $((ProviderConfig::$variant(d), ProviderConfig::$variant(o)) => {
                        <$module::$variant as Backend>::diff(d, o)
                    })+
                    _ => vec!["backend".to_owned()],
                }
            }

            /// This configuration with the create-attempt token added (the body of a create):
            /// evidence, carried on the remote provider itself, that a provider found after an
            /// ambiguous create (a timeout, a lost answer, a crash) is the one that create made.
            pub fn with_creation_token(&self, token: &str) -> ProviderConfig {
                let mut config = self.without_creation_token();
                match &mut config {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::put_creation_token(c, token),)+
                }
                config
            }

            /// The create-attempt token this (observed) configuration carries, if any.
            pub fn creation_token(&self) -> Option<String> {
                match self {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::creation_token(c),)+
                }
            }

            /// This configuration without any create-attempt token (ignored when comparing
            /// configurations, so it never shows as drift).
            pub fn without_creation_token(&self) -> ProviderConfig {
                let mut config = self.clone();
                match &mut config {
                    $(ProviderConfig::$variant(c) => <$module::$variant as Backend>::remove_creation_token(c),)+
                }
                config
            }
        }

        /// What the remote system reports about a provider, to mirror into the CR status.
        #[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
        pub struct RemoteState {
            pub current_status: Option<crate::api::security_provider::CurrentStatus>,
            pub last_refresh_operation: Option<crate::api::security_provider::LastRefreshOperation>,
            pub statistics: Option<crate::api::security_provider::Statistics>,
            $(
                #[doc = concat!("The status block of [`", stringify!($module), "`].")]
                pub $module: Option<<$module::$variant as Backend>::Status>,
            )+
            /// A refresh or sync is running or queued: start no other one, and read again soon.
            pub busy: bool,
        }

        impl RemoteState {
            /// Writes the backends' status blocks of this state into `status`.
            pub fn mirror_blocks(&self, status: &mut SecurityProviderStatus) {
                $(<$module::$variant as Backend>::set_status_block(status, self.$module.clone());)+
            }

            /// Scrubs the remote text of the status blocks.
            pub fn scrub_blocks(&mut self, scrubber: &Scrubber) {
                $(if let Some(block) = self.$module.as_mut() {
                    <$module::$variant as Backend>::scrub_status(block, scrubber);
                })+
            }
        }

        /// Copies the backends' status blocks of `from` into `to`.
        pub fn copy_status_blocks(from: &SecurityProviderStatus, to: &mut SecurityProviderStatus) {
            $(<$module::$variant as Backend>::set_status_block(
                to,
                <$module::$variant as Backend>::status_block(from).cloned(),
            );)+
        }

        /// Records the fingerprint of the secret values last sent in the status block of the
        /// backend that sends any.
        pub fn record_fingerprint(status: &mut SecurityProviderStatus, fingerprint: Option<String>) {
            $(
                let block = <$module::$variant as Backend>::status_block(status).cloned();
                let block = <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::status_with_fingerprint(block, fingerprint.clone());
                <$module::$variant as Backend>::set_status_block(status, block);
            )+
        }

        /// The fingerprint of the secret values last sent, as recorded in `status`.
        pub fn recorded_fingerprint(status: &SecurityProviderStatus) -> Option<String> {
            None$(.or_else(|| {
                <$module::$variant as Backend>::status_block(status)
                    .and_then(<<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::status_fingerprint)
                    .map(str::to_owned)
            }))+
        }

        /// The note of an update event when only secret values changed.
        pub fn secret_values_note(fields: &[String]) -> Option<String> {
            None$(.or_else(|| <<$module::$variant as Backend>::Secrets as seam::SentSecrets<$module::$variant>>::update_note(fields)))+
        }

        /// Every health reason a backend uses.
        fn health_reasons() -> impl Iterator<Item = &'static str> {
            [$(<$module::$variant as Backend>::HEALTH_REASONS),+].into_iter().flatten().copied()
        }

        /// Every Secret key the backend blocks of a connection read.
        fn backend_secret_refs(spec: &ProviderConnectionSpec) -> Vec<&crate::api::SecretKeyRef> {
            let mut refs = Vec::new();
            $(if let Some(block) = <$module::$variant as Backend>::connection_block(spec) {
                refs.extend(<$module::$variant as Backend>::secret_refs(block));
            })+
            refs
        }

        /// Checks the header values of every backend block of a connection.
        fn check_backend_headers(spec: &ProviderConnectionSpec, secrets: &SecretValues) -> Result<(), String> {
            $(if let Some(block) = <$module::$variant as Backend>::connection_block(spec) {
                <$module::$variant as Backend>::check_header_values(block, secrets)?;
            })+
            Ok(())
        }

        /// The client of the (first) backend block of a connection.
        fn connect_backend(
            spec: &ProviderConnectionSpec,
            secrets: &SecretValues,
            options: &http::HttpOptions,
            observer: Option<http::RequestObserver>,
        ) -> Result<std::sync::Arc<dyn ProviderBackend>, String> {
            $(if let Some(block) = <$module::$variant as Backend>::connection_block(spec) {
                let client = <$module::$variant as Backend>::connect(block, secrets, options)?;
                let client = match observer {
                    Some(o) => <$module::$variant as Backend>::with_observer(client, o),
                    None => client,
                };
                return Ok(std::sync::Arc::new(client));
            })+
            Err("the connection has no backend block".into())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::{
        CoveoProviderSpec, JitsudoProviderSpec, KeystoneProviderSpec,
    };
    use crate::backend::{coveo::CoveoConfig, jitsudo::JitsudoConfig, keystone::KeystoneConfig};

    /// Every backend answers every seam operation: `Backend` has no default bodies and the
    /// dispatch is generated from the one list, so a missing answer is a compile error. What
    /// the compiler cannot see is the list itself against the CRDs' `BackendKind`: checked here.
    #[test]
    fn the_list_names_every_backend_kind_once() {
        assert_eq!(super::super::KINDS, BackendKind::ALL.as_slice());
        // The CRDs' validation rule says the same as the generated message.
        assert_eq!(
            one_block_message(),
            "exactly one of spec.coveo, spec.keystone or spec.jitsudo must be set"
        );
    }

    fn configs() -> Vec<ProviderConfig> {
        vec![
            ProviderConfig::Coveo(CoveoConfig::desired(
                "p",
                "P",
                &CoveoProviderSpec::default(),
            )),
            ProviderConfig::Keystone(KeystoneConfig::desired(
                "p",
                &KeystoneProviderSpec {
                    description: Some("corporate SSO".into()),
                    ..Default::default()
                },
            )),
            ProviderConfig::Jitsudo(JitsudoConfig::desired("p", &JitsudoProviderSpec::default())),
        ]
    }

    #[test]
    fn the_creation_token_round_trips_and_never_shows_as_drift() {
        for desired in configs() {
            let created = desired.with_creation_token("uid-1/a1b2");
            assert_ne!(created, desired, "the create body carries the token");
            assert_eq!(created.creation_token().as_deref(), Some("uid-1/a1b2"));
            assert_eq!(desired.creation_token(), None);
            assert!(desired.diff(&created).is_empty(), "{desired:?}");
            assert_eq!(created.without_creation_token(), desired);
        }
    }

    #[test]
    fn a_provider_made_by_someone_else_carries_no_token() {
        let mut foreign = KeystoneConfig::desired("p", &KeystoneProviderSpec::default());
        foreign.description = "made in the console [not ours]".into();
        assert_eq!(ProviderConfig::Keystone(foreign).creation_token(), None);
    }

    #[test]
    fn only_a_backend_that_sends_secret_values_answers_with_a_fingerprint() {
        for mut config in configs() {
            config.set_recorded_secrets_hash(Some("hmac-sha256:00".into()));
            let sends_values = config.backend() == BackendKind::Coveo;
            assert_eq!(config.recorded_secrets_hash().is_some(), sends_values);
            assert_eq!(config.secrets_hash(), None, "nothing resolved yet");
            assert!(config.secret_values().is_empty());
        }
        let mut status = SecurityProviderStatus::default();
        super::super::record_fingerprint(&mut status, Some("hmac-sha256:ab".into()));
        assert_eq!(
            super::super::recorded_fingerprint(&status).as_deref(),
            Some("hmac-sha256:ab")
        );
        super::super::record_fingerprint(&mut status, None);
        assert_eq!(super::super::recorded_fingerprint(&status), None);
        assert_eq!(
            status,
            SecurityProviderStatus::default(),
            "no empty block is left"
        );
    }

    #[test]
    fn a_configuration_of_another_backend_is_refused_before_any_remote_call() {
        let keystone = &configs()[1];
        let e = config_for::<crate::backend::coveo::Coveo>(keystone, "create").unwrap_err();
        assert_eq!(
            e.message,
            "a keystone configuration was given to the coveo backend"
        );
    }
}
