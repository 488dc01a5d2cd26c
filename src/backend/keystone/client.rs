//! The Keystone HTTP client and its [`ProviderBackend`] implementation.
use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use crate::api::provider_connection::{KeystoneConnection, KeystoneScope};
use crate::backend::connect::SecretValues;
use crate::backend::http::{
    HttpOptions, Reply, RequestObserver, RestClient, check_returned_id, parse_endpoint,
    require_usable_id, same_origin, too_many_pages, with_credential,
};
use crate::backend::{
    Member, ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, config_for,
    update_configs,
};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

/// Client of one Keystone (or OTC IAM) endpoint.
pub struct KeystoneClient {
    /// Base URL ending in `/v3`.
    pub(super) rest: RestClient,
    credentials: KeystoneCredentials,
    scope: Option<KeystoneScope>,
    token: tokio::sync::Mutex<TokenState>,
}

/// The token, or the refusal of the credentials. A refused login is remembered until the next
/// connection check ([`KeystoneClient::check_credentials`]) or a new client (the connection or
/// its Secret changed): fifty providers on a wrong password make one login attempt, not fifty,
/// so the account is not locked out by its own operator.
#[derive(Default)]
struct TokenState {
    token: Option<CachedToken>,
    refused: Option<Box<RemoteError>>,
}

