//! Coveo at the seam: what [`Backend`] asks of a backend, answered for the Security Cache API.
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;

use crate::api::provider_connection::{BackendKind, CoveoConnection, ProviderConnectionSpec};
use crate::api::security_provider::{CoveoStatus, SecurityProviderStatus};
use crate::api::{SecretKeyRef, SecurityProvider, SecurityProviderSpec};
use crate::backend::connect::SecretValues;
use crate::backend::http::{HttpOptions, RequestObserver};
use crate::backend::scrub::Scrubber;
use crate::backend::seam::{Backend, SentSecrets, check_header_value};
use crate::error::Error;
use crate::fingerprint_key::FingerprintKey;

use super::*;

/// The Coveo backend.
pub struct Coveo;

/// Coveo parameter holding the create-attempt token.
pub const CREATION_TOKEN_PARAMETER: &str = "secprov.dev/create-attempt";

impl Backend for Coveo {
    const KIND: BackendKind = BackendKind::Coveo;
    const HEALTH_REASONS: &'static [&'static str] = &[
        REASON_REMOTE_CREATING,
        REASON_REMOTE_ERROR,
        REASON_REMOTE_SUSPENDED,
    ];

    type Config = CoveoConfig;
    type Connection = CoveoConnection;
    type Status = CoveoStatus;
    type Client = CoveoClient;
    type Secrets = CoveoSecrets;

    fn desired_config(sp: &SecurityProvider) -> Option<CoveoConfig> {
        desired_config(sp)
    }

    fn write_spec(config: &CoveoConfig, spec: &mut SecurityProviderSpec) -> Result<(), String> {
        spec.coveo = Some(config.to_spec()?);
        spec.display_name = (config.display_name != config.id).then(|| config.display_name.clone());
        Ok(())
    }

    fn lookup_key(config: &CoveoConfig) -> &str {
        &config.id
    }

    fn diff(desired: &CoveoConfig, observed: &CoveoConfig) -> Vec<String> {
        desired.diff(observed).into_iter().map(String::from).collect()
    }

    fn part_value(_: &CoveoConfig, _: &str) -> Option<Value> {
        None
    }

    fn create_only_mismatch(_: &CoveoConfig, _: &CoveoConfig) -> Option<String> {
        None
    }

    fn put_creation_token(config: &mut CoveoConfig, token: &str) {
        config
            .parameters
            .insert(CREATION_TOKEN_PARAMETER.to_owned(), token.to_owned());
    }

    fn creation_token(config: &CoveoConfig) -> Option<String> {
        config.parameters.get(CREATION_TOKEN_PARAMETER).cloned()
    }

    fn remove_creation_token(config: &mut CoveoConfig) {
        config.parameters.remove(CREATION_TOKEN_PARAMETER);
    }

    fn connection_block(spec: &ProviderConnectionSpec) -> Option<&CoveoConnection> {
        spec.coveo.as_ref()
    }

    fn secret_refs(block: &CoveoConnection) -> Vec<&SecretKeyRef> {
        vec![&block.api_key_secret_ref]
    }

    fn check_header_values(block: &CoveoConnection, secrets: &SecretValues) -> Result<(), String> {
        check_header_value(&block.api_key_secret_ref, "Authorization", secrets)
    }

    fn connect(
        block: &CoveoConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<CoveoClient, String> {
        CoveoClient::connect(block, secrets, options)
    }

    fn with_observer(client: CoveoClient, observer: RequestObserver) -> CoveoClient {
        client.with_observer(observer)
    }

    fn status_block(status: &SecurityProviderStatus) -> Option<&CoveoStatus> {
        status.coveo.as_deref()
    }

    fn set_status_block(status: &mut SecurityProviderStatus, block: Option<CoveoStatus>) {
        status.coveo = block.map(Box::new);
    }

    fn scrub_status(_: &mut CoveoStatus, _: &Scrubber) {
        // Schedules and a hash of our own: no remote text.
    }
}

/// The secret values a Coveo provider is sent (`sensitiveParameters` and the `userIdentities`
/// passwords, masked on read), fingerprinted in `status.coveo.secretsHash`.
pub struct CoveoSecrets;

impl SentSecrets<Coveo> for CoveoSecrets {
    async fn resolve(
        config: &mut CoveoConfig,
        sp: &SecurityProvider,
        api: &Api<Secret>,
        key: Option<&FingerprintKey>,
    ) -> Result<(), Error> {
        if let Some(spec) = sp.spec.coveo.as_ref() {
            let material = secrets::resolve(api, spec).await?;
            config.set_secrets(material, key, &sp.uid().unwrap_or_default());
        }
        Ok(())
    }

    fn values(config: &CoveoConfig) -> Vec<&str> {
        config.secrets.as_ref().map_or_else(Vec::new, |s| s.values())
    }

    fn fingerprint(config: &CoveoConfig) -> Option<&str> {
        config.secrets_hash.as_deref()
    }

    fn recorded(config: &CoveoConfig) -> Option<&str> {
        config.recorded_secrets_hash.as_deref()
    }

    fn set_recorded(config: &mut CoveoConfig, fingerprint: Option<String>) {
        config.recorded_secrets_hash = fingerprint;
    }

    /// `status.coveo`: the schedules as observed and the hash of the secret values last sent;
    /// absent when both are.
    fn status_with_fingerprint(
        block: Option<CoveoStatus>,
        fingerprint: Option<String>,
    ) -> Option<CoveoStatus> {
        let status = CoveoStatus {
            secrets_hash: fingerprint,
            ..block.unwrap_or_default()
        };
        (status != CoveoStatus::default()).then_some(status)
    }

    fn status_fingerprint(block: &CoveoStatus) -> Option<&str> {
        block.secrets_hash.as_deref()
    }

    fn update_note(fields: &[String]) -> Option<String> {
        // A rotated Secret is a change of the desired values, not drift of the remote ones.
        (fields == [SECRET_VALUES_FIELD]).then(|| {
            "sent the changed values of the Secrets named in spec.coveo (sensitiveParameters, userIdentities)".to_owned()
        })
    }
}
