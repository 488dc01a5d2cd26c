//! JITSudo tenant identity providers under `/v1/identity-providers`.
//!
//! * Every call carries `X-API-Key` and `X-Tenant-ID`. A 403 `tenant_mismatch` means the
//!   tenant header does not belong to the API key: terminal, with a message naming
//!   `spec.jitsudo.tenantId` of the connection.
//! * Providers have server-assigned UUIDs and are found by their unique `name` (the
//!   SecurityProvider's `displayName`, else `providerId`, else metadata.name). The list
//!   follows `next_cursor` while `has_more`, 250 per page; the remote id recorded in status
//!   allows a direct `GET /v1/identity-providers/{id}` afterwards.
//! * Update: `PUT /v1/identity-providers/{id}` with `{name, config, enabled}` (documented).
//!
//! Assumptions (the reference documents only list and update): create is
//! `POST /v1/identity-providers` with `{name, provider_type, config, enabled}` answering the
//! provider object; `GET` and `DELETE` by id exist; a sync is triggered with
//! `POST /v1/identity-providers/{id}/sync` (a 404/405/501 there is taken to mean "no sync
//! operation", not an error).
//!
//! Health: `failed` is Degraded (reason `SyncFailed`, message = `sync_error`); `pending`, and
//! `syncing` before the first successful sync, are Progressing (the provider is not usable
//! yet); `syncing` after an earlier sync, `synced` and unknown values are Healthy.
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{
    HttpClient, HttpOptions, HttpResponse, parse_endpoint, short_text, url_with_segments,
};
use super::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth, RemoteState,
};
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::{
    CurrentStatus, JitsudoProviderSpec, JitsudoStatus, SecurityProvider,
};
use crate::error::{RemoteError, RemoteErrorKind};

const BACKEND: &str = "jitsudo";
/// Error code of a credential/tenant mismatch.
pub const TENANT_MISMATCH: &str = "tenant_mismatch";
/// Largest page the list accepts.
pub const LIST_PAGE_LIMIT: u32 = 250;
/// Safety bound on pages when listing.
const MAX_LIST_PAGES: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Normalized configuration and diff (pure)

/// The spec-owned part of a JITSudo identity provider. A missing `config` is `{}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JitsudoConfig {
    #[serde(rename = "displayName")]
    pub name: String,
    pub provider_type: String,
    pub config: Value,
    pub enabled: bool,
}

impl JitsudoConfig {
    /// The desired configuration, with defaults (`enabled` true, `config` empty).
    pub fn desired(name: &str, spec: &JitsudoProviderSpec) -> JitsudoConfig {
        JitsudoConfig {
            name: name.to_owned(),
            provider_type: spec.provider_type.as_wire(),
            config: spec.config.clone().unwrap_or_else(|| json!({})),
            enabled: spec.enabled.unwrap_or(true),
        }
    }

    /// The spec block that declares exactly this configuration (used by `export`); defaults
    /// are left out.
    pub fn to_spec(&self) -> Result<JitsudoProviderSpec, String> {
        let provider_type = serde_json::from_value(Value::String(self.provider_type.clone()))
            .map_err(|_| {
                format!(
                    "provider type {:?} is not supported by this operator version",
                    self.provider_type
                )
            })?;
        let empty = self.config.as_object().is_some_and(|o| o.is_empty());
        Ok(JitsudoProviderSpec {
            provider_type,
            config: (!empty).then(|| self.config.clone()),
            enabled: (!self.enabled).then_some(false),
        })
    }

    /// Names of the fields that differ, `self` being desired. `providerType` is reported too,
    /// although JITSudo cannot change it: the update then fails with a clear terminal error.
    pub fn diff(&self, observed: &JitsudoConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.name != observed.name {
            fields.push("displayName");
        }
        if self.provider_type != observed.provider_type {
            fields.push("providerType");
        }
        if self.config != observed.config {
            fields.push("config");
        }
        if self.enabled != observed.enabled {
            fields.push("enabled");
        }
        fields
    }

    /// The create body (assumed endpoint, see the module docs).
    pub fn create_body(&self) -> Value {
        json!({
            "name": self.name,
            "provider_type": self.provider_type,
            "config": self.config,
            "enabled": self.enabled,
        })
    }

