//! Coveo wire types, error bodies, and the normalization of what the API returns.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::security_provider::{CurrentStatus, LastRefreshOperation, Statistics};
use crate::backend::http::{ErrorParts, first_header, message_or_body, response_error};
use crate::backend::{ObservedProvider, ProviderConfig, RemoteHealth, RemoteState};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

/// A parameter value. Debug hides the value of a sensitive one.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParameterWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<bool>,
}

impl std::fmt::Debug for ParameterWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sensitive = self.sensitive.unwrap_or(false);
        let value = match &self.value {
            Some(_) if sensitive => Some("<redacted>"),
            other => other.as_deref(),
        };
        f.debug_struct("ParameterWire")
            .field("value", &value)
            .field("sensitive", &self.sensitive)
            .finish()
    }
}

/// An entry of `userIdentities`. The spec spells the user name `username`, platform-client
/// and raw configs `userName`: both are read, `userName` is sent. Debug hides the password.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentityWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, alias = "username", skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for UserIdentityWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserIdentityWire")
            .field("name", &self.name)
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An entry of `referencedBy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ReferenceWire {
    #[serde(rename = "type", default)]
    pub reference_type: String,
    #[serde(default)]
    pub id: String,
}

/// An entry of `cascadingSecurityProviders` (the map key is arbitrary; `id` counts).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CascadingWire {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
}

/// `SecurityProviderModel` as sent on POST and PUT.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRequest {
    pub id: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    pub node_required: bool,
    pub case_sensitive: bool,
    pub parameters: BTreeMap<String, ParameterWire>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub user_identities: BTreeMap<String, UserIdentityWire>,
    pub referenced_by: Vec<ReferenceWire>,
    pub cascading_security_providers: BTreeMap<String, CascadingWire>,
}

/// `SecurityProviderModelWithStatus` as returned by GET (and by POST/PUT, maybe without status).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderWire {
    pub id: String,
    pub name: Option<String>,
    pub display_name: Option<String>,
    #[serde(rename = "type")]
    pub provider_type: Option<String>,
    pub node_required: Option<bool>,
    pub case_sensitive: Option<bool>,
    pub parameters: Option<BTreeMap<String, ParameterWire>>,
    pub user_identities: Option<BTreeMap<String, UserIdentityWire>>,
    pub referenced_by: Option<Vec<ReferenceWire>>,
    pub cascading_security_providers: Option<BTreeMap<String, CascadingWire>>,
    pub statistics: Option<StatisticsWire>,
    pub last_refresh_operation: Option<LastRefreshWire>,
    pub current_status: Option<CurrentStatusWire>,
}

/// `statistics`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct StatisticsWire {
    pub number_of_entities_by_state: BTreeMap<String, i64>,
    pub number_of_entities_in_error: Option<i64>,
    pub total_number_of_entities: Option<i64>,
}

/// `lastRefreshOperation`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct LastRefreshWire {
    pub operation_type: Option<String>,
    pub timestamp: Option<TimestampWire>,
    pub number_of_entities_processed: Option<i64>,
    pub result: Option<String>,
}

/// A timestamp Coveo sends as epoch milliseconds (docs, JS client) or as a date-time (spec).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum TimestampWire {
    EpochMillis(i64),
    EpochMillisFloat(f64),
    Text(String),
}

impl TimestampWire {
    /// RFC 3339 in UTC, or None when unparseable.
    pub fn to_rfc3339(&self) -> Option<String> {
        let ts = match self {
            TimestampWire::EpochMillis(ms) => jiff::Timestamp::from_millisecond(*ms).ok()?,
            TimestampWire::EpochMillisFloat(ms) => {
                jiff::Timestamp::from_millisecond(*ms as i64).ok()?
            }
            TimestampWire::Text(s) => parse_date_time(s)?,
        };
        Some(ts.to_string())
    }
}

fn parse_date_time(s: &str) -> Option<jiff::Timestamp> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    if let Ok(ms) = s.trim().parse::<i64>() {
        return jiff::Timestamp::from_millisecond(ms).ok();
    }
    // A date-time without offset is taken as UTC.
    s.parse::<jiff::civil::DateTime>()
        .ok()?
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// `currentStatus`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CurrentStatusWire {
    #[serde(rename = "type")]
    pub status_type: Option<String>,
    pub refresh_type: Option<String>,
}

/// A page of `/securityproviders/page`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct PageWire {
    pub items: Vec<ProviderWire>,
    pub total_entries: Option<u64>,
    pub total_pages: Option<u64>,
}

/// Coveo's error body: code from `errorCode`/`type`/`code`, message from `message`/`detail`.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
struct ErrorWire {
    error_code: Option<String>,
    #[serde(rename = "type")]
    error_type: Option<String>,
    code: Option<serde_json::Value>,
    message: Option<String>,
    detail: Option<String>,
    request_id: Option<String>,
}

/// Turns a non-success response into a [`RemoteError`].
pub fn parse_error(
    operation: &'static str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> RemoteError {
    let parsed: Option<ErrorWire> = serde_json::from_slice(body).ok();
    let (code, message, body_request_id) = match parsed {
        Some(e) => {
            let code = e.error_code.or(e.error_type).or_else(|| {
                e.code.map(|c| {
                    c.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| c.to_string())
                })
            });
            let message = e.message.or(e.detail);
            (code, message, e.request_id)
        }
        None => (None, None, None),
    };
    let waf_block = headers
        .get("x-coveo-waf-action")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("block"));
    let message = match message.filter(|m| !m.trim().is_empty()) {
        None if waf_block => "request blocked by Coveo's web application firewall".to_owned(),
        message => message_or_body(message, status, body),
    };
    let kind = match code.as_deref() {
        Some(INVALID_CONFIGURATION) => RemoteErrorKind::InvalidConfiguration,
        Some(c) if c.contains("TOO_MANY_REQUESTS") || c.contains("THROTTL") => {
            RemoteErrorKind::RateLimited
        }
        _ => RemoteErrorKind::from_status(status),
    };
    let request_id = first_header(headers, &["x-request-id"]).or(body_request_id);
    let parts = ErrorParts {
        kind,
        code,
        message,
        request_id,
    };
    response_error(BACKEND, operation, status, headers, parts)
}

/// Normalizes a provider read from Coveo.
pub fn observed_from_wire(mut wire: ProviderWire) -> ObservedProvider {
    let config = config_from_wire(&mut wire);
    let statistics = wire.statistics.map(statistics_from_wire);
    let last_refresh_operation = wire.last_refresh_operation.map(|op| LastRefreshOperation {
        operation_type: op.operation_type,
        timestamp: op.timestamp.and_then(|t| t.to_rfc3339()),
        number_of_entities_processed: op.number_of_entities_processed,
        result: op.result,
    });
    let current_status = wire.current_status.and_then(|c| {
        c.status_type.map(|t| CurrentStatus {
            status_type: t,
            refresh_type: c.refresh_type,
        })
    });
    let health = health_of(current_status.as_ref());
    let busy = is_refreshing(current_status.as_ref());
    ObservedProvider {
        remote_id: wire.id,
        config: ProviderConfig::Coveo(config),
        state: RemoteState {
            current_status,
            last_refresh_operation,
            statistics,
            busy,
            ..Default::default()
        },
        health,
    }
}

/// The configuration part of a provider read from Coveo (its references taken out of `wire`).
fn config_from_wire(wire: &mut ProviderWire) -> CoveoConfig {
    let parameters = wire.parameters.clone().unwrap_or_default();
    let is_sensitive = |p: &ParameterWire| p.sensitive.unwrap_or(false);
    CoveoConfig {
        id: wire.id.clone(),
        display_name: wire
            .display_name
            .clone()
            .or_else(|| wire.name.clone())
            .unwrap_or_else(|| wire.id.clone()),
        provider_type: wire.provider_type.clone().unwrap_or_default(),
        node_required: wire.node_required.unwrap_or(false),
        case_sensitive: wire.case_sensitive.unwrap_or(false),
        parameters: parameters
            .iter()
            .filter(|(_, p)| !is_sensitive(p))
            .map(|(k, p)| (k.clone(), p.value.clone().unwrap_or_default()))
            .collect(),
        sensitive_parameters: parameters
            .iter()
            .filter(|(_, p)| is_sensitive(p))
            .map(|(k, _)| k.clone())
            .collect(),
        user_identities: wire
            .user_identities
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, u)| (k, u.user_name.unwrap_or_default()))
            .collect(),
        secrets_hash: None,
        recorded_secrets_hash: None,
        secrets: None,
        refresh_schedules: BTreeMap::new(),
        remote_schedules: None,
        referenced_by: wire
            .referenced_by
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.reference_type, r.id))
            .collect(),
        cascading: wire
            .cascading_security_providers
            .take()
            .unwrap_or_default()
            .into_values()
            .map(|c| (c.id, c.provider_type.unwrap_or_default()))
            .collect(),
    }
}

/// `statistics`, with the totals derived from the per-state counts when the remote omits them.
fn statistics_from_wire(s: StatisticsWire) -> Statistics {
    let in_error = s.number_of_entities_in_error.unwrap_or_else(|| {
        s.number_of_entities_by_state
            .get("IN_ERROR")
            .copied()
            .unwrap_or(0)
    });
    let total = s
        .total_number_of_entities
        // Saturating: remote numbers are untrusted, and an overflow must not panic.
        .unwrap_or_else(|| {
            s.number_of_entities_by_state
                .values()
                .fold(0i64, |sum, n| sum.saturating_add(*n))
        });
    Statistics {
        number_of_entities_by_state: s.number_of_entities_by_state.into_iter().collect(),
        number_of_entities_in_error: in_error,
        total_number_of_entities: total,
    }
}

/// Maps `currentStatus.type` to health. The set of values is open: unknown values count as
/// healthy, so a new remote state never blocks a rollout.
/// Condition reason: Coveo is still creating the provider.
pub const REASON_REMOTE_CREATING: &str = "RemoteCreating";
/// Condition reason: Coveo reports the provider in error.
pub const REASON_REMOTE_ERROR: &str = "RemoteError";
/// Condition reason: Coveo reports the provider disabled or paused.
pub const REASON_REMOTE_SUSPENDED: &str = "RemoteSuspended";

pub fn health_of(current: Option<&CurrentStatus>) -> RemoteHealth {
    let Some(current) = current else {
        return RemoteHealth::Healthy;
    };
    match current.status_type.as_str() {
        "CREATING" => RemoteHealth::Progressing {
            reason: REASON_REMOTE_CREATING,
            message: "Coveo is creating the provider".into(),
        },
        "ERROR" | "PAUSED_ON_ERROR" => RemoteHealth::Degraded {
            reason: REASON_REMOTE_ERROR,
            message: format!("Coveo reports the provider as {}", current.status_type),
        },
        "DISABLED" | "PAUSED" => RemoteHealth::Degraded {
            reason: REASON_REMOTE_SUSPENDED,
            message: format!("Coveo reports the provider as {}", current.status_type),
        },
        _ => RemoteHealth::Healthy,
    }
}

/// Whether a refresh is running or queued (no new refresh should be started then).
pub fn is_refreshing(current: Option<&CurrentStatus>) -> bool {
    current.is_some_and(|c| matches!(c.status_type.as_str(), "REFRESHING" | "PENDING_REFRESH"))
}
