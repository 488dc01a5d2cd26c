//! The JITSudo HTTP client and its [`ProviderBackend`](crate::backend::ProviderBackend) implementation.
use async_trait::async_trait;
use serde_json::Value;

use crate::api::provider_connection::BackendKind;
use crate::backend::http::{
    HttpClient, HttpOptions, HttpResponse, check_returned_id, parse_endpoint, require_usable_id,
    too_many_pages, url_with_segments, with_credential,
};
use crate::backend::{ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

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
                with_credential(req, "X-API-Key", &self.api_key)
                    .header("X-Tenant-ID", &self.tenant_id)
            })
            .await
    }

    fn fail(operation: &'static str, resp: &HttpResponse) -> RemoteError {
        parse_error(operation, resp.status, &resp.headers, &resp.body)
    }

    /// `GET /v1/identity-providers/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<ProviderWire>, RemoteError> {
        require_usable_id(BACKEND, "get", id)?;
        let resp = self
            .call("get", true, reqwest::Method::GET, self.url(&[id]), None)
            .await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => {
                let found: ProviderWire = resp.json(BACKEND, "get")?;
                check_returned_id(BACKEND, "get", Some(id), &found.id)?;
                Ok(Some(found))
            }
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
        if !resp.is_success() {
            return Err(Self::fail("list", &resp));
        }
        let page: PageWire = resp.json(BACKEND, "list")?;
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
        self.http
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
        // The server assigns the id; it must be usable before it is recorded.
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
            let created: ProviderWire = resp.json(BACKEND, "create")?;
            check_returned_id(BACKEND, "create", None, &created.id)?;
            Ok(created)
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
        require_usable_id(BACKEND, "update", id)?;
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
            let updated: ProviderWire = resp.json(BACKEND, "update")?;
            check_returned_id(BACKEND, "update", Some(id), &updated.id)?;
            Ok(updated)
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /v1/identity-providers/{id}` (assumed); false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
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
        require_usable_id(BACKEND, "refresh", id)?;
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
