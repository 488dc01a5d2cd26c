//! The Coveo HTTP client and its [`ProviderBackend`](crate::backend::ProviderBackend) implementation.

use async_trait::async_trait;

use crate::api::provider_connection::BackendKind;
use crate::backend::http::{
    HttpClient, HttpOptions, HttpResponse, check_returned_id, parse_endpoint, require_usable_id,
    too_many_pages, url_with_segments,
};
use crate::backend::{ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey};
use crate::error::{RemoteError, RemoteErrorKind};

use super::*;

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
            _ if resp.is_success() => {
                let found: ProviderWire = resp.json(BACKEND, "get")?;
                check_returned_id(BACKEND, "get", Some(id), &found.id)?;
                Ok(Some(found))
            }
            _ => Err(Self::fail("get", &resp)),
        }
    }

    /// `POST /securityproviders`. Not retried: a lost response may mean it was created.
    pub async fn create(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        require_usable_id(BACKEND, "create", &request.id)?;
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
            let created: ProviderWire = resp.json(BACKEND, "create")?;
            check_returned_id(BACKEND, "create", Some(&request.id), &created.id)?;
            Ok(created)
        } else {
            Err(Self::fail("create", &resp))
        }
    }

    /// `PUT /securityproviders/{id}` (a full replacement, so safe to retry).
    pub async fn update(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        require_usable_id(BACKEND, "update", &request.id)?;
        let body = serde_json::to_value(request).unwrap_or_default();
        let url = self.url(&["securityproviders", &request.id]);
        let resp = self
            .call("update", true, reqwest::Method::PUT, url, Some(&body))
            .await?;
        if resp.is_success() {
            let updated: ProviderWire = resp.json(BACKEND, "update")?;
            check_returned_id(BACKEND, "update", Some(&request.id), &updated.id)?;
            Ok(updated)
        } else {
            Err(Self::fail("update", &resp))
        }
    }

    /// `DELETE /securityproviders/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
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
        require_usable_id(BACKEND, "refresh", id)?;
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
        let page: PageWire = resp.json(BACKEND, "list")?;
        for item in &page.items {
            check_returned_id(BACKEND, "list", None, &item.id)?;
        }
        Ok(page)
    }

    /// All providers like [`Self::list`], but once the first page tells how many there are,
    /// the others are fetched `concurrency` at a time: a resync snapshot of 10,000 providers
    /// takes about 101 / concurrency round trips instead of 101, and the reconciles waiting
    /// for it wait that much less. Same requests, same pages.
    pub async fn list_concurrently(
        &self,
        concurrency: usize,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        self.http
            .bulk_read("list", self.list_pages_concurrently(concurrency))
            .await
    }

    async fn list_pages_concurrently(
        &self,
        concurrency: usize,
    ) -> Result<Vec<ProviderWire>, RemoteError> {
        use futures::{StreamExt, TryStreamExt};
        let first = self.page(0).await?;
        let Some(total) = first.total_pages else {
            return self.list_pages().await;
        };
        // A remote's totalPages is not taken at its word beyond the bound.
        if total > MAX_LIST_PAGES as u64 {
            return Err(too_many_pages(BACKEND, MAX_LIST_PAGES));
        }
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

    /// All providers, via `GET /securityproviders/page`, following pages until exhausted
    /// (at most [`MAX_LIST_PAGES`], within the connection's bulk-read deadline).
    pub async fn list(&self) -> Result<Vec<ProviderWire>, RemoteError> {
        self.http.bulk_read("list", self.list_pages()).await
    }

    async fn list_pages(&self) -> Result<Vec<ProviderWire>, RemoteError> {
        let mut all = Vec::new();
        for page in 0..MAX_LIST_PAGES as u64 {
            let page_wire = self.page(page).await?;
            let received = page_wire.items.len();
            all.extend(page_wire.items);
            let last_page = match page_wire.total_pages {
                Some(total) => page + 1 >= total,
                None => received < LIST_PAGE_SIZE,
            };
            if last_page || received == 0 {
                return Ok(all);
            }
        }
        Err(too_many_pages(BACKEND, MAX_LIST_PAGES))
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
