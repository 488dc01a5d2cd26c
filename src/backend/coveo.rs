//! Coveo Security Cache API: security identity providers under
//! `/rest/organizations/{org}/securityproviders`.
//!
//! Wire types are lenient on purpose: unknown fields are ignored, enums are kept as strings
//! (the sources disagree on `currentStatus.type`), and `lastRefreshOperation.timestamp` is
//! accepted as epoch milliseconds or as a date-time string.
use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::http::{
    HttpClient, HttpOptions, HttpResponse, parse_endpoint, short_text, url_with_segments,
};
use super::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth, RemoteState,
};
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::{
    CoveoProviderSpec, CurrentStatus, LastRefreshOperation, SecurityProvider, Statistics,
};
use crate::error::{RemoteError, RemoteErrorKind};

const BACKEND: &str = "coveo";
/// Error code Coveo returns for the four configuration problems of its docs.
pub const INVALID_CONFIGURATION: &str = "SECURITY_PROVIDER_INVALID_CONFIGURATION";
/// Id of the built-in provider present in every organization.
pub const EMAIL_SECURITY_PROVIDER: &str = "Email Security Provider";
/// Page size for listing; Coveo's default and a safe maximum.
pub const LIST_PAGE_SIZE: usize = 100;
/// Pages fetched at once by [`CoveoClient::list_concurrently`] (the connection's rate limit
/// and concurrency cap still apply).
pub const LIST_CONCURRENCY: usize = 8;

// ---------------------------------------------------------------------------------------------
// Normalized configuration and diff (pure)

/// The spec-owned part of a Coveo provider, normalized so that equal values mean "no update
/// needed": reference order is irrelevant, cascading providers are compared by id, sensitive
/// parameters (masked by Coveo) and server-managed fields are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoveoConfig {
    pub id: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    pub node_required: bool,
    pub case_sensitive: bool,
    pub parameters: BTreeMap<String, String>,
    /// (type, id) pairs.
    pub referenced_by: BTreeSet<(String, String)>,
    /// id -> type. Only the ids are compared.
    #[serde(rename = "cascadingSecurityProviders")]
    pub cascading: BTreeMap<String, String>,
}

impl CoveoConfig {
    /// The desired configuration of a SecurityProvider, with documented defaults applied.
    pub fn desired(id: &str, display_name: &str, spec: &CoveoProviderSpec) -> CoveoConfig {
        CoveoConfig {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            provider_type: spec.provider_type.unwrap_or_default().as_wire(),
            node_required: spec.node_required.unwrap_or(false),
            case_sensitive: spec.case_sensitive.unwrap_or(false),
            parameters: spec.parameters.clone(),
            referenced_by: spec
                .referenced_by
                .iter()
                .map(|r| (reference_type_wire(r.reference_type), r.id.clone()))
                .collect(),
            cascading: spec
                .cascading_security_providers
                .iter()
                .map(|c| (c.id.clone(), c.provider_type.as_wire()))
                .collect(),
        }
    }

    /// Names of the fields that differ, `self` being desired.
    pub fn diff(&self, observed: &CoveoConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.display_name != observed.display_name {
            fields.push("displayName");
        }
        if self.provider_type != observed.provider_type {
            fields.push("type");
        }
        if self.node_required != observed.node_required {
            fields.push("nodeRequired");
        }
        if self.case_sensitive != observed.case_sensitive {
            fields.push("caseSensitive");
        }
        if self.parameters != observed.parameters {
            fields.push("parameters");
        }
        if self.referenced_by != observed.referenced_by {
            fields.push("referencedBy");
        }
        if !self.cascading.keys().eq(observed.cascading.keys()) {
            fields.push("cascadingSecurityProviders");
        }
        fields
    }

