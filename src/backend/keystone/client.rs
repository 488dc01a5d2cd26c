//! The Keystone HTTP client and its [`ProviderBackend`](crate::backend::ProviderBackend) implementation.

use async_trait::async_trait;
use serde_json::Value;

use crate::api::provider_connection::{BackendKind, KeystoneScope};
use crate::backend::http::{
    HttpClient, HttpOptions, HttpResponse, check_returned_id, parse_endpoint, require_usable_id,
    same_origin, too_many_pages, url_with_segments, with_credential,
};
use crate::backend::{ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

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
                with_credential(req, "X-Auth-Token", token)
            })
            .await
    }

    /// The identity provider of a response, which must be the one `id` names.
    fn decode_one(
        operation: &'static str,
        id: &str,
        resp: &HttpResponse,
    ) -> Result<IdentityProviderWire, RemoteError> {
        let found = resp
            .json::<OneWire>(BACKEND, operation)?
            .identity_provider
            .ok_or_else(|| {
                RemoteError::transport(
                    BACKEND,
                    operation,
                    RemoteErrorKind::BadResponse,
                    "the response has no identity_provider object",
                )
            })?;
        check_returned_id(BACKEND, operation, Some(id), &found.id)?;
        Ok(found)
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
            _ if resp.is_success() => Self::decode_one("get", id, &resp).map(Some),
            _ => Err(Self::fail("get", &resp)),
        }
    }

    /// `PUT /v3/OS-FEDERATION/identity_providers/{id}` (201). Not retried: a lost response may
    /// mean it was created, and a repeat would be a 409.
    pub async fn create(
        &self,
        config: &KeystoneConfig,
    ) -> Result<IdentityProviderWire, RemoteError> {
        require_usable_id(BACKEND, "create", &config.id)?;
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
            Self::decode_one("create", &config.id, &resp)
        } else {
            Err(Self::fail("create", &resp))
        }
    }

    /// `PATCH /v3/OS-FEDERATION/identity_providers/{id}` with `body` (sets values, so safe to
    /// retry).
    pub async fn patch(&self, id: &str, body: &Value) -> Result<IdentityProviderWire, RemoteError> {
        require_usable_id(BACKEND, "update", id)?;
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
            Self::decode_one("update", id, &resp)
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /v3/OS-FEDERATION/identity_providers/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
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
    /// paginates: only on the endpoint's origin (the request carries the token), at most
    /// [`MAX_LIST_PAGES`] pages, within the connection's bulk-read deadline.
    pub async fn list(&self) -> Result<Vec<IdentityProviderWire>, RemoteError> {
        self.http.bulk_read("list", self.list_pages()).await
    }

    async fn list_pages(&self) -> Result<Vec<IdentityProviderWire>, RemoteError> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut url = self.url(&["OS-FEDERATION", "identity_providers"]);
        for _ in 0..MAX_LIST_PAGES {
            seen.insert(url.clone());
            let resp = self
                .call("list", true, reqwest::Method::GET, url.clone(), None)
                .await?;
            if !resp.is_success() {
                return Err(Self::fail("list", &resp));
            }
            let page: ListWire = resp.json(BACKEND, "list")?;
            for idp in &page.identity_providers {
                check_returned_id(BACKEND, "list", None, &idp.id)?;
            }
            let received = page.identity_providers.len();
            all.extend(page.identity_providers);
            let next = page.links.and_then(|l| l.next).filter(|n| !n.is_empty());
            let Some(next) = next.filter(|_| received > 0) else {
                return Ok(all);
            };
            url = self.next_page_url(&next)?;
            if seen.contains(&url) {
                return Err(RemoteError::transport(
                    BACKEND,
                    "list",
                    RemoteErrorKind::BadResponse,
                    "links.next points back to a page already read",
                ));
            }
        }
        Err(too_many_pages(BACKEND, MAX_LIST_PAGES))
    }

    /// A `links.next` value, accepted only on the endpoint's origin.
    fn next_page_url(&self, next: &str) -> Result<url::Url, RemoteError> {
        let bad = |what: &str| {
            RemoteError::transport(BACKEND, "list", RemoteErrorKind::BadResponse, what)
        };
        let url = self
            .base
            .join(next)
            .map_err(|_| bad("links.next is not a URL"))?;
        if !same_origin(&self.base, &url) {
            return Err(bad(
                "links.next points to another origin than the endpoint; it is not followed (the request would carry the token)",
            ));
        }
        Ok(url)
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