    /// The documented update body.
    pub fn update_body(&self) -> Value {
        json!({"name": self.name, "config": self.config, "enabled": self.enabled})
    }
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `jitsudo` block.
/// The provider's name is `displayName`, else the provider id.
pub fn desired_config(sp: &SecurityProvider) -> Option<ProviderConfig> {
    let spec = sp.spec.jitsudo.as_ref()?;
    Some(ProviderConfig::Jitsudo(JitsudoConfig::desired(
        &sp.display_name(),
        spec,
    )))
}

// ---------------------------------------------------------------------------------------------
// Wire model

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
    let mut message = match parsed.message {
        Some(m) if !m.trim().is_empty() => m,
        _ if body.is_empty() => format!("HTTP {status} with an empty body"),
        _ => format!("HTTP {status}: {}", short_text(body)),
    };
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
    RemoteError {
        backend: BACKEND,
        operation,
        kind,
        status: Some(status),
        code,
        message,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        retry_after: super::http::retry_after(headers, jiff::Timestamp::now()),
    }
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

/// Health from `sync_status` (see the module docs).
pub fn health_of(sync_status: &str, synced_before: bool, sync_error: Option<&str>) -> RemoteHealth {
    match sync_status {
        "failed" => RemoteHealth::Degraded {
            reason: "SyncFailed",
            message: match sync_error {
                Some(e) if !e.trim().is_empty() => format!("JITSudo sync failed: {e}"),
                _ => "JITSudo sync failed without an error message".into(),
            },
        },
        "pending" => RemoteHealth::Progressing {
            reason: "SyncPending",
            message: "JITSudo has not synchronised the provider yet".into(),
        },
        "syncing" if !synced_before => RemoteHealth::Progressing {
            reason: "Syncing",
            message: "JITSudo is synchronising the provider for the first time".into(),
        },
        _ => RemoteHealth::Healthy,
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Client of one JITSudo tenant.
pub struct JitsudoClient {
    http: HttpClient,
    base: url::Url,
    tenant_id: String,
    api_key: String,
}

impl std::fmt::Debug for JitsudoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitsudoClient")
            .field("base", &self.base.as_str())
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl JitsudoClient {
    /// A client for `endpoint` (https, or http on loopback) and one tenant.
    pub fn new(
        endpoint: &str,
        tenant_id: &str,
        api_key: String,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let base = parse_endpoint(endpoint)?;
        if api_key.trim().is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(JitsudoClient {
            http: HttpClient::new(BACKEND, options)?,
            base,
            tenant_id: tenant_id.to_owned(),
            api_key,
        })
    }

    /// Replaces the HTTP client (to attach an observer).
    pub fn map_http(mut self, f: impl FnOnce(HttpClient) -> HttpClient) -> Self {
        self.http = f(self.http);
        self
    }

    fn url(&self, tail: &[&str]) -> url::Url {
        let mut segments = vec!["v1", "identity-providers"];
        segments.extend_from_slice(tail);
        url_with_segments(&self.base, &segments)
    }

    async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
    ) -> Result<HttpResponse, RemoteError> {
        self.http
            .send_json(operation, idempotent, &method, &url, body, |req| {
                req.header("X-API-Key", &self.api_key)
                    .header("X-Tenant-ID", &self.tenant_id)
            })
            .await
    }

    fn fail(operation: &'static str, resp: &HttpResponse) -> RemoteError {
        parse_error(operation, resp.status, &resp.headers, &resp.body)
    }

    /// `GET /v1/identity-providers/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<ProviderWire>, RemoteError> {
        let resp = self
            .call("get", true, reqwest::Method::GET, self.url(&[id]), None)
            .await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => resp.json(BACKEND, "get").map(Some),
            _ => Err(Self::fail("get", &resp)),
        }
    }