    /// The spec block that declares exactly this configuration (used by `export`), so that
    /// applying it plans no update. Defaults are left out.
    pub fn to_spec(&self) -> Result<CoveoProviderSpec, String> {
        fn parse<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, String> {
            serde_json::from_value(serde_json::Value::String(value.to_owned()))
                .map_err(|_| format!("{what} {value:?} is not supported by this operator version"))
        }
        Ok(CoveoProviderSpec {
            provider_type: Some(parse("provider type", &self.provider_type)?),
            node_required: self.node_required.then_some(true),
            case_sensitive: self.case_sensitive.then_some(true),
            parameters: self.parameters.clone(),
            referenced_by: self
                .referenced_by
                .iter()
                .map(|(t, id)| {
                    Ok(crate::api::security_provider::CoveoReference {
                        reference_type: parse("reference type", t)?,
                        id: id.clone(),
                    })
                })
                .collect::<Result<_, String>>()?,
            cascading_security_providers: self
                .cascading
                .iter()
                .map(|(id, t)| {
                    Ok(crate::api::security_provider::CoveoCascadingProvider {
                        id: id.clone(),
                        provider_type: parse("cascading provider type", t)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            ..Default::default()
        })
    }

    /// The request body for POST and PUT.
    pub fn to_request(&self) -> ProviderRequest {
        ProviderRequest {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            provider_type: self.provider_type.clone(),
            node_required: self.node_required,
            case_sensitive: self.case_sensitive,
            parameters: self
                .parameters
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        ParameterWire {
                            value: Some(v.clone()),
                            sensitive: Some(false),
                        },
                    )
                })
                .collect(),
            referenced_by: self
                .referenced_by
                .iter()
                .map(|(t, id)| ReferenceWire {
                    reference_type: t.clone(),
                    id: id.clone(),
                })
                .collect(),
            cascading_security_providers: self
                .cascading
                .iter()
                .map(|(id, t)| {
                    (
                        id.clone(),
                        CascadingWire {
                            id: id.clone(),
                            name: None,
                            provider_type: Some(t.clone()),
                        },
                    )
                })
                .collect(),
        }
    }
}

fn reference_type_wire(t: crate::api::security_provider::CoveoReferenceType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `coveo` block.
pub fn desired_config(sp: &SecurityProvider) -> Option<ProviderConfig> {
    let spec = sp.spec.coveo.as_ref()?;
    Some(ProviderConfig::Coveo(CoveoConfig::desired(
        &sp.provider_id(),
        &sp.display_name(),
        spec,
    )))
}

// ---------------------------------------------------------------------------------------------
// Wire model

/// A parameter value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParameterWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<bool>,
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
        .to_zoned(jiff::tz::TimeZone::UTC)
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
    let message = match message {
        Some(m) if !m.trim().is_empty() => m,
        _ if waf_block => "request blocked by Coveo's web application firewall".to_owned(),
        _ if body.is_empty() => format!("HTTP {status} with an empty body"),
        _ => format!("HTTP {status}: {}", short_text(body)),
    };
    let kind = match code.as_deref() {
        Some(INVALID_CONFIGURATION) => RemoteErrorKind::InvalidConfiguration,
        Some(c) if c.contains("TOO_MANY_REQUESTS") || c.contains("THROTTL") => {
            RemoteErrorKind::RateLimited
        }
        _ => RemoteErrorKind::from_status(status),
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(body_request_id);
    RemoteError {
        backend: BACKEND,
        operation,
        kind,
        status: Some(status),
        code,
        message,
        request_id,
        retry_after: super::http::retry_after(headers, jiff::Timestamp::now()),
    }
}

/// Normalizes a provider read from Coveo.
pub fn observed_from_wire(wire: ProviderWire) -> ObservedProvider {
    let config = CoveoConfig {
        id: wire.id.clone(),
        display_name: wire
            .display_name
            .clone()
            .or_else(|| wire.name.clone())
            .unwrap_or_else(|| wire.id.clone()),
        provider_type: wire.provider_type.clone().unwrap_or_default(),
        node_required: wire.node_required.unwrap_or(false),
        case_sensitive: wire.case_sensitive.unwrap_or(false),
        parameters: wire
            .parameters
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, p)| !p.sensitive.unwrap_or(false))
            .map(|(k, p)| (k, p.value.unwrap_or_default()))
            .collect(),
        referenced_by: wire
            .referenced_by
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.reference_type, r.id))
            .collect(),
        cascading: wire
            .cascading_security_providers
            .unwrap_or_default()
            .into_values()
            .map(|c| (c.id, c.provider_type.unwrap_or_default()))
            .collect(),
    };
    let statistics = wire.statistics.map(|s| {
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
            number_of_entities_by_state: s.number_of_entities_by_state,
            number_of_entities_in_error: in_error,
            total_number_of_entities: total,
        }
    });
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

