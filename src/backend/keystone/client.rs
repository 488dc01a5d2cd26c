//! OpenStack Keystone OS-FEDERATION identity providers (identity API v3), including Open
//! Telekom Cloud IAM, which serves the same paths.
//!
//! * Authentication: `POST /v3/auth/tokens` with a password or an application credential; the
//!   token (header `X-Subject-Token`) is cached until 60 s before its `expires_at` and sent as
//!   `X-Auth-Token`. A 401 on an API call drops the token, re-authenticates once and repeats
//!   the call once.
//! * Create `PUT /v3/OS-FEDERATION/identity_providers/{id}` (201), read with `GET`, update with
//!   `PATCH` carrying only the changed fields (`domain_id` is create-only), `DELETE` (204).
//! * Errors come in the upstream shape `{"error":{"code","title","message"}}` or the OTC shape
//!   `{"error_code":"IAM.0xxx","error_msg"}`; both are parsed. `IAM.0012` and 429 are rate
//!   limiting; 409 (duplicate id or remote id) is terminal.
//!
//! Keystone has no refresh operation: [`ProviderBackend::refresh`] returns false.
use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{
    HttpClient, HttpOptions, HttpResponse, parse_endpoint, short_text, url_with_segments,
};
use super::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth, RemoteState,
};
use crate::api::provider_connection::{BackendKind, KeystoneScope};
use crate::api::security_provider::{
    CurrentStatus, KeystoneProviderSpec, KeystoneStatus, SecurityProvider,
};
use crate::error::{RemoteError, RemoteErrorKind};

const BACKEND: &str = "keystone";
/// OTC IAM's throttling error code ("throttling threshold has been reached").
pub const IAM_THROTTLED: &str = "IAM.0012";
/// A cached token is replaced this long before it expires, so no call races its expiry.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime assumed for a token whose `expires_at` is missing or unreadable.
const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Safety bound on `links.next` pages when listing.
const MAX_LIST_PAGES: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Normalized configuration and diff (pure)

/// The spec-owned part of a Keystone identity provider, normalized: a missing description is
/// empty and remote ids are a set (Keystone does not keep their order meaningful).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneConfig {
    pub id: String,
    pub description: String,
    pub enabled: bool,
    pub remote_ids: BTreeSet<String>,
    /// None means the Keystone default.
    pub authorization_ttl: Option<i64>,
    /// Create-only: sent on create when set, never compared or patched (Keystone rejects it in
    /// PATCH, and the CRD makes it immutable).
    pub domain_id: Option<String>,
}

impl KeystoneConfig {
    /// The desired configuration, with this operator's defaults (enabled unless told otherwise).
    pub fn desired(id: &str, spec: &KeystoneProviderSpec) -> KeystoneConfig {
        KeystoneConfig {
            id: id.to_owned(),
            description: spec.description.clone().unwrap_or_default(),
            enabled: spec.enabled.unwrap_or(true),
            remote_ids: spec.remote_ids.iter().cloned().collect(),
            authorization_ttl: spec.authorization_ttl,
            domain_id: spec.domain_id.clone(),
        }
    }

    /// The spec block that declares exactly this configuration (used by `export`); defaults
    /// are left out.
    pub fn to_spec(&self) -> KeystoneProviderSpec {
        KeystoneProviderSpec {
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            enabled: (!self.enabled).then_some(false),
            remote_ids: self.remote_ids.iter().cloned().collect(),
            authorization_ttl: self.authorization_ttl,
            domain_id: self.domain_id.clone(),
        }
    }

