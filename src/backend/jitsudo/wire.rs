//! JITSudo wire types, error bodies, and the normalization of what the API returns.
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::security_provider::{CurrentStatus, JitsudoStatus};
use crate::backend::http::{ErrorParts, first_header, message_or_body, response_error};
use crate::backend::{ObservedProvider, ProviderConfig, RemoteHealth, RemoteState};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

/// An identity provider object. Lenient: enums stay strings, every field optional.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct ProviderWire {
    pub id: String,
    pub name: Option<String>,
    pub provider_type: Option<String>,
    pub config: Option<Value>,
    pub enabled: Option<bool>,
    pub last_synced_at: Option<String>,
    pub sync_status: Option<String>,
    pub sync_error: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A page of the list.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct PageWire {
    pub data: Vec<ProviderWire>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// `{code, message, details?, notices?}`.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ErrorWire {
    code: Option<String>,
    message: Option<String>,
    notices: Option<Vec<String>>,
}

/// Turns a non-success response into a [`RemoteError`].
pub fn parse_error(
    operation: &'static str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> RemoteError {
    let parsed: ErrorWire = serde_json::from_slice(body).unwrap_or_default();
    let mut message = message_or_body(parsed.message, status, body);
    if let Some(notices) = parsed.notices.filter(|n| !n.is_empty()) {
        message = format!("{message} (policy notices: {})", notices.join("; "));
    }
    let code = parsed.code;
    let kind = match code.as_deref() {
        Some(TENANT_MISMATCH) => {
            message = format!(
                "the X-Tenant-ID header (the connection's spec.jitsudo.tenantId) is not the tenant of the API key: {message}"
            );
            RemoteErrorKind::Forbidden
        }
        Some("rate_limited" | "too_many_requests") => RemoteErrorKind::RateLimited,
        Some("invalid_input" | "validation_error") => RemoteErrorKind::InvalidConfiguration,
        _ => RemoteErrorKind::from_status(status),
    };
    let parts = ErrorParts {
        kind,
        code,
        message,
        request_id: first_header(headers, &["x-request-id"]),
    };
    response_error(BACKEND, operation, status, headers, parts)
}

/// Normalizes a provider read from JITSudo.
pub fn observed_from_wire(wire: ProviderWire) -> ObservedProvider {
    let sync_status = wire.sync_status.clone().unwrap_or_default();
    let provider_type = wire.provider_type.clone().unwrap_or_default();
    let last_synced_at = wire
        .last_synced_at
        .as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.to_string())
        .or(wire.last_synced_at.clone());
    let config = JitsudoConfig {
        name: wire.name.clone().unwrap_or_default(),
        provider_type: provider_type.clone(),
        config: wire.config.clone().unwrap_or_else(|| json!({})),
        enabled: wire.enabled.unwrap_or(false),
    };
    let health = health_of(
        &sync_status,
        last_synced_at.is_some(),
        wire.sync_error.as_deref(),
    );
    ObservedProvider {
        remote_id: wire.id,
        config: ProviderConfig::Jitsudo(config),
        state: RemoteState {
            current_status: (!sync_status.is_empty()).then(|| CurrentStatus {
                status_type: sync_status.to_ascii_uppercase(),
                refresh_type: None,
            }),
            busy: matches!(sync_status.as_str(), "pending" | "syncing"),
            jitsudo: Some(JitsudoStatus {
                provider_type,
                sync_status,
                last_synced_at,
                sync_error: wire.sync_error,
            }),
            ..Default::default()
        },
        health,
    }
}

/// Condition reason: JITSudo's last sync failed.
pub const REASON_SYNC_FAILED: &str = "SyncFailed";
/// Condition reason: JITSudo has not synchronised the provider yet.
pub const REASON_SYNC_PENDING: &str = "SyncPending";
/// Condition reason: JITSudo synchronises the provider for the first time.
pub const REASON_SYNCING: &str = "Syncing";

/// Health from `sync_status` (see the module docs).
pub fn health_of(sync_status: &str, synced_before: bool, sync_error: Option<&str>) -> RemoteHealth {
    match sync_status {
        "failed" => RemoteHealth::Degraded {
            reason: REASON_SYNC_FAILED,
            message: match sync_error {
                Some(e) if !e.trim().is_empty() => format!("JITSudo sync failed: {e}"),
                _ => "JITSudo sync failed without an error message".into(),
            },
        },
        "pending" => RemoteHealth::Progressing {
            reason: REASON_SYNC_PENDING,
            message: "JITSudo has not synchronised the provider yet".into(),
        },
        "syncing" if !synced_before => RemoteHealth::Progressing {
            reason: REASON_SYNCING,
            message: "JITSudo is synchronising the provider for the first time".into(),
        },
        _ => RemoteHealth::Healthy,
    }
}