/// Maps `currentStatus.type` to health. The set of values is open: unknown values count as
/// healthy, so a new remote state never blocks a rollout.
pub fn health_of(current: Option<&CurrentStatus>) -> RemoteHealth {
    let Some(current) = current else {
        return RemoteHealth::Healthy;
    };
    match current.status_type.as_str() {
        "CREATING" => RemoteHealth::Progressing {
            reason: "RemoteCreating",
            message: "Coveo is creating the provider".into(),
        },
        "ERROR" | "PAUSED_ON_ERROR" => RemoteHealth::Degraded {
            reason: "RemoteError",
            message: format!("Coveo reports the provider as {}", current.status_type),
        },
        "DISABLED" | "PAUSED" => RemoteHealth::Degraded {
            reason: "RemoteSuspended",
            message: format!("Coveo reports the provider as {}", current.status_type),
        },
        _ => RemoteHealth::Healthy,
    }
}

/// Whether a refresh is running or queued (no new refresh should be started then).
pub fn is_refreshing(current: Option<&CurrentStatus>) -> bool {
    current.is_some_and(|c| matches!(c.status_type.as_str(), "REFRESHING" | "PENDING_REFRESH"))
}

// ---------------------------------------------------------------------------------------------
// Client

/// Client of one Coveo organization.
pub struct CoveoClient {
    http: HttpClient,
    base: url::Url,
    organization_id: String,
    api_key: String,
}

impl std::fmt::Debug for CoveoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoveoClient")
            .field("base", &self.base.as_str())
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

impl CoveoClient {
    /// A client for `endpoint` (https, or http on loopback) and one organization.
    pub fn new(
        endpoint: &str,
        organization_id: &str,
        api_key: String,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let base = parse_endpoint(endpoint)?;
        if api_key.trim().is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(CoveoClient {
            http: HttpClient::new(BACKEND, options)?,
            base,
            organization_id: organization_id.to_owned(),
            api_key,
        })
    }

    /// Replaces the HTTP client (to attach an observer).
    pub fn map_http(mut self, f: impl FnOnce(HttpClient) -> HttpClient) -> Self {
        self.http = f(self.http);
        self
    }

    fn url(&self, tail: &[&str]) -> url::Url {
        let mut segments = vec!["rest", "organizations", self.organization_id.as_str()];
        segments.extend_from_slice(tail);
        url_with_segments(&self.base, &segments)
    }

    async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, RemoteError> {
        self.http
            .send_json(operation, idempotent, &method, &url, body, |req| {
                req.bearer_auth(&self.api_key)
            })
            .await
    }

    fn fail(operation: &'static str, resp: &HttpResponse) -> RemoteError {
        parse_error(operation, resp.status, &resp.headers, &resp.body)
    }