    /// One page of `GET /v1/identity-providers`.
    pub async fn list_page(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<PageWire, RemoteError> {
        let mut url = self.url(&[]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.min(LIST_PAGE_LIMIT).to_string());
        if let Some(cursor) = cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let resp = self
            .call("list", true, reqwest::Method::GET, url, None)
            .await?;
        if resp.is_success() {
            resp.json(BACKEND, "list")
        } else {
            Err(Self::fail("list", &resp))
        }
    }

    /// Walks the pages (`limit` per page) until `stop` returns true for a provider or the
    /// list ends; returns every provider seen.
    async fn walk(
        &self,
        limit: u32,
        mut stop: impl FnMut(&ProviderWire) -> bool,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.list_page(limit, cursor.as_deref()).await?;
            let found = page.data.iter().any(&mut stop);
            all.extend(page.data);
            if found {
                break;
            }
            match page.next_cursor.filter(|c| !c.is_empty()) {
                // A repeated cursor would loop forever; treat it as the end.
                Some(next) if page.has_more && cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next)
                }
                _ => break,
            }
        }
        Ok(all)
    }

    /// The provider with this exact name, searching page by page (`limit` per page).
    pub async fn find_by_name(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Option<ProviderWire>, RemoteError> {
        let seen = self
            .walk(limit, |p| p.name.as_deref() == Some(name))
            .await?;
        Ok(seen.into_iter().find(|p| p.name.as_deref() == Some(name)))
    }

    /// Every provider of the tenant.
    pub async fn list(&self) -> Result<Vec<ProviderWire>, RemoteError> {
        self.walk(LIST_PAGE_LIMIT, |_| false).await
    }

    /// `POST /v1/identity-providers` (assumed). Not retried: a lost response may mean it was
    /// created.
    pub async fn create(&self, config: &JitsudoConfig) -> Result<ProviderWire, RemoteError> {
        let body = config.create_body();
        let resp = self
            .call(
                "create",
                false,
                reqwest::Method::POST,
                self.url(&[]),
                Some(&body),
            )
            .await?;
        if resp.is_success() {
            resp.json(BACKEND, "create")
        } else {
            Err(Self::fail("create", &resp))
        }
    }

    /// `PUT /v1/identity-providers/{id}` (a full replacement, so safe to retry).
    pub async fn update(
        &self,
        id: &str,
        config: &JitsudoConfig,
    ) -> Result<ProviderWire, RemoteError> {
        let body = config.update_body();
        let resp = self
            .call(
                "update",
                true,
                reqwest::Method::PUT,
                self.url(&[id]),
                Some(&body),
            )
            .await?;
        if resp.is_success() {
            resp.json(BACKEND, "update")
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /v1/identity-providers/{id}` (assumed); false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        let resp = self
            .call(
                "delete",
                true,
                reqwest::Method::DELETE,
                self.url(&[id]),
                None,
            )
            .await?;
        match resp.status {
            404 => Ok(false),
            _ if resp.is_success() => Ok(true),
            _ => Err(Self::fail("delete", &resp)),
        }
    }

    /// `POST /v1/identity-providers/{id}/sync` (assumed); false when the server has no such
    /// operation.
    pub async fn sync(&self, id: &str) -> Result<bool, RemoteError> {
        let resp = self
            .call(
                "refresh",
                false,
                reqwest::Method::POST,
                self.url(&[id, "sync"]),
                None,
            )
            .await?;
        match resp.status {
            404 | 405 | 501 => Ok(false),
            _ if resp.is_success() => Ok(true),
            _ => Err(Self::fail("refresh", &resp)),
        }
    }
}

fn jitsudo_config(config: &ProviderConfig) -> Result<&JitsudoConfig, RemoteError> {
    match config {
        ProviderConfig::Jitsudo(c) => Ok(c),
        other => Err(RemoteError::transport(
            BACKEND,
            "plan",
            RemoteErrorKind::Rejected,
            format!(
                "a {} configuration was given to the JITSudo backend",
                other.backend()
            ),
        )),
    }
}

#[async_trait]
impl ProviderBackend for JitsudoClient {
    fn kind(&self) -> BackendKind {
        BackendKind::Jitsudo
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        // One provider is enough to prove the API key, the tenant header and the read right.
        self.list_page(1, None).await.map(|_| ())
    }

    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        // The recorded id survives renames; without it (or when it is gone) search by name.
        if let Some(id) = &key.known_remote_id
            && let Some(found) = self.get(id).await?
        {
            return Ok(Some(observed_from_wire(found)));
        }
        Ok(self
            .find_by_name(&key.id, LIST_PAGE_LIMIT)
            .await?
            .map(observed_from_wire))
    }

    async fn create(
        &self,
        _key: &ProviderKey,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = jitsudo_config(desired)?;
        Ok(observed_from_wire(
            JitsudoClient::create(self, config).await?,
        ))
    }

    async fn update(
        &self,
        _key: &ProviderKey,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = jitsudo_config(desired)?;
        let current = jitsudo_config(&observed.config)?;
        if config.provider_type != current.provider_type {
            return Err(RemoteError::transport(
                BACKEND,
                "update",
                RemoteErrorKind::Rejected,
                format!(
                    "JITSudo cannot change the provider type of an existing provider (remote {:?}, spec {:?}); delete and recreate it, or restore spec.jitsudo.providerType",
                    current.provider_type, config.provider_type
                ),
            ));
        }
        let updated = JitsudoClient::update(self, &observed.remote_id, config).await?;
        Ok(observed_from_wire(updated))
    }

    async fn delete(&self, remote_id: &str) -> Result<bool, RemoteError> {
        JitsudoClient::delete(self, remote_id).await
    }

    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        self.sync(remote_id).await
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        Ok(JitsudoClient::list(self)
            .await?
            .into_iter()
            .map(observed_from_wire)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_provider::JitsudoProviderType;

    #[test]
    fn diff_names_changed_fields() {
        let spec = JitsudoProviderSpec {
            provider_type: JitsudoProviderType::Okta,
            config: Some(json!({"domain": "acme.okta.com"})),
            enabled: None,
        };
        let desired = JitsudoConfig::desired("okta-main", &spec);
        assert!(desired.enabled);
        assert_eq!(desired.provider_type, "okta");
        let mut observed = desired.clone();
        assert!(desired.diff(&observed).is_empty());
        observed.config = json!({"domain": "old.okta.com"});
        observed.enabled = false;
        assert_eq!(desired.diff(&observed), vec!["config", "enabled"]);
        observed = desired.clone();
        observed.name = "renamed".into();
        observed.provider_type = "github".into();
        assert_eq!(desired.diff(&observed), vec!["displayName", "providerType"]);
        let none = JitsudoConfig::desired(
            "x",
            &JitsudoProviderSpec {
                config: None,
                ..spec
            },
        );
        assert_eq!(none.config, json!({}));
        assert_eq!(
            none.update_body(),
            json!({"name": "x", "config": {}, "enabled": true})
        );
    }

    #[test]
    fn seed_fields_parse_and_sync_status_drives_health() {
        let wire: ProviderWire = serde_json::from_str(
            r#"{"id":"0d5c7b1e-0000-4000-8000-000000000001","name":"aws","provider_type":"aws_identity_center","config":{},"enabled":true,"last_synced_at":null,"sync_status":"pending","sync_error":null,"created_at":"2026-11-23T10:00:00Z","updated_at":"2026-11-23T10:00:00Z","future":1}"#,
        )
        .unwrap();
        let observed = observed_from_wire(wire);
        assert!(matches!(
            observed.health,
            RemoteHealth::Progressing {
                reason: "SyncPending",
                ..
            }
        ));
        assert!(observed.state.busy);
        assert_eq!(
            observed.state.current_status.unwrap().status_type,
            "PENDING"
        );
        let status = observed.state.jitsudo.unwrap();
        assert_eq!(status.provider_type, "aws_identity_center");
        assert_eq!(status.last_synced_at, None);

        assert_eq!(
            health_of("failed", true, Some("okta: 401 invalid token")),
            RemoteHealth::Degraded {
                reason: "SyncFailed",
                message: "JITSudo sync failed: okta: 401 invalid token".into()
            }
        );
        assert!(matches!(
            health_of("syncing", false, None),
            RemoteHealth::Progressing { .. }
        ));
        assert_eq!(health_of("syncing", true, None), RemoteHealth::Healthy);
        assert_eq!(health_of("synced", true, None), RemoteHealth::Healthy);
        assert_eq!(
            health_of("something_new", false, None),
            RemoteHealth::Healthy
        );
    }

    #[test]
    fn tenant_mismatch_names_the_wrong_header() {
        let headers = reqwest::header::HeaderMap::new();
        let e = parse_error(
            "list",
            403,
            &headers,
            br#"{"code":"tenant_mismatch","message":"credential tenant does not match X-Tenant-ID","notices":["deny-cross-tenant"]}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::Forbidden);
        assert!(e.kind.is_terminal());
        assert_eq!(e.code.as_deref(), Some(TENANT_MISMATCH));
        let text = e.to_string();
        assert!(text.contains("X-Tenant-ID"), "{text}");
        assert!(text.contains("spec.jitsudo.tenantId"), "{text}");
        assert!(text.contains("deny-cross-tenant"), "{text}");

        let e = parse_error(
            "list",
            401,
            &headers,
            br#"{"code":"unauthenticated","message":"missing or invalid X-API-Key"}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::Unauthorized);
        let e = parse_error(
            "create",
            400,
            &headers,
            br#"{"code":"invalid_input","message":"name is required","details":{"field":"name"}}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
        let e = parse_error("get", 503, &headers, b"");
        assert_eq!(e.kind, RemoteErrorKind::Unavailable);
        assert!(e.message.contains("empty body"));
    }
}
