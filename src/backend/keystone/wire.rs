//! Keystone wire types, error bodies, and the normalization of what the API returns.

use serde::Deserialize;

use crate::api::security_provider::{CurrentStatus, KeystoneProtocolStatus, KeystoneStatus};
use crate::backend::http::{ErrorParts, first_header, message_or_body, response_error};
use crate::backend::{ObservedProvider, ProviderConfig, RemoteHealth, RemoteState};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

/// `identity_provider` as returned by Keystone and OTC. Lenient: every field optional,
/// unknown fields (e.g. OTC's `sso_type`) ignored.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct IdentityProviderWire {
    pub id: String,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub remote_ids: Option<Vec<String>>,
    pub authorization_ttl: Option<i64>,
    pub domain_id: Option<String>,
    pub links: Option<LinksWire>,
}

/// `links` of an identity provider or a list.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct LinksWire {
    #[serde(rename = "self")]
    pub self_link: Option<String>,
    pub protocols: Option<String>,
    pub next: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct OneWire {
    pub(super) identity_provider: Option<IdentityProviderWire>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct ListWire {
    pub(super) identity_providers: Vec<IdentityProviderWire>,
    pub(super) links: Option<LinksWire>,
}

/// Both error shapes: upstream `{"error":{code,title,message}}` and OTC
/// `{"error_code","error_msg"}`.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ErrorWire {
    error: Option<UpstreamErrorWire>,
    error_code: Option<String>,
    error_msg: Option<String>,
}

/// The upstream `code` only repeats the HTTP status, so it is not read.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct UpstreamErrorWire {
    title: Option<String>,
    message: Option<String>,
}

/// Turns a non-success response into a [`RemoteError`].
pub fn parse_error(
    operation: &'static str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> RemoteError {
    let parsed: ErrorWire = serde_json::from_slice(body).unwrap_or_default();
    let (code, message) = match (parsed.error, parsed.error_code, parsed.error_msg) {
        (_, Some(code), message) => (Some(code), message),
        (Some(e), _, _) => {
            let message = match (e.title, e.message) {
                (_, Some(m)) if !m.trim().is_empty() => Some(m),
                (Some(t), _) => Some(t),
                _ => None,
            };
            (None, message)
        }
        (None, None, message) => (None, message),
    };
    let message = message_or_body(message, status, body);
    let kind = match code.as_deref() {
        Some(IAM_THROTTLED) => RemoteErrorKind::RateLimited,
        Some("IAM.0066" | "IAM.0067" | "IAM.0001") => RemoteErrorKind::Unauthorized,
        Some("IAM.0005") => RemoteErrorKind::Conflict,
        _ if status == 400 => RemoteErrorKind::InvalidConfiguration,
        _ => RemoteErrorKind::from_status(status),
    };
    let parts = ErrorParts {
        kind,
        code,
        message,
        request_id: first_header(headers, &["x-openstack-request-id", "x-request-id"]),
    };
    response_error(BACKEND, operation, status, headers, parts)
}

/// Normalizes an identity provider read from Keystone.
pub fn observed_from_wire(wire: IdentityProviderWire) -> ObservedProvider {
    let enabled = wire.enabled.unwrap_or(false);
    let remote_ids = wire.remote_ids.unwrap_or_default();
    let links = wire.links.unwrap_or_default();
    let config = KeystoneConfig {
        id: wire.id.clone(),
        description: wire.description.unwrap_or_default(),
        enabled,
        remote_ids: remote_ids.iter().cloned().collect(),
        authorization_ttl: wire.authorization_ttl,
        domain_id: wire.domain_id.clone(),
        protocols: Default::default(),
        stale_mappings: Default::default(),
        record: Default::default(),
    };
    ObservedProvider {
        remote_id: wire.id,
        config: ProviderConfig::Keystone(config),
        state: RemoteState {
            current_status: Some(CurrentStatus {
                status_type: if enabled { "ENABLED" } else { "DISABLED" }.into(),
                refresh_type: None,
            }),
            keystone: Some(KeystoneStatus {
                enabled,
                remote_ids,
                domain_id: wire.domain_id,
                self_link: links.self_link,
                protocols_link: links.protocols,
                ..Default::default()
            }),
            ..Default::default()
        },
        // Keystone has no lifecycle: an identity provider is usable as soon as it exists. A
        // disabled one is what the spec asked for (otherwise the update enables it).
        health: RemoteHealth::Healthy,
    }
}

/// `mapping` as returned by `GET /v3/OS-FEDERATION/mappings/{id}`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct MappingWire {
    pub id: String,
    pub rules: serde_json::Value,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct OneMappingWire {
    pub(super) mapping: Option<MappingWire>,
}

/// `protocol` as returned under `/identity_providers/{idp}/protocols`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct ProtocolWire {
    pub id: String,
    pub mapping_id: String,
    pub links: Option<ProtocolLinksWire>,
}

/// `links` of a protocol.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct ProtocolLinksWire {
    #[serde(rename = "self")]
    pub self_link: Option<String>,
    pub identity_provider: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct OneProtocolWire {
    pub(super) protocol: Option<ProtocolWire>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
pub(super) struct ProtocolListWire {
    pub(super) protocols: Vec<ProtocolWire>,
}

/// The status entry of a protocol read from Keystone.
pub fn protocol_status(wire: &ProtocolWire) -> KeystoneProtocolStatus {
    let links = wire.links.clone().unwrap_or_default();
    KeystoneProtocolStatus {
        mapping_id: wire.mapping_id.clone(),
        self_link: links.self_link,
        identity_provider_link: links.identity_provider,
    }
}