/// Never prints the password, the secret or the token.
impl std::fmt::Debug for KeystoneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneClient")
            .field("base", &self.rest.base().as_str())
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
            rest: RestClient::new(BACKEND, base, options, parse_error)?,
            credentials,
            scope,
            token: tokio::sync::Mutex::new(TokenState::default()),
        })
    }

    /// The client of a connection's `keystone` block.
    pub fn connect(
        spec: &KeystoneConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let credentials = match (&spec.password, &spec.application_credential) {
            (Some(p), None) => KeystoneCredentials::Password {
                user_name: p.user_name.clone(),
                user_domain_name: p
                    .user_domain_name
                    .clone()
                    .unwrap_or_else(|| "Default".into()),
                password: secrets.require(&p.password_secret_ref)?,
            },
            (None, Some(a)) => KeystoneCredentials::ApplicationCredential {
                id: a.id.clone(),
                secret: secrets.require(&a.secret_secret_ref)?,
            },
            _ => {
                return Err(
                    "keystone needs exactly one of password or applicationCredential".into(),
                );
            }
        };
        Self::new(&spec.auth_url, credentials, spec.scope.clone(), options)
    }

    /// Calls `observer` after every request attempt.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.rest = self.rest.with_observer(observer);
        self
    }

    fn idp_url(&self, id: &str) -> url::Url {
        self.rest.url(&["OS-FEDERATION", "identity_providers", id])
    }

    /// A usable token: the cached one, or a new one. Authentication runs under the lock, so
    /// concurrent reconciles wait for one token instead of each requesting their own; a
    /// refused login is answered from memory (see [`TokenState`]).
    async fn token(&self) -> Result<String, RemoteError> {
        let mut state = self.token.lock().await;
        if let Some(refused) = &state.refused {
            return Err(refused.as_ref().clone());
        }
        if let Some(token) = state.token.as_ref()
            && token.fresh(jiff::Timestamp::now())
        {
            return Ok(token.value.clone());
        }
        match self.authenticate().await {
            Ok(token) => {
                let value = token.value.clone();
                state.token = Some(token);
                Ok(value)
            }
            Err(e) => {
                // Wrong password, disabled user, bad scope: trying again cannot help until
                // something changes, and every attempt counts towards a lockout.
                if e.kind.is_terminal() {
                    state.refused = Some(Box::new(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Forgets `rejected` unless another call already replaced it.
    async fn drop_token(&self, rejected: &str) {
        let mut state = self.token.lock().await;
        if state.token.as_ref().is_some_and(|t| t.value == rejected) {
            state.token = None;
        }
    }

    async fn authenticate(&self) -> Result<CachedToken, RemoteError> {
        let body = auth_request(&self.credentials, self.scope.as_ref());
        let url = self.rest.url(&["auth", "tokens"]);
        let reply = self
            .rest
            .send("authenticate", true, |client| {
                client
                    .post(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&body)
            })
            .await?;
        reply.ok()?;
        let value = reply
            .response
            .header("x-subject-token")
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                reply.bad_response("the token response has no X-Subject-Token header")
            })?;
        let parsed: TokenResponseWire =
            serde_json::from_slice(&reply.response.body).unwrap_or_default();
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
    pub(super) async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
    ) -> Result<Reply, RemoteError> {
        let token = self.token().await?;
        let reply = self
            .send_with_token(&token, operation, idempotent, &method, &url, body)
            .await?;
        if reply.status() != 401 {
            return Ok(reply);
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
        method: &Method,
        url: &url::Url,
        body: Option<&Value>,
    ) -> Result<Reply, RemoteError> {
        self.rest
            .call(operation, idempotent, method, url, body, |req| {
                with_credential(req, "X-Auth-Token", token)
            })
            .await
    }

    /// The `identity_provider` object of a 2xx reply, which must be the one `id` names.
    fn one(reply: &Reply, id: &str) -> Result<IdentityProviderWire, RemoteError> {
        let found = reply
            .json::<OneWire>()?
            .identity_provider
            .ok_or_else(|| reply.bad_response("the response has no identity_provider object"))?;
        check_returned_id(BACKEND, reply.operation(), Some(id), &found.id)?;
        Ok(found)
    }

    /// `GET /v3/OS-FEDERATION/identity_providers/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<IdentityProviderWire>, RemoteError> {
        let reply = self
            .call("get", true, Method::GET, self.idp_url(id), None)
            .await?;
        match reply.status() {
            404 => Ok(None),
            _ => Self::one(&reply, id).map(Some),
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
        let url = self.idp_url(&config.id);
        Self::one(
            &self
                .call("create", false, Method::PUT, url, Some(&body))
                .await?,
            &config.id,
        )
    }

    /// `PATCH /v3/OS-FEDERATION/identity_providers/{id}` with `body` (sets values, so safe to
    /// retry).
    pub async fn patch(&self, id: &str, body: &Value) -> Result<IdentityProviderWire, RemoteError> {
        require_usable_id(BACKEND, "update", id)?;
        let url = self.idp_url(id);
        Self::one(
            &self
                .call("update", true, Method::PATCH, url, Some(body))
                .await?,
            id,
        )
    }

    /// `DELETE /v3/OS-FEDERATION/identity_providers/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
        self.call("delete", true, Method::DELETE, self.idp_url(id), None)
            .await?
            .existed()
    }

    /// `GET /v3/OS-FEDERATION/identity_providers`, following `links.next` when a deployment
    /// paginates: only on the endpoint's origin (the request carries the token), at most
    /// [`MAX_LIST_PAGES`] pages, within the connection's bulk-read deadline.
    pub async fn list(&self) -> Result<Vec<IdentityProviderWire>, RemoteError> {
        self.rest.bulk_read("list", self.list_pages()).await
    }

    async fn list_pages(&self) -> Result<Vec<IdentityProviderWire>, RemoteError> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut url = self.rest.url(&["OS-FEDERATION", "identity_providers"]);
        for _ in 0..MAX_LIST_PAGES {
            seen.insert(url.clone());
            let page: ListWire = self
                .call("list", true, Method::GET, url.clone(), None)
                .await?
                .json()?;
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
                return Err(list_error("links.next points back to a page already read"));
            }
        }
        Err(too_many_pages(BACKEND, MAX_LIST_PAGES))
    }

    /// A `links.next` value, accepted only on the endpoint's origin.
    fn next_page_url(&self, next: &str) -> Result<url::Url, RemoteError> {
        let url = self
            .rest
            .base()
            .join(next)
            .map_err(|_| list_error("links.next is not a URL"))?;
        if !same_origin(self.rest.base(), &url) {
            return Err(list_error(
                "links.next points to another origin than the endpoint; it is not followed (the request would carry the token)",
            ));
        }
        Ok(url)
    }

    /// Obtains a token now (for tests and connection checks). The connection check is the one
    /// caller that tries a remembered refusal again (once per check interval): a password can
    /// be fixed remotely without any change in Kubernetes.
    pub async fn check_credentials(&self) -> Result<(), RemoteError> {
        self.token.lock().await.refused = None;
        self.token().await.map(|_| ())
    }
}

impl KeystoneClient {
    /// The provider read again (after the controller's read, for an update that writes only
    /// protocols or mappings); a provider deleted meanwhile is a 404 for the update.
    async fn observed_or_gone(&self, remote_id: &str) -> Result<ObservedProvider, RemoteError> {
        match self.get(remote_id).await? {
            Some(found) => Ok(observed_from_wire(found)),
            None => Err(RemoteError::transport(
                BACKEND,
                "update",
                RemoteErrorKind::NotFound,
                format!("identity provider {remote_id:?} is gone"),
            )),
        }
    }
}

fn list_error(message: &str) -> RemoteError {
    RemoteError::transport(BACKEND, "list", RemoteErrorKind::BadResponse, message)
}

impl KeystoneClient {
    /// The identity provider's own fields first (one PATCH of those that differ), then its
    /// protocols and mappings, each written only when it differs.
    async fn update_config(
        &self,
        remote_id: &str,
        current: &KeystoneConfig,
        desired: &KeystoneConfig,
    ) -> Result<Option<ObservedProvider>, RemoteError> {
        let patched = match desired.patch_body(current) {
            Some(body) => Some(observed_from_wire(self.patch(remote_id, &body).await?)),
            None => None,
        };
        let federation = federation::diff(
            &desired.protocols,
            &desired.record,
            &current.protocols,
            &current.stale_mappings,
        );
        if federation.is_empty() {
            return match patched {
                // The PATCH answer has no protocols: keep those read before.
                Some(mut updated) => {
                    self.read_federation(Some(desired), &desired.record, &mut updated)
                        .await?;
                    Ok(Some(updated))
                }
                None => Ok(None),
            };
        }
        let mut base = match patched {
            Some(updated) => updated,
            None => self.observed_or_gone(remote_id).await?,
        };
        if let ProviderConfig::Keystone(config) = &mut base.config {
            config.protocols = current.protocols.clone();
            config.stale_mappings = current.stale_mappings.clone();
        }
        self.update_federation(&base, desired).await.map(Some)
    }
}

#[async_trait]
impl ProviderBackend for KeystoneClient {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        Ok(self.get(&key.id).await?.map(observed_from_wire))
    }

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let desired = config_for::<Keystone>(desired, "create")?;
        let created = observed_from_wire(KeystoneClient::create(self, desired).await?);
        Ok(self.complete_create(created, desired).await)
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let (current, desired) = update_configs::<Keystone>(observed, desired)?;
        let updated = self
            .update_config(&observed.remote_id, current, desired)
            .await?;
        Ok(updated.unwrap_or_else(|| observed.clone()))
    }

    async fn observe_details(
        &self,
        desired: Option<&ProviderConfig>,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        let desired = desired
            .map(|d| config_for::<Keystone>(d, "observe"))
            .transpose()?;
        let record = desired.map(|d| d.record.clone()).unwrap_or_default();
        self.read_federation(desired, &record, observed).await
    }

    /// Protocols, then the mappings this object created (as `desired` records them), then the
    /// identity provider.
    async fn delete(
        &self,
        remote_id: &str,
        desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        if let Some(desired) = desired.and_then(Keystone::config_of) {
            self.delete_federation(remote_id, desired).await?;
        }
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