    /// `GET /securityproviders/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<ProviderWire>, RemoteError> {
        let resp = self
            .call(
                "get",
                true,
                reqwest::Method::GET,
                self.url(&["securityproviders", id]),
                None,
            )
            .await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => resp.json(BACKEND, "get").map(Some),
            _ => Err(Self::fail("get", &resp)),
        }
    }

    /// `POST /securityproviders`. Not retried: a lost response may mean it was created.
    pub async fn create(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        let body = serde_json::to_value(request).unwrap_or_default();
        let resp = self
            .call(
                "create",
                false,
                reqwest::Method::POST,
                self.url(&["securityproviders"]),
                Some(&body),
            )
            .await?;
        if resp.is_success() {
            resp.json(BACKEND, "create")
        } else {
            Err(Self::fail("create", &resp))
        }
    }

    /// `PUT /securityproviders/{id}` (a full replacement, so safe to retry).
    pub async fn update(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        let body = serde_json::to_value(request).unwrap_or_default();
        let url = self.url(&["securityproviders", &request.id]);
        let resp = self
            .call("update", true, reqwest::Method::PUT, url, Some(&body))
            .await?;
        if resp.is_success() {
            resp.json(BACKEND, "update")
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /securityproviders/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        let resp = self
            .call(
                "delete",
                true,
                reqwest::Method::DELETE,
                self.url(&["securityproviders", id]),
                None,
            )
            .await?;
        match resp.status {
            404 => Ok(false),
            _ if resp.is_success() => Ok(true),
            _ => Err(Self::fail("delete", &resp)),
        }
    }

    /// `POST /securitycache/{id}/refresh`.
    pub async fn refresh(&self, id: &str) -> Result<(), RemoteError> {
        let resp = self
            .call(
                "refresh",
                false,
                reqwest::Method::POST,
                self.url(&["securitycache", id, "refresh"]),
                None,
            )
            .await?;
        if resp.is_success() {
            Ok(())
        } else {
            Err(Self::fail("refresh", &resp))
        }
    }

    /// `GET /securityproviders/page?page=0&perPage=1`: the smallest authenticated read, to
    /// check that the organization exists and the API key may view its providers.
    pub async fn verify_credentials(&self) -> Result<(), RemoteError> {
        let mut url = self.url(&["securityproviders", "page"]);
        url.query_pairs_mut()
            .append_pair("page", "0")
            .append_pair("perPage", "1");
        let resp = self
            .call("verify", true, reqwest::Method::GET, url, None)
            .await?;
        if resp.is_success() {
            Ok(())
        } else {
            Err(Self::fail("verify", &resp))
        }
    }

    /// One page of `GET /securityproviders/page`.
    async fn page(&self, page: u64) -> Result<PageWire, RemoteError> {
        let mut url = self.url(&["securityproviders", "page"]);
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("perPage", &LIST_PAGE_SIZE.to_string());
        let resp = self
            .call("list", true, reqwest::Method::GET, url, None)
            .await?;
        if !resp.is_success() {
            return Err(Self::fail("list", &resp));
        }
        resp.json(BACKEND, "list")
    }

    /// All providers like [`Self::list`], but once the first page tells how many there are,
    /// the others are fetched `concurrency` at a time: a resync snapshot of 10,000 providers
    /// takes about 101 / concurrency round trips instead of 101, and the reconciles waiting
    /// for it wait that much less. Same requests, same pages.
    pub async fn list_concurrently(
        &self,
        concurrency: usize,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        use futures::{StreamExt, TryStreamExt};
        let first = self.page(0).await?;
        let Some(total) = first.total_pages else {
            return self.list().await;
        };
        let mut all = first.items;
        let rest: Vec<PageWire> = futures::stream::iter(1..total)
            .map(|page| self.page(page))
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        for page in rest {
            all.extend(page.items);
        }
        Ok(all)
    }

    /// All providers, via `GET /securityproviders/page`, following pages until exhausted.
    pub async fn list(&self) -> Result<Vec<ProviderWire>, RemoteError> {
        let mut all = Vec::new();
        for page in 0.. {
            let mut url = self.url(&["securityproviders", "page"]);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("perPage", &LIST_PAGE_SIZE.to_string());
            let resp = self
                .call("list", true, reqwest::Method::GET, url, None)
                .await?;
            if !resp.is_success() {
                return Err(Self::fail("list", &resp));
            }
            let page_wire: PageWire = resp.json(BACKEND, "list")?;
            let received = page_wire.items.len();
            all.extend(page_wire.items);
            let last_page = match page_wire.total_pages {
                Some(total) => page + 1 >= total,
                None => received < LIST_PAGE_SIZE,
            };
            if last_page || received == 0 {
                break;
            }
        }
        Ok(all)
    }
}

fn coveo_config(config: &ProviderConfig) -> Result<&CoveoConfig, RemoteError> {
    match config {
        ProviderConfig::Coveo(c) => Ok(c),
        other => Err(RemoteError::transport(
            BACKEND,
            "plan",
            RemoteErrorKind::Rejected,
            format!(
                "a {} configuration was given to the Coveo backend",
                other.backend()
            ),
        )),
    }
}

