//! JITSudo at the seam: what [`Backend`] asks of a backend, answered for tenant identity
//! providers.
use serde_json::Value;

use crate::api::provider_connection::{BackendKind, JitsudoConnection, ProviderConnectionSpec};
use crate::api::security_provider::{JitsudoStatus, SecurityProviderStatus};
use crate::api::{SecretKeyRef, SecurityProvider, SecurityProviderSpec};
use crate::backend::connect::SecretValues;
use crate::backend::http::{HttpOptions, RequestObserver};
use crate::backend::scrub::Scrubber;
use crate::backend::seam::{Backend, NoSecretValues, check_header_value, is_header_value};

use super::*;

/// The JITSudo backend.
pub struct Jitsudo;

/// `config` key holding the create-attempt token.
pub const CREATION_TOKEN_KEY: &str = "secprov_create_attempt";

impl Backend for Jitsudo {
    const KIND: BackendKind = BackendKind::Jitsudo;
    const HEALTH_REASONS: &'static [&'static str] =
        &[REASON_SYNC_FAILED, REASON_SYNC_PENDING, REASON_SYNCING];

    type Config = JitsudoConfig;
    type Connection = JitsudoConnection;
    type Status = JitsudoStatus;
    type Client = JitsudoClient;
    /// It is sent no secret values.
    type Secrets = NoSecretValues;

    fn desired_config(sp: &SecurityProvider) -> Option<JitsudoConfig> {
        desired_config(sp)
    }

    /// The name is the lookup key; export puts it in providerId (or metadata.name).
    fn write_spec(config: &JitsudoConfig, spec: &mut SecurityProviderSpec) -> Result<(), String> {
        spec.jitsudo = Some(Box::new(config.to_spec()?));
        Ok(())
    }

    /// The unique name: ids are assigned by the server.
    fn lookup_key(config: &JitsudoConfig) -> &str {
        &config.name
    }

    fn diff(desired: &JitsudoConfig, observed: &JitsudoConfig) -> Vec<String> {
        desired.diff(observed).into_iter().map(String::from).collect()
    }

    fn part_value(_: &JitsudoConfig, _: &str) -> Option<Value> {
        None
    }

    fn create_only_mismatch(_: &JitsudoConfig, _: &JitsudoConfig) -> Option<String> {
        None
    }

    fn put_creation_token(config: &mut JitsudoConfig, token: &str) {
        if !config.config.is_object() {
            config.config = Value::Object(Default::default());
        }
        if let Some(object) = config.config.as_object_mut() {
            object.insert(
                CREATION_TOKEN_KEY.to_owned(),
                Value::String(token.to_owned()),
            );
        }
    }

    fn creation_token(config: &JitsudoConfig) -> Option<String> {
        config
            .config
            .get(CREATION_TOKEN_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn remove_creation_token(config: &mut JitsudoConfig) {
        if let Some(object) = config.config.as_object_mut() {
            object.remove(CREATION_TOKEN_KEY);
        }
    }

    fn connection_block(spec: &ProviderConnectionSpec) -> Option<&JitsudoConnection> {
        spec.jitsudo.as_ref()
    }

    fn secret_refs(block: &JitsudoConnection) -> Vec<&SecretKeyRef> {
        vec![&block.api_key_secret_ref]
    }

    /// `X-Tenant-ID` and `X-API-Key`.
    fn check_header_values(block: &JitsudoConnection, secrets: &SecretValues) -> Result<(), String> {
        if !is_header_value(&block.tenant_id) {
            return Err("spec.jitsudo.tenantId is not a valid HTTP header value".into());
        }
        check_header_value(&block.api_key_secret_ref, "X-API-Key", secrets)
    }

    fn connect(
        block: &JitsudoConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<JitsudoClient, String> {
        JitsudoClient::connect(block, secrets, options)
    }

    fn with_observer(client: JitsudoClient, observer: RequestObserver) -> JitsudoClient {
        client.with_observer(observer)
    }

    fn status_block(status: &SecurityProviderStatus) -> Option<&JitsudoStatus> {
        status.jitsudo.as_deref()
    }

    fn set_status_block(status: &mut SecurityProviderStatus, block: Option<JitsudoStatus>) {
        status.jitsudo = block.map(Box::new);
    }

    /// The sync error is remote text.
    fn scrub_status(block: &mut JitsudoStatus, scrubber: &Scrubber) {
        if let Some(e) = block.sync_error.as_mut() {
            *e = scrubber.scrub(e);
        }
    }
}
