//! The JITSudo HTTP client and its [`ProviderBackend`] implementation.
use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;

use crate::api::provider_connection::JitsudoConnection;
use crate::backend::connect::SecretValues;
use crate::backend::http::{
    HttpOptions, Reply, RequestObserver, RestClient, check_returned_id, non_empty, parse_endpoint,
    require_usable_id, too_many_pages, url_with_segments, with_credential,
};
use crate::backend::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, config_for, update_configs,
};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

/// Client of one JITSudo tenant.
pub struct JitsudoClient {
    /// Base URL `{endpoint}/v1/identity-providers`.
    rest: RestClient,
    tenant_id: String,
    api_key: String,
}

/// Never prints the API key.
impl std::fmt::Debug for JitsudoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitsudoClient")
            .field("base", &self.rest.base().as_str())
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
        let base = url_with_segments(&parse_endpoint(endpoint)?, &["v1", "identity-providers"]);
        Ok(JitsudoClient {
            api_key: non_empty(api_key, "the API key is empty")?,
            rest: RestClient::new(BACKEND, base, options, parse_error)?,
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// The client of a connection's `jitsudo` block.
    pub fn connect(
        spec: &JitsudoConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let api_key = secrets.require(&spec.api_key_secret_ref)?;
        Self::new(&spec.endpoint, &spec.tenant_id, api_key, options)
    }

    /// Calls `observer` after every request attempt.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.rest = self.rest.with_observer(observer);
        self
    }

    async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
    ) -> Result<Reply, RemoteError> {
        self.rest
            .call(operation, idempotent, &method, &url, body, |req| {
                with_credential(req, "X-API-Key", &self.api_key)
                    .header("X-Tenant-ID", &self.tenant_id)
            })
            .await
    }

    /// `GET /v1/identity-providers/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<ProviderWire>, RemoteError> {
        require_usable_id(BACKEND, "get", id)?;
        let found: Option<ProviderWire> = self
            .call("get", true, Method::GET, self.rest.url(&[id]), None)
            .await?
            .json_or_none()?;
        if let Some(found) = &found {
            check_returned_id(BACKEND, "get", Some(id), &found.id)?;
        }
        Ok(found)
    }

    /// One page of `GET /v1/identity-providers`.
    pub async fn list_page(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<PageWire, RemoteError> {
        let mut url = self.rest.url(&[]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.min(LIST_PAGE_LIMIT).to_string());
        if let Some(cursor) = cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let page: PageWire = self
            .call("list", true, Method::GET, url, None)
            .await?
            .json()?;
        for provider in &page.data {
            check_returned_id(BACKEND, "list", None, &provider.id)?;
        }
        Ok(page)
    }

    /// Walks the pages (`limit` per page) until `stop` returns true for a provider or the
    /// list ends; returns every provider seen. A cursor seen before (a cycle) or more than
    /// [`MAX_LIST_PAGES`] pages is an error; the walk runs within the bulk-read deadline.
    async fn walk(
        &self,
        limit: u32,
        stop: impl FnMut(&ProviderWire) -> bool,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        self.rest
            .bulk_read("list", self.walk_pages(limit, stop))
            .await
    }

    async fn walk_pages(
        &self,
        limit: u32,
        mut stop: impl FnMut(&ProviderWire) -> bool,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = self.list_page(limit, cursor.as_deref()).await?;
            let found = page.data.iter().any(&mut stop);
            all.extend(page.data);
            let next = page.next_cursor.filter(|c| !c.is_empty() && page.has_more);
            let Some(next) = next.filter(|_| !found) else {
                return Ok(all);
            };
            if !seen.insert(next.clone()) {
                return Err(RemoteError::transport(
                    BACKEND,
                    "list",
                    RemoteErrorKind::BadResponse,
                    "next_cursor repeats a cursor already followed",
                ));
            }
            cursor = Some(next);
        }
        Err(too_many_pages(BACKEND, MAX_LIST_PAGES))
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
        let created: ProviderWire = self
            .call(
                "create",
                false,
                Method::POST,
                self.rest.url(&[]),
                Some(&body),
            )
            .await?
            .json()?;
        // The server assigns the id; it must be usable before it is recorded.
        check_returned_id(BACKEND, "create", None, &created.id)?;
        Ok(created)
    }

    /// `PUT /v1/identity-providers/{id}` (a full replacement, so safe to retry).
    pub async fn update(
        &self,
        id: &str,
        config: &JitsudoConfig,
    ) -> Result<ProviderWire, RemoteError> {
        require_usable_id(BACKEND, "update", id)?;
        let body = config.update_body();
        let updated: ProviderWire = self
            .call(
                "update",
                true,
                Method::PUT,
                self.rest.url(&[id]),
                Some(&body),
            )
            .await?
            .json()?;
        check_returned_id(BACKEND, "update", Some(id), &updated.id)?;
        Ok(updated)
    }

    /// `DELETE /v1/identity-providers/{id}` (assumed); false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
        self.call("delete", true, Method::DELETE, self.rest.url(&[id]), None)
            .await?
            .existed()
    }

    /// `POST /v1/identity-providers/{id}/sync` (assumed); false when the server has no such
    /// operation.
    pub async fn sync(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "refresh", id)?;
        let reply = self
            .call(
                "refresh",
                false,
                Method::POST,
                self.rest.url(&[id, "sync"]),
                None,
            )
            .await?;
        match reply.status() {
            404 | 405 | 501 => Ok(false),
            _ => reply.ok().map(|()| true),
        }
    }
}

#[async_trait]
impl ProviderBackend for JitsudoClient {
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

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let desired = config_for::<Jitsudo>(desired, "create")?;
        Ok(observed_from_wire(
            JitsudoClient::create(self, desired).await?,
        ))
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let (current, desired) = update_configs::<Jitsudo>(observed, desired)?;
        if desired.provider_type != current.provider_type {
            return Err(RemoteError::transport(
                BACKEND,
                "update",
                RemoteErrorKind::Rejected,
                format!(
                    "JITSudo cannot change the provider type of an existing provider (remote {:?}, spec {:?}); delete and recreate it, or restore spec.jitsudo.providerType",
                    current.provider_type, desired.provider_type
                ),
            ));
        }
        let updated = JitsudoClient::update(self, &observed.remote_id, desired).await?;
        Ok(observed_from_wire(updated))
    }

    async fn delete(
        &self,
        remote_id: &str,
        _desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
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