#[async_trait]
impl ProviderBackend for CoveoClient {
    fn kind(&self) -> BackendKind {
        BackendKind::Coveo
    }

    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        Ok(self.get(&key.id).await?.map(observed_from_wire))
    }

    async fn create(
        &self,
        _key: &ProviderKey,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = coveo_config(desired)?;
        let created = CoveoClient::create(self, &config.to_request()).await?;
        // POST may answer without status fields; read the provider back for a complete view.
        match self.get(&config.id).await? {
            Some(full) => Ok(observed_from_wire(full)),
            None => Ok(observed_from_wire(created)),
        }
    }

    async fn update(
        &self,
        _key: &ProviderKey,
        _observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = coveo_config(desired)?;
        let updated = CoveoClient::update(self, &config.to_request()).await?;
        Ok(observed_from_wire(updated))
    }

    async fn delete(&self, remote_id: &str) -> Result<bool, RemoteError> {
        CoveoClient::delete(self, remote_id).await
    }

    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        CoveoClient::refresh(self, remote_id).await.map(|()| true)
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        Ok(CoveoClient::list(self)
            .await?
            .into_iter()
            .filter(|p| p.id != EMAIL_SECURITY_PROVIDER)
            .map(observed_from_wire)
            .collect())
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        CoveoClient::verify_credentials(self).await
    }

    async fn observe_all(&self) -> Result<Option<Vec<ObservedProvider>>, RemoteError> {
        Ok(Some(
            CoveoClient::list_concurrently(self, LIST_CONCURRENCY)
                .await?
                .into_iter()
                .filter(|p| p.id != EMAIL_SECURITY_PROVIDER)
                .map(observed_from_wire)
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::{
        CoveoCascadingProvider, CoveoProviderType, CoveoReference, CoveoReferenceType,
    };

    /// The sample response of Coveo's "Get the status of a security identity provider" page.
    pub const SEED_000_SAMPLE: &str = r#"{
      "id": "mypushsourcesecurityidentityprovider",
      "name": "mypushsourcesecurityidentityprovider",
      "displayName": "mypushsourcesecurityidentityprovider",
      "organizationClusterId": "mycoveocloudv2organization-x3xz5hehgtdarowotab2oekcwa",
      "type": "EXPANDED", "nodeRequired": false, "caseSensitive": false, "parameters": {},
      "cascadingSecurityProviders": {"Email Security Provider": {"id": "Email Security Provider", "name": "Email Security Provider", "type": "EMAIL"}},
      "referencedBy": [{"type": "SOURCE", "id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy",
        "attributes": {"id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy", "name": "MyPushSource", "sourceType": "PUSH", "crawlerInstanceType": "Push", "pushEnabled": true, "onPremisesEnabled": false}}],
      "statistics": {"numberOfEntitiesByState": {"UP_TO_DATE": 10, "DISABLED": 0, "NOT_UPDATED": 0, "OUT_OF_DATE": 0, "IN_ERROR": 0}, "numberOfEntitiesInError": 0, "totalNumberOfEntities": 10},
      "lastRefreshOperation": {"operationType": "SECURITY_CACHE_REFRESH", "timestamp": 1513008128699, "numberOfEntitiesProcessed": 10},
      "currentStatus": {"type": "IDLE"}
    }"#;

    fn seed_spec() -> CoveoProviderSpec {
        CoveoProviderSpec {
            provider_type: Some(CoveoProviderType::Expanded),
            node_required: Some(false),
            case_sensitive: None,
            parameters: BTreeMap::new(),
            referenced_by: vec![CoveoReference {
                reference_type: CoveoReferenceType::Source,
                id: "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy".into(),
            }],
            cascading_security_providers: vec![CoveoCascadingProvider {
                id: EMAIL_SECURITY_PROVIDER.into(),
                provider_type: CoveoProviderType::Email,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn seed_sample_parses_into_status_fields() {
        let wire: ProviderWire = serde_json::from_str(SEED_000_SAMPLE).unwrap();
        let observed = observed_from_wire(wire);
        assert_eq!(observed.remote_id, "mypushsourcesecurityidentityprovider");
        let stats = observed.state.statistics.unwrap();
        assert_eq!(stats.total_number_of_entities, 10);
        assert_eq!(stats.number_of_entities_by_state["UP_TO_DATE"], 10);
        let op = observed.state.last_refresh_operation.unwrap();
        assert_eq!(op.timestamp.as_deref(), Some("2017-12-11T16:02:08.699Z"));
        assert_eq!(op.operation_type.as_deref(), Some("SECURITY_CACHE_REFRESH"));
        assert_eq!(op.number_of_entities_processed, Some(10));
        assert_eq!(observed.state.current_status.unwrap().status_type, "IDLE");
        assert_eq!(observed.health, RemoteHealth::Healthy);
    }

    #[test]
    fn seed_sample_is_in_sync_with_the_equivalent_spec() {
        let desired = CoveoConfig::desired(
            "mypushsourcesecurityidentityprovider",
            "mypushsourcesecurityidentityprovider",
            &seed_spec(),
        );
        let observed = observed_from_wire(serde_json::from_str(SEED_000_SAMPLE).unwrap());
        let ProviderConfig::Coveo(observed) = observed.config else {
            panic!("a Coveo observation");
        };
        // Map key "Email Security Provider" vs our id-keyed request, attributes, statistics and
        // organizationClusterId must not count as differences.
        assert_eq!(desired.diff(&observed), Vec::<&str>::new());
    }

    #[test]
    fn diff_names_each_changed_field() {
        let base = CoveoConfig::desired("p", "P", &seed_spec());
        let mut changed = base.clone();
        changed.display_name = "Other".into();
        changed.case_sensitive = true;
        changed.referenced_by.insert(("SOURCE".into(), "s2".into()));
        assert_eq!(
            changed.diff(&base),
            vec!["displayName", "caseSensitive", "referencedBy"]
        );
        let mut cascading = base.clone();
        cascading
            .cascading
            .insert(EMAIL_SECURITY_PROVIDER.into(), "SOMETHING_ELSE".into());
        assert!(
            cascading.diff(&base).is_empty(),
            "cascading providers are compared by id only"
        );
        cascading.cascading.clear();
        assert_eq!(cascading.diff(&base), vec!["cascadingSecurityProviders"]);
    }

    #[test]
    fn sensitive_parameters_are_not_compared() {
        let json = r#"{"id":"p","parameters":{"a":{"value":"1","sensitive":false},"secret":{"value":"****","sensitive":true}}}"#;
        let observed = observed_from_wire(serde_json::from_str(json).unwrap());
        let ProviderConfig::Coveo(config) = observed.config else {
            panic!("a Coveo observation");
        };
        assert_eq!(
            config.parameters,
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
    }

    #[test]
    fn timestamps_are_accepted_as_millis_or_date_time() {
        for (raw, expected) in [
            (r#"1513008128699"#, Some("2017-12-11T16:02:08.699Z")),
            (
                r#""2017-12-11T16:02:08.699Z""#,
                Some("2017-12-11T16:02:08.699Z"),
            ),
            (
                r#""2017-12-11T17:02:08.699+01:00""#,
                Some("2017-12-11T16:02:08.699Z"),
            ),
            (r#""2017-12-11T16:02:08""#, Some("2017-12-11T16:02:08Z")),
            (r#""1513008128699""#, Some("2017-12-11T16:02:08.699Z")),
            (r#""yesterday""#, None),
        ] {
            let ts: TimestampWire = serde_json::from_str(raw).unwrap();
            assert_eq!(ts.to_rfc3339().as_deref(), expected, "{raw}");
        }
    }

    #[test]
    fn unknown_fields_and_enum_values_are_tolerated() {
        let json = r#"{"id":"p","type":"SOMETHING_NEW","futureField":{"x":1},"currentStatus":{"type":"WARMING_UP","extra":1}}"#;
        let observed = observed_from_wire(serde_json::from_str(json).unwrap());
        assert_eq!(
            observed.state.current_status.as_ref().unwrap().status_type,
            "WARMING_UP"
        );
        assert_eq!(observed.health, RemoteHealth::Healthy);
    }

    #[test]
    fn error_bodies_give_code_message_and_kind() {
        let headers = reqwest::header::HeaderMap::new();
        let e = parse_error("create", 400, &headers, br#"{"errorCode":"SECURITY_PROVIDER_INVALID_CONFIGURATION","message":"Your security identity provider id is too long."}"#);
        assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
        assert_eq!(e.code.as_deref(), Some(INVALID_CONFIGURATION));
        assert_eq!(e.message, "Your security identity provider id is too long.");
        let e = parse_error(
            "get",
            403,
            &headers,
            br#"{"type":"ACCESS_DENIED","detail":"no privilege"}"#,
        );
        assert_eq!(
            (e.kind, e.code.as_deref(), e.message.as_str()),
            (
                RemoteErrorKind::Forbidden,
                Some("ACCESS_DENIED"),
                "no privilege"
            )
        );
        let e = parse_error(
            "get",
            401,
            &headers,
            br#"{"code":"INVALID_TOKEN","message":"expired"}"#,
        );
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (RemoteErrorKind::Unauthorized, Some("INVALID_TOKEN"))
        );
        let e = parse_error(
            "get",
            502,
            &headers,
            b"<html><body>Bad gateway</body></html>",
        );
        assert_eq!(e.kind, RemoteErrorKind::Unavailable);
        assert!(e.message.contains("Bad gateway"), "{}", e.message);
        let mut waf = reqwest::header::HeaderMap::new();
        waf.insert("x-coveo-waf-action", "block".parse().unwrap());
        waf.insert("x-request-id", "req-9".parse().unwrap());
        let e = parse_error("get", 403, &waf, b"");
        assert!(e.message.contains("firewall"));
        assert_eq!(e.request_id.as_deref(), Some("req-9"));
    }

    #[test]
    fn health_follows_current_status() {
        let status = |t: &str| CurrentStatus {
            status_type: t.into(),
            refresh_type: None,
        };
        assert!(matches!(
            health_of(Some(&status("ERROR"))),
            RemoteHealth::Degraded {
                reason: "RemoteError",
                ..
            }
        ));
        assert!(matches!(
            health_of(Some(&status("DISABLED"))),
            RemoteHealth::Degraded {
                reason: "RemoteSuspended",
                ..
            }
        ));
        assert!(matches!(
            health_of(Some(&status("CREATING"))),
            RemoteHealth::Progressing { .. }
        ));
        assert_eq!(
            health_of(Some(&status("REFRESHING"))),
            RemoteHealth::Healthy
        );
        assert!(is_refreshing(Some(&status("PENDING_REFRESH"))));
        assert!(!is_refreshing(Some(&status("IDLE"))));
    }

    #[test]
    fn exported_spec_round_trips_to_the_same_configuration() {
        let observed = observed_from_wire(serde_json::from_str(SEED_000_SAMPLE).unwrap());
        let ProviderConfig::Coveo(config) = observed.config else {
            panic!("coveo config")
        };
        let spec = config.to_spec().unwrap();
        let again = CoveoConfig::desired(&config.id, &config.display_name, &spec);
        assert_eq!(again, config);
        assert_eq!(spec.node_required, None, "defaults are left out");
        let mut odd = config.clone();
        odd.provider_type = "FUTURE_TYPE".into();
        assert!(odd.to_spec().unwrap_err().contains("FUTURE_TYPE"));
    }

    #[test]
    fn request_body_matches_the_documented_payload() {
        let config = CoveoConfig::desired("My Provider", "My Provider", &seed_spec());
        let body = serde_json::to_value(config.to_request()).unwrap();
        assert_eq!(body["id"], "My Provider");
        assert_eq!(body["type"], "EXPANDED");
        assert_eq!(body["nodeRequired"], false);
        assert_eq!(body["referencedBy"][0]["type"], "SOURCE");
        assert_eq!(
            body["cascadingSecurityProviders"][EMAIL_SECURITY_PROVIDER]["type"],
            "EMAIL"
        );
        assert_eq!(
            body["cascadingSecurityProviders"][EMAIL_SECURITY_PROVIDER]["id"],
            EMAIL_SECURITY_PROVIDER
        );
    }
}