    /// Names of the updatable fields that differ, `self` being desired (CRD field names).
    pub fn diff(&self, observed: &KeystoneConfig) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.description != observed.description {
            fields.push("description");
        }
        if self.enabled != observed.enabled {
            fields.push("enabled");
        }
        if self.remote_ids != observed.remote_ids {
            fields.push("remoteIds");
        }
        if self.authorization_ttl != observed.authorization_ttl {
            fields.push("authorizationTtl");
        }
        fields
    }

    fn description_wire(&self) -> Value {
        if self.description.is_empty() {
            Value::Null
        } else {
            Value::String(self.description.clone())
        }
    }

    /// The body of the create PUT: every field, `domain_id` only when set (Keystone creates a
    /// domain otherwise).
    pub fn create_body(&self) -> Value {
        let mut idp = Map::new();
        if !self.description.is_empty() {
            idp.insert("description".into(), self.description_wire());
        }
        idp.insert("enabled".into(), Value::Bool(self.enabled));
        idp.insert("remote_ids".into(), json!(self.remote_ids));
        if let Some(ttl) = self.authorization_ttl {
            idp.insert("authorization_ttl".into(), json!(ttl));
        }
        if let Some(domain) = &self.domain_id {
            idp.insert("domain_id".into(), json!(domain));
        }
        json!({ "identity_provider": idp })
    }

    /// The PATCH body with only the fields that differ from `observed`; None when nothing does.
    pub fn patch_body(&self, observed: &KeystoneConfig) -> Option<Value> {
        let mut idp = Map::new();
        for field in self.diff(observed) {
            match field {
                "description" => {
                    idp.insert("description".into(), self.description_wire());
                }
                "enabled" => {
                    idp.insert("enabled".into(), Value::Bool(self.enabled));
                }
                "remoteIds" => {
                    idp.insert("remote_ids".into(), json!(self.remote_ids));
                }
                "authorizationTtl" => {
                    idp.insert("authorization_ttl".into(), json!(self.authorization_ttl));
                }
                _ => {}
            }
        }
        (!idp.is_empty()).then(|| json!({ "identity_provider": idp }))
    }
}

/// Builds the desired configuration of a SecurityProvider whose spec has a `keystone` block.
pub fn desired_config(sp: &SecurityProvider) -> Option<ProviderConfig> {
    let spec = sp.spec.keystone.as_ref()?;
    Some(ProviderConfig::Keystone(KeystoneConfig::desired(
        &sp.provider_id(),
        spec,
    )))
}

// ---------------------------------------------------------------------------------------------
// Wire model

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
struct OneWire {
    identity_provider: Option<IdentityProviderWire>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct ListWire {
    identity_providers: Vec<IdentityProviderWire>,
    links: Option<LinksWire>,
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
    let message = match message {
        Some(m) if !m.trim().is_empty() => m,
        _ if body.is_empty() => format!("HTTP {status} with an empty body"),
        _ => format!("HTTP {status}: {}", short_text(body)),
    };
    let kind = match code.as_deref() {
        Some(IAM_THROTTLED) => RemoteErrorKind::RateLimited,
        Some("IAM.0066" | "IAM.0067" | "IAM.0001") => RemoteErrorKind::Unauthorized,
        Some("IAM.0005") => RemoteErrorKind::Conflict,
        _ if status == 400 => RemoteErrorKind::InvalidConfiguration,
        _ => RemoteErrorKind::from_status(status),
    };
    let request_id = ["x-openstack-request-id", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_owned);
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
            }),
            ..Default::default()
        },
        // Keystone has no lifecycle: an identity provider is usable as soon as it exists. A
        // disabled one is what the spec asked for (otherwise the update enables it).
        health: RemoteHealth::Healthy,
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// How the client authenticates. Debug never prints the secret.
#[derive(Clone)]
pub enum KeystoneCredentials {
    Password {
        user_name: String,
        user_domain_name: String,
        password: String,
    },
    ApplicationCredential {
        id: String,
        secret: String,
    },
}

impl std::fmt::Debug for KeystoneCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeystoneCredentials::Password {
                user_name,
                user_domain_name,
                ..
            } => f
                .debug_struct("Password")
                .field("user_name", user_name)
                .field("user_domain_name", user_domain_name)
                .finish_non_exhaustive(),
            KeystoneCredentials::ApplicationCredential { id, .. } => f
                .debug_struct("ApplicationCredential")
                .field("id", id)
                .finish_non_exhaustive(),
        }
    }
}

