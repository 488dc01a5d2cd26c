//! Keystone at the seam: what [`Backend`] asks of a backend, answered for OS-FEDERATION
//! identity providers.
use serde_json::Value;

use crate::api::provider_connection::{BackendKind, KeystoneConnection, ProviderConnectionSpec};
use crate::api::security_provider::{KeystoneStatus, SecurityProviderStatus};
use crate::api::{SecretKeyRef, SecurityProvider, SecurityProviderSpec};
use crate::backend::connect::SecretValues;
use crate::backend::http::{HttpOptions, RequestObserver};
use crate::backend::scrub::Scrubber;
use crate::backend::seam::{Backend, NoSecretValues};

use super::*;

/// The Keystone backend.
pub struct Keystone;

/// The description ends with `CREATION_TOKEN_OPEN token CREATION_TOKEN_CLOSE`.
const CREATION_TOKEN_OPEN: &str = " [secprov.dev/create-attempt ";
const CREATION_TOKEN_CLOSE: &str = "]";

/// (description without the create-attempt token, token).
fn split_creation_token(description: &str) -> (&str, Option<&str>) {
    description
        .strip_suffix(CREATION_TOKEN_CLOSE)
        .and_then(|rest| rest.rsplit_once(CREATION_TOKEN_OPEN))
        .map_or((description, None), |(before, token)| (before, Some(token)))
}

impl Backend for Keystone {
    const KIND: BackendKind = BackendKind::Keystone;
    const HEALTH_REASONS: &'static [&'static str] = &[REASON_FEDERATION_PENDING];

    type Config = KeystoneConfig;
    type Connection = KeystoneConnection;
    type Status = KeystoneStatus;
    type Client = KeystoneClient;
    /// It is sent no secret values.
    type Secrets = NoSecretValues;

    fn desired_config(sp: &SecurityProvider) -> Option<KeystoneConfig> {
        desired_config(sp)
    }

    fn write_spec(config: &KeystoneConfig, spec: &mut SecurityProviderSpec) -> Result<(), String> {
        spec.keystone = Some(Box::new(config.to_spec()));
        Ok(())
    }

    fn lookup_key(config: &KeystoneConfig) -> &str {
        &config.id
    }

    fn diff(desired: &KeystoneConfig, observed: &KeystoneConfig) -> Vec<String> {
        desired.diff(observed)
    }

    fn part_value(config: &KeystoneConfig, field: &str) -> Option<Value> {
        config.part_value(field)
    }

    fn create_only_mismatch(desired: &KeystoneConfig, observed: &KeystoneConfig) -> Option<String> {
        desired.create_only_mismatch(observed)
    }

    fn put_creation_token(config: &mut KeystoneConfig, token: &str) {
        config.description = format!(
            "{}{CREATION_TOKEN_OPEN}{token}{CREATION_TOKEN_CLOSE}",
            config.description
        );
    }

    fn creation_token(config: &KeystoneConfig) -> Option<String> {
        split_creation_token(&config.description)
            .1
            .map(str::to_owned)
    }

    fn remove_creation_token(config: &mut KeystoneConfig) {
        config.description = split_creation_token(&config.description).0.to_owned();
    }

    fn connection_block(spec: &ProviderConnectionSpec) -> Option<&KeystoneConnection> {
        spec.keystone.as_ref()
    }

    fn secret_refs(block: &KeystoneConnection) -> Vec<&SecretKeyRef> {
        let password = block.password.as_ref().map(|p| &p.password_secret_ref);
        let credential = block
            .application_credential
            .as_ref()
            .map(|c| &c.secret_secret_ref);
        password.into_iter().chain(credential).collect()
    }

    /// The credentials go in a JSON body, not in a header.
    fn check_header_values(_: &KeystoneConnection, _: &SecretValues) -> Result<(), String> {
        Ok(())
    }

    fn connect(
        block: &KeystoneConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<KeystoneClient, String> {
        KeystoneClient::connect(block, secrets, options)
    }

    fn with_observer(client: KeystoneClient, observer: RequestObserver) -> KeystoneClient {
        client.with_observer(observer)
    }

    fn status_block(status: &SecurityProviderStatus) -> Option<&KeystoneStatus> {
        status.keystone.as_deref()
    }

    fn set_status_block(status: &mut SecurityProviderStatus, block: Option<KeystoneStatus>) {
        status.keystone = block.map(Box::new);
    }

    fn scrub_status(_: &mut KeystoneStatus, _: &Scrubber) {
        // Protocols and mapping ids: no free remote text.
    }
}
