//! The Coveo HTTP client and its [`ProviderBackend`] implementation.
use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Method;

use crate::api::provider_connection::CoveoConnection;
use crate::backend::connect::SecretValues;
use crate::backend::http::{
    HttpOptions, Reply, RequestObserver, RestClient, check_returned_id, non_empty, parse_endpoint,
    require_usable_id, too_many_pages, url_with_segments,
};
use crate::backend::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, config_for, update_configs,
};
use crate::error::RemoteError;

use super::*;

/// Client of one Coveo organization.
pub struct CoveoClient {
    /// Base URL `{endpoint}/rest/organizations/{org}`.
    rest: RestClient,
    api_key: String,
}

/// Never prints the API key.
impl std::fmt::Debug for CoveoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoveoClient")
            .field("base", &self.rest.base().as_str())
            .finish_non_exhaustive()
    }
}

/// How long the read-back of a provider just created may take (one send, no retry); past it,
/// the provider is reported as being created and read again after a progress interval.
const READ_BACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl CoveoClient {
    /// A client for `endpoint` (https, or http on loopback) and one organization.
    pub fn new(
        endpoint: &str,
        organization_id: &str,
        api_key: String,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let base = url_with_segments(
            &parse_endpoint(endpoint)?,
            &["rest", "organizations", organization_id],
        );
        Ok(CoveoClient {
            api_key: non_empty(api_key, "the API key is empty")?,
            rest: RestClient::new(BACKEND, base, options, parse_error)?,
        })
    }

    /// The client of a connection's `coveo` block.
    pub fn connect(
        spec: &CoveoConnection,
        secrets: &SecretValues,
        options: &HttpOptions,
    ) -> Result<Self, String> {
        let api_key = secrets.require(&spec.api_key_secret_ref)?;
        Self::new(spec.endpoint(), &spec.organization_id, api_key, options)
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
        method: reqwest::Method,
        tail: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, RemoteError> {
        let mut url = self.rest.url(tail);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.rest
            .call(operation, idempotent, &method, &url, body, |req| {
                req.bearer_auth(&self.api_key)
            })
            .await
    }

    /// `GET /securityproviders/{id}`; None on 404.
    pub async fn get(&self, id: &str) -> Result<Option<ProviderWire>, RemoteError> {
        self.get_with(id, true).await
    }

    /// [`Self::get`], retried (`retried`) or sent once.
    async fn get_with(&self, id: &str, retried: bool) -> Result<Option<ProviderWire>, RemoteError> {
        let found: Option<ProviderWire> = self
            .call(
                "get",
                retried,
                Method::GET,
                &["securityproviders", id],
                &[],
                None,
            )
            .await?
            .json_or_none()?;
        if let Some(found) = &found {
            check_returned_id(BACKEND, "get", Some(id), &found.id)?;
        }
        Ok(found)
    }

    /// `POST /securityproviders`. Not retried: a lost response may mean it was created.
    pub async fn create(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        require_usable_id(BACKEND, "create", &request.id)?;
        let body = serde_json::to_value(request).unwrap_or_default();
        let created: ProviderWire = self
            .call(
                "create",
                false,
                Method::POST,
                &["securityproviders"],
                &[],
                Some(&body),
            )
            .await?
            .json()?;
        check_returned_id(BACKEND, "create", Some(&request.id), &created.id)?;
        Ok(created)
    }

    /// `PUT /securityproviders/{id}` (a full replacement, so safe to retry).
    pub async fn update(&self, request: &ProviderRequest) -> Result<ProviderWire, RemoteError> {
        require_usable_id(BACKEND, "update", &request.id)?;
        let body = serde_json::to_value(request).unwrap_or_default();
        let tail = ["securityproviders", request.id.as_str()];
        let updated: ProviderWire = self
            .call("update", true, Method::PUT, &tail, &[], Some(&body))
            .await?
            .json()?;
        check_returned_id(BACKEND, "update", Some(&request.id), &updated.id)?;
        Ok(updated)
    }

    /// `GET /securityproviders/{id}/schedules`, keyed by refresh type.
    pub async fn schedules(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, schedules::RemoteSchedule>, RemoteError> {
        require_usable_id(BACKEND, "schedules", id)?;
        let tail = ["securityproviders", id, "schedules"];
        let body: serde_json::Value = self
            .call("schedules", true, Method::GET, &tail, &[], None)
            .await?
            .json()?;
        Ok(schedules::parse_remote(&body))
    }

    /// `PUT /securityproviders/{id}/schedules/{scheduleId}` (a full replacement, safe to
    /// retry); returns the schedule as Coveo stored it.
    pub async fn update_schedule(
        &self,
        id: &str,
        schedule: &schedules::RemoteSchedule,
        want: &schedules::ScheduleConfig,
    ) -> Result<schedules::RemoteSchedule, RemoteError> {
        require_usable_id(BACKEND, "update_schedule", id)?;
        require_usable_id(BACKEND, "update_schedule", &schedule.id)?;
        let body = schedules::put_body(schedule, want);
        let tail = ["securityproviders", id, "schedules", schedule.id.as_str()];
        let stored: serde_json::Value = self
            .call(
                "update_schedule",
                true,
                Method::PUT,
                &tail,
                &[],
                Some(&body),
            )
            .await?
            .json()?;
        let parsed = schedules::parse_remote(&serde_json::Value::Array(vec![stored]));
        // An answer we cannot read still means the PUT succeeded: assume what was sent.
        Ok(parsed
            .into_values()
            .next()
            .unwrap_or(schedules::RemoteSchedule {
                config: want.clone(),
                raw: body,
                ..schedule.clone()
            }))
    }

    /// Corrects every listed schedule of `observed` (read with its schedules) that differs
    /// from `desired`, one PUT each, and records what Coveo stored in `observed`.
    async fn fix_schedules(
        &self,
        desired: &CoveoConfig,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        let Some(config) = coveo_config_mut(observed) else {
            return Ok(());
        };
        let Some(mut remote) = config.remote_schedules.clone() else {
            return Ok(());
        };
        let fix: Vec<String> = desired
            .schedules_to_fix(config)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for refresh_type in fix {
            let (Some(have), Some(want)) = (
                remote.get(&refresh_type),
                desired.refresh_schedules.get(&refresh_type),
            ) else {
                continue;
            };
            let stored = self.update_schedule(&desired.id, have, want).await?;
            remote.insert(refresh_type, stored);
        }
        schedules::record(observed, remote);
        Ok(())
    }

    /// Reads the provider's schedules into `observed` (configuration and status).
    async fn read_schedules(&self, observed: &mut ObservedProvider) -> Result<(), RemoteError> {
        let remote = self.schedules(&observed.remote_id).await?;
        schedules::record(observed, remote);
        Ok(())
    }

    /// `DELETE /securityproviders/{id}`; false when it was already gone.
    pub async fn delete(&self, id: &str) -> Result<bool, RemoteError> {
        require_usable_id(BACKEND, "delete", id)?;
        self.call(
            "delete",
            true,
            Method::DELETE,
            &["securityproviders", id],
            &[],
            None,
        )
        .await?
        .existed()
    }

    /// `POST /securitycache/{id}/refresh`.
    pub async fn refresh(&self, id: &str) -> Result<(), RemoteError> {
        require_usable_id(BACKEND, "refresh", id)?;
        let tail = ["securitycache", id, "refresh"];
        self.call("refresh", false, Method::POST, &tail, &[], None)
            .await?
            .ok()
    }

    /// `GET /securityproviders/page?page=0&perPage=1`: the smallest authenticated read, to
    /// check that the organization exists and the API key may view its providers.
    pub async fn verify_credentials(&self) -> Result<(), RemoteError> {
        let query = [("page", "0".to_owned()), ("perPage", "1".to_owned())];
        self.call(
            "verify",
            true,
            Method::GET,
            &["securityproviders", "page"],
            &query,
            None,
        )
        .await?
        .ok()
    }

    /// One page of `GET /securityproviders/page`.
    async fn page(&self, page: u64) -> Result<PageWire, RemoteError> {
        let query = [
            ("page", page.to_string()),
            ("perPage", LIST_PAGE_SIZE.to_string()),
        ];
        let page: PageWire = self
            .call(
                "list",
                true,
                Method::GET,
                &["securityproviders", "page"],
                &query,
                None,
            )
            .await?
            .json()?;
        for item in &page.items {
            check_returned_id(BACKEND, "list", None, &item.id)?;
        }
        Ok(page)
    }

    /// All providers like [`Self::list`], but once the first page tells how many there are,
    /// the others are fetched `concurrency` at a time: a snapshot takes about pages /
    /// concurrency round trips instead of one per page. Same requests, same pages.
    /// Each provider is handed to `each` as its page arrives (in page order), so that no list
    /// of the whole organization is held.
    pub async fn list_each_concurrently(
        &self,
        concurrency: usize,
        each: &mut (dyn FnMut(ProviderWire) + Send),
    ) -> Result<(), RemoteError> {
        self.rest
            .bulk_read("list", self.each_page_concurrently(concurrency, each))
            .await
    }

    async fn each_page_concurrently(
        &self,
        concurrency: usize,
        each: &mut (dyn FnMut(ProviderWire) + Send),
    ) -> Result<(), RemoteError> {
        use futures::{StreamExt, TryStreamExt};
        let first = self.page(0).await?;
        let Some(total) = first.total_pages else {
            self.list_pages().await?.into_iter().for_each(each);
            return Ok(());
        };
        // A remote's totalPages is not taken at its word beyond the bound.
        if total > MAX_LIST_PAGES as u64 {
            return Err(too_many_pages(BACKEND, MAX_LIST_PAGES));
        }
        first.items.into_iter().for_each(&mut *each);
        let mut rest = futures::stream::iter(1..total)
            .map(|page| self.page(page))
            .buffered(concurrency.max(1));
        while let Some(page) = rest.try_next().await? {
            page.items.into_iter().for_each(&mut *each);
        }
        Ok(())
    }

    /// All providers, via `GET /securityproviders/page`, following pages until exhausted
    /// (at most [`MAX_LIST_PAGES`], within the connection's bulk-read deadline).
    pub async fn list(&self) -> Result<Vec<ProviderWire>, RemoteError> {
        self.rest.bulk_read("list", self.list_pages()).await
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

/// A provider that declares secret values is never written before they are resolved: a write
/// without them would blank them remotely.
fn check_secrets_resolved(
    desired: &CoveoConfig,
    operation: &'static str,
) -> Result<(), RemoteError> {
    if desired.needs_secrets() && desired.secrets.is_none() {
        return Err(RemoteError::transport(
            BACKEND,
            operation,
            crate::error::RemoteErrorKind::Rejected,
            "the provider's secret values were not resolved from their Secrets".to_owned(),
        ));
    }
    Ok(())
}

fn coveo_config_mut(observed: &mut ObservedProvider) -> Option<&mut CoveoConfig> {
    match &mut observed.config {
        crate::backend::ProviderConfig::Coveo(c) => Some(c),
        _ => None,
    }
}

/// The built-in Email Security Provider is not the operator's to manage or export.
fn managed(providers: Vec<ProviderWire>) -> Vec<ObservedProvider> {
    providers
        .into_iter()
        .filter(is_managed)
        .map(observed_from_wire)
        .collect()
}

/// Whether the operator may manage the provider (Coveo's built-in email provider is not).
fn is_managed(provider: &ProviderWire) -> bool {
    provider.id != EMAIL_SECURITY_PROVIDER
}

impl CoveoClient {
    /// Brings provider `remote_id`, now configured as `current`, to `desired`: the provider
    /// itself when its fields differ, then the listed schedules. `None` when nothing had to be
    /// sent.
    async fn update_config(
        &self,
        remote_id: &str,
        current: &CoveoConfig,
        desired: &CoveoConfig,
    ) -> Result<Option<ObservedProvider>, RemoteError> {
        let fix_schedules = !desired.schedules_to_fix(current).is_empty();
        // The create-attempt evidence is not configuration: alone it is no reason for a PUT.
        let token = CREATION_TOKEN_PARAMETER;
        let mut compared = current.clone();
        compared.parameters.remove(token);
        let mut wanted = desired.clone();
        wanted.parameters.remove(token);
        let mut observed = if !wanted.provider_diff(&compared).is_empty() {
            check_secrets_resolved(desired, "update")?;
            observed_from_wire(CoveoClient::update(self, &desired.to_request()).await?)
        } else if fix_schedules {
            // Only schedules differ: the provider as it is, for its status.
            match self.get(remote_id).await? {
                Some(wire) => observed_from_wire(wire),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        if let Some(remote) = current.remote_schedules.clone() {
            schedules::record(&mut observed, remote);
            self.fix_schedules(desired, &mut observed).await?;
        }
        Ok(Some(observed))
    }
}

#[async_trait]
impl ProviderBackend for CoveoClient {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        Ok(self.get(&key.id).await?.map(observed_from_wire))
    }

    async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let desired = config_for::<Coveo>(desired, "create")?;
        check_secrets_resolved(desired, "create")?;
        // POST answers the model without status fields, so the provider is read back at once
        // (one round trip in the create's slot): one that settled meanwhile is reported with
        // its state and statistics in this reconcile's status write, instead of a second one a
        // progress interval later (BENCHMARKS.md, "Issue 26"). One still CREATING, or a read
        // that failed (the create itself succeeded), is reported as being created
        // (Ready=False, Reconciling=True) and read again after one progress interval.
        let created = CoveoClient::create(self, &desired.to_request()).await?;
        // Sent once, within a short time: a read that hangs or is refused must not hold the
        // slot (or run into the reconcile's deadline) after a create that succeeded.
        let read_back = tokio::time::timeout(READ_BACK_TIMEOUT, self.get_with(&created.id, false));
        let mut observed = match read_back.await {
            Ok(Ok(Some(read))) if read.current_status.is_some() => observed_from_wire(read),
            _ => observed_from_wire(created),
        };
        if observed.state.current_status.is_none() {
            observed.health = crate::backend::RemoteHealth::Progressing {
                reason: REASON_REMOTE_CREATING,
                message: "Coveo accepted the provider; its state is read again shortly".into(),
            };
        }
        // A new provider has Coveo's default schedules: correct the listed ones now.
        if !desired.refresh_schedules.is_empty() {
            self.read_schedules(&mut observed).await?;
            self.fix_schedules(desired, &mut observed).await?;
        }
        Ok(observed)
    }

    async fn update(
        &self,
        observed: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let (current, desired) = update_configs::<Coveo>(observed, desired)?;
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
            .map(|d| config_for::<Coveo>(d, "observe"))
            .transpose()?;
        // Schedules are read only when the spec lists some (or for export: no desired).
        if desired.is_none_or(|d| !d.refresh_schedules.is_empty()) {
            self.read_schedules(observed).await?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        remote_id: &str,
        _desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        CoveoClient::delete(self, remote_id).await
    }


    async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        CoveoClient::refresh(self, remote_id).await.map(|()| true)
    }

    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        Ok(managed(CoveoClient::list(self).await?))
    }

    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        CoveoClient::verify_credentials(self).await
    }

    async fn observe_each(
        &self,
        each: &mut (dyn FnMut(ObservedProvider) + Send),
    ) -> Result<(), RemoteError> {
        let mut each_managed = |wire: ProviderWire| {
            if is_managed(&wire) {
                each(observed_from_wire(wire));
            }
        };
        CoveoClient::list_each_concurrently(self, LIST_CONCURRENCY, &mut each_managed).await?;
        Ok(())
    }
}