/// The `POST /v3/auth/tokens` body.
pub fn auth_request(credentials: &KeystoneCredentials, scope: Option<&KeystoneScope>) -> Value {
    let identity = match credentials {
        KeystoneCredentials::Password {
            user_name,
            user_domain_name,
            password,
        } => json!({
            "methods": ["password"],
            "password": {"user": {"name": user_name, "domain": {"name": user_domain_name}, "password": password}}
        }),
        KeystoneCredentials::ApplicationCredential { id, secret } => json!({
            "methods": ["application_credential"],
            "application_credential": {"id": id, "secret": secret}
        }),
    };
    let mut auth = json!({ "identity": identity });
    // An application credential carries its own scope; Keystone rejects an explicit one.
    let scope = match credentials {
        KeystoneCredentials::Password { .. } => scope.and_then(scope_wire),
        KeystoneCredentials::ApplicationCredential { .. } => None,
    };
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

fn scope_wire(scope: &KeystoneScope) -> Option<Value> {
    if scope.system == Some(true) {
        Some(json!({"system": {"all": true}}))
    } else if let Some(project) = &scope.project_id {
        Some(json!({"project": {"id": project}}))
    } else {
        scope
            .domain_name
            .as_ref()
            .map(|d| json!({"domain": {"name": d}}))
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct TokenResponseWire {
    token: Option<TokenBodyWire>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct TokenBodyWire {
    expires_at: Option<String>,
}

/// A token and when it stops being usable. Debug never prints the token.
#[derive(Clone)]
struct CachedToken {
    value: String,
    expires_at: jiff::Timestamp,
}

impl CachedToken {
    fn fresh(&self, now: jiff::Timestamp) -> bool {
        let margin = jiff::SignedDuration::try_from(TOKEN_REFRESH_MARGIN).unwrap_or_default();
        now.checked_add(margin)
            .is_ok_and(|deadline| deadline < self.expires_at)
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Client of one Keystone (or OTC IAM) endpoint.
pub struct KeystoneClient {
    http: HttpClient,
    /// Base URL ending in `/v3`.
    base: url::Url,
    credentials: KeystoneCredentials,
    scope: Option<KeystoneScope>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for KeystoneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneClient")
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl KeystoneClient {
    /// A client for `auth_url` (with or without a trailing `/v3`).
    pub fn new(
        auth_url: &str,
        credentials: KeystoneCredentials,
        scope: Option<KeystoneScope>,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let mut base = parse_endpoint(auth_url)?;
        {
            let path = base.path().trim_end_matches('/');
            let path = path.strip_suffix("/v3").unwrap_or(path).to_owned();
            base.set_path(&format!("{path}/v3"));
        }
        let secret = match &credentials {
            KeystoneCredentials::Password { password, .. } => password,
            KeystoneCredentials::ApplicationCredential { secret, .. } => secret,
        };
        if secret.trim().is_empty() {
            return Err("the Keystone password or application credential secret is empty".into());
        }
        Ok(KeystoneClient {
            http: HttpClient::new(BACKEND, options)?,
            base,
            credentials,
            scope,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// Replaces the HTTP client (to attach an observer).
    pub fn map_http(mut self, f: impl FnOnce(HttpClient) -> HttpClient) -> Self {
        self.http = f(self.http);
        self
    }

    fn url(&self, tail: &[&str]) -> url::Url {
        url_with_segments(&self.base, tail)
    }

    fn idp_url(&self, id: &str) -> url::Url {
        self.url(&["OS-FEDERATION", "identity_providers", id])
    }

    /// A usable token: the cached one, or a new one. Authentication runs under the lock, so
    /// concurrent reconciles wait for one token instead of each requesting their own.
    async fn token(&self) -> Result<String, RemoteError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.fresh(jiff::Timestamp::now())
        {
            return Ok(token.value.clone());
        }
        let token = self.authenticate().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Forgets `rejected` unless another call already replaced it.
    async fn drop_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected) {
            *cached = None;
        }
    }

    async fn authenticate(&self) -> Result<CachedToken, RemoteError> {
        let body = auth_request(&self.credentials, self.scope.as_ref());
        let url = self.url(&["auth", "tokens"]);
        let resp = self
            .http
            .send("authenticate", true, |client| {
                client
                    .post(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&body)
            })
            .await?;
        if !resp.is_success() {
            return Err(parse_error(
                "authenticate",
                resp.status,
                &resp.headers,
                &resp.body,
            ));
        }
        let value = resp
            .header("x-subject-token")
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                RemoteError::transport(
                    BACKEND,
                    "authenticate",
                    RemoteErrorKind::BadResponse,
                    "the token response has no X-Subject-Token header",
                )
            })?;
        let parsed: TokenResponseWire = serde_json::from_slice(&resp.body).unwrap_or_default();
        let now = jiff::Timestamp::now();
        let expires_at = parsed
            .token
            .and_then(|t| t.expires_at)
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| {
                let lifetime =
                    jiff::SignedDuration::try_from(ASSUMED_TOKEN_LIFETIME).unwrap_or_default();
                now.checked_add(lifetime).unwrap_or(now)
            });
        tracing::debug!(backend = BACKEND, %expires_at, "obtained a Keystone token");
        Ok(CachedToken { value, expires_at })
    }

    /// One API call with the token; on 401 re-authenticates once and repeats the call once.
    async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
    ) -> Result<HttpResponse, RemoteError> {
        let token = self.token().await?;
        let resp = self
            .send_with_token(&token, operation, idempotent, &method, &url, body)
            .await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        // Revoked early (password change, user disabled, server restart): one fresh token.
        tracing::debug!(
            backend = BACKEND,
            operation,
            "token rejected; re-authenticating once"
        );
        self.drop_token(&token).await;
        let token = self.token().await?;
        self.send_with_token(&token, operation, idempotent, &method, &url, body)
            .await
    }

    async fn send_with_token(
        &self,
        token: &str,
        operation: &'static str,
        idempotent: bool,
        method: &reqwest::Method,
        url: &url::Url,
        body: Option<&Value>,
    ) -> Result<HttpResponse, RemoteError> {
        self.http
            .send_json(operation, idempotent, method, url, body, |req| {
                req.header("X-Auth-Token", token)
            })
            .await
    }

    fn decode_one(
        operation: &'static str,
        resp: &HttpResponse,
    ) -> Result<IdentityProviderWire, RemoteError> {
        resp.json::<OneWire>(BACKEND, operation)?
            .identity_provider
            .ok_or_else(|| {
                RemoteError::transport(
                    BACKEND,
                    operation,
                    RemoteErrorKind::BadResponse,
                    "the response has no identity_provider object",
                )
            })
    }

    fn fail(operation: &'static str, resp: &HttpResponse) -> RemoteError {
        parse_error(operation, resp.status, &resp.headers, &resp.body)
    }

    /// `GET /v3/OS-FEDERATION/identity_providers/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<IdentityProviderWire>, RemoteError> {
        let resp = self
            .call("get", true, reqwest::Method::GET, self.idp_url(id), None)
            .await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => Self::decode_one("get", &resp).map(Some),
            _ => Err(Self::fail("get", &resp)),
        }
    }

    /// `PUT /v3/OS-FEDERATION/identity_providers/{id}` (201). Not retried: a lost response may
    /// mean it was created, and a repeat would be a 409.
    pub async fn create(
        &self,
        config: &KeystoneConfig,
    ) -> Result<IdentityProviderWire, RemoteError> {
        let body = config.create_body();
        let resp = self
            .call(
                "create",
                false,
                reqwest::Method::PUT,
                self.idp_url(&config.id),
                Some(&body),
            )
            .await?;
        if resp.is_success() {
            Self::decode_one("create", &resp)
        } else {
            Err(Self::fail("create", &resp))
        }
    }

    /// `PATCH /v3/OS-FEDERATION/identity_providers/{id}` with `body` (sets values, so safe to
    /// retry).
    pub async fn patch(&self, id: &str, body: &Value) -> Result<IdentityProviderWire, RemoteError> {
        let resp = self
            .call(
                "update",
                true,
                reqwest::Method::PATCH,
                self.idp_url(id),
                Some(body),
            )
            .await?;
        if resp.is_success() {
            Self::decode_one("update", &resp)
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /v3/OS-FEDERATION/identity_providers/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        let resp = self
            .call(
                "delete",
                true,
                reqwest::Method::DELETE,
                self.idp_url(id),
                None,
            )
            .await?;
        match resp.status {
            404 => Ok(false),
            _ if resp.is_success() => Ok(true),
            _ => Err(Self::fail("delete", &resp)),
        }
    }

    /// `GET /v3/OS-FEDERATION/identity_providers`, following `links.next` when a deployment
    /// paginates.
    pub async fn list(&self) -> Result<Vec<IdentityProviderWire>, RemoteError> {
        let mut all = Vec::new();
        let mut url = self.url(&["OS-FEDERATION", "identity_providers"]);
        for _ in 0..MAX_LIST_PAGES {
            let resp = self
                .call("list", true, reqwest::Method::GET, url.clone(), None)
                .await?;
            if !resp.is_success() {
                return Err(Self::fail("list", &resp));
            }
            let page: ListWire = resp.json(BACKEND, "list")?;
            let received = page.identity_providers.len();
            all.extend(page.identity_providers);
            let next = page
                .links
                .and_then(|l| l.next)
                .and_then(|n| url::Url::parse(&n).ok());
            match next {
                Some(next) if received > 0 && next != url => url = next,
                _ => break,
            }
        }
        Ok(all)
    }

    /// Obtains a token now (for tests and connection checks).
    pub async fn check_credentials(&self) -> Result<(), RemoteError> {
        self.token().await.map(|_| ())
    }
}

fn keystone_config(config: &ProviderConfig) -> Result<&KeystoneConfig, RemoteError> {
    match config {
        ProviderConfig::Keystone(c) => Ok(c),
        other => Err(RemoteError::transport(
            BACKEND,
            "plan",
            RemoteErrorKind::Rejected,
            format!(
                "a {} configuration was given to the Keystone backend",
                other.backend()
            ),
        )),
    }
}

#[async_trait]
impl ProviderBackend for KeystoneClient {
    fn kind(&self) -> BackendKind {
        BackendKind::Keystone
    }

    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        Ok(self.get(&key.id).await?.map(observed_from_wire))
    }

    async fn create(
        &self,
        _key: &ProviderKey,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = keystone_config(desired)?;
        let created = KeystoneClient::create(self, config).await?;
        Ok(observed_from_wire(created))
    }

    async fn update(
        &self,
        _key: &ProviderKey,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let config = keystone_config(desired)?;
        let current = keystone_config(&observed.config)?;
        let Some(body) = config.patch_body(current) else {
            return Ok(observed.clone());
        };
        let updated = self.patch(&observed.remote_id, &body).await?;
        Ok(observed_from_wire(updated))
    }

    async fn delete(&self, remote_id: &str) -> Result<bool, RemoteError> {
        KeystoneClient::delete(self, remote_id).await
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        // A token proves the credentials and the scope; identity provider rights show on the
        // first provider read.
        self.check_credentials().await
    }

    async fn refresh(&self, _remote_id: &str) -> Result<bool, RemoteError> {
        Ok(false)
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        Ok(KeystoneClient::list(self)
            .await?
            .into_iter()
            .map(observed_from_wire)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> KeystoneProviderSpec {
        KeystoneProviderSpec {
            description: Some("Stores ACME identities".into()),
            enabled: None,
            remote_ids: vec!["https://idp.acme.example/saml".into()],
            authorization_ttl: Some(60),
            domain_id: Some("default".into()),
        }
    }

    /// Seed 004's sample response.
    const SEED_004_SAMPLE: &str = r#"{
      "identity_provider": {
        "description": "Stores ACME identities", "enabled": false, "id": "ACME", "remote_ids": [],
        "links": {
          "protocols": "https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME/protocols",
          "self": "https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME"
        }
      }
    }"#;

    #[test]
    fn seed_sample_parses_into_status_fields() {
        let one: OneWire = serde_json::from_str(SEED_004_SAMPLE).unwrap();
        let observed = observed_from_wire(one.identity_provider.unwrap());
        assert_eq!(observed.remote_id, "ACME");
        let status = observed.state.keystone.unwrap();
        assert!(!status.enabled);
        assert!(status.remote_ids.is_empty());
        assert_eq!(
            status.self_link.as_deref(),
            Some("https://sample.domain.com/v3/OS-FEDERATION/identity_providers/ACME")
        );
        assert!(status.protocols_link.unwrap().ends_with("/ACME/protocols"));
        assert_eq!(
            observed.state.current_status.unwrap().status_type,
            "DISABLED"
        );
        assert_eq!(observed.health, RemoteHealth::Healthy);
    }

    #[test]
    fn diff_names_changed_fields_and_ignores_order_and_domain() {
        let desired = KeystoneConfig::desired("acme", &spec());
        assert!(desired.enabled, "enabled defaults to true here");
        let mut observed = desired.clone();
        observed.domain_id = Some("other".into());
        assert!(
            desired.diff(&observed).is_empty(),
            "domain_id is create-only"
        );
        observed.remote_ids.insert("b".into());
        observed.enabled = false;
        assert_eq!(desired.diff(&observed), vec!["enabled", "remoteIds"]);
        let mut described = desired.clone();
        described.description.clear();
        described.authorization_ttl = None;
        assert_eq!(
            desired.diff(&described),
            vec!["description", "authorizationTtl"]
        );
        // Remote ids in another order are equal.
        let mut a = desired.clone();
        a.remote_ids = ["x", "y"].iter().map(|s| s.to_string()).collect();
        let mut b = desired.clone();
        b.remote_ids = ["y", "x"].iter().map(|s| s.to_string()).collect();
        assert!(a.diff(&b).is_empty());
    }

    #[test]
    fn patch_body_carries_only_changed_fields_and_never_domain_id() {
        let desired = KeystoneConfig::desired("acme", &spec());
        let mut observed = desired.clone();
        assert_eq!(desired.patch_body(&observed), None);
        observed.description = "old".into();
        let body = desired.patch_body(&observed).unwrap();
        assert_eq!(
            body,
            json!({"identity_provider": {"description": "Stores ACME identities"}})
        );
        let create = desired.create_body();
        assert_eq!(create["identity_provider"]["domain_id"], "default");
        assert_eq!(create["identity_provider"]["enabled"], true);
        assert_eq!(create["identity_provider"]["authorization_ttl"], 60);
        assert!(create["identity_provider"].get("id").is_none());
    }

    #[test]
    fn both_error_shapes_are_parsed() {
        let headers = reqwest::header::HeaderMap::new();
        let e = parse_error(
            "create",
            409,
            &headers,
            br#"{"error":{"code":409,"title":"Conflict","message":"Duplicate remote ID: https://idp"}}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::Conflict);
        assert!(e.kind.is_terminal());
        assert_eq!(e.message, "Duplicate remote ID: https://idp");
        assert_eq!(e.code, None);
        let e = parse_error(
            "get",
            404,
            &headers,
            br#"{"error_code":"IAM.0004","error_msg":"Could not find Identity Provider: x."}"#,
        );
        assert_eq!(
            (e.kind, e.code.as_deref(), e.message.as_str()),
            (
                RemoteErrorKind::NotFound,
                Some("IAM.0004"),
                "Could not find Identity Provider: x."
            )
        );
        let e = parse_error(
            "create",
            400,
            &headers,
            br#"{"error":{"code":400,"title":"Bad Request","message":"Invalid input for field 'identity_provider': Additional properties are not allowed"}}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::InvalidConfiguration);
        assert!(e.to_string().contains("Additional properties"));
        let e = parse_error(
            "get",
            502,
            &headers,
            b"<html><body>Bad gateway</body></html>",
        );
        assert_eq!(e.kind, RemoteErrorKind::Unavailable);
        assert!(e.message.contains("Bad gateway"));
    }

    #[test]
    fn iam_0012_and_429_are_rate_limiting() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        // OTC may send IAM.0012 with a status other than 429; the code decides.
        for status in [429, 403] {
            let e = parse_error(
                "get",
                status,
                &headers,
                br#"{"error_code":"IAM.0012","error_msg":"The throttling threshold has been reached. Threshold: 10 times per 1 seconds"}"#,
            );
            assert_eq!(e.kind, RemoteErrorKind::RateLimited, "status {status}");
            assert!(!e.kind.is_terminal());
            assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        }
        let e = parse_error(
            "get",
            429,
            &reqwest::header::HeaderMap::new(),
            br#"{"error":{"code":429,"title":"Too Many Requests","message":"slow down"}}"#,
        );
        assert_eq!(e.kind, RemoteErrorKind::RateLimited);
    }

    #[test]
    fn auth_requests_carry_method_and_scope_and_debug_hides_secrets() {
        let password = KeystoneCredentials::Password {
            user_name: "admin".into(),
            user_domain_name: "Default".into(),
            password: "s3cr3t-pw".into(),
        };
        let scope = KeystoneScope {
            domain_name: Some("OTC00000000001000000xxx".into()),
            project_id: None,
            system: None,
        };
        let body = auth_request(&password, Some(&scope));
        assert_eq!(body["auth"]["identity"]["methods"][0], "password");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        assert_eq!(
            body["auth"]["scope"]["domain"]["name"],
            "OTC00000000001000000xxx"
        );
        let system = KeystoneScope {
            system: Some(true),
            ..Default::default()
        };
        assert_eq!(
            auth_request(&password, Some(&system))["auth"]["scope"],
            json!({"system": {"all": true}})
        );
        let app = KeystoneCredentials::ApplicationCredential {
            id: "ac-1".into(),
            secret: "app-secret".into(),
        };
        let body = auth_request(&app, Some(&scope));
        assert_eq!(
            body["auth"]["identity"]["application_credential"]["id"],
            "ac-1"
        );
        assert!(body["auth"].get("scope").is_none());
        assert!(!format!("{password:?}{app:?}").contains("s3cr3t-pw"));
        assert!(!format!("{app:?}").contains("app-secret"));
    }

    #[test]
    fn tokens_are_replaced_a_minute_before_expiry() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let token = |expires: &str| CachedToken {
            value: "t".into(),
            expires_at: expires.parse().unwrap(),
        };
        assert!(token("2026-11-23T10:05:00Z").fresh(now));
        assert!(!token("2026-11-23T10:00:59Z").fresh(now));
        assert!(!token("2026-11-23T09:00:00Z").fresh(now));
    }
}
