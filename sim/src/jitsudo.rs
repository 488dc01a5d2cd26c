//! A simulator of JITSudo's tenant identity provider API (reference `remote-apis.md` §3,
//! seed 003).
//!
//! # Endpoints
//!
//! | Method | Path | Result | Source |
//! |---|---|---|---|
//! | GET | `/v1/identity-providers?limit=&cursor=&enabled=` | `{data, next_cursor, has_more}` | seed 003 |
//! | PUT | `/v1/identity-providers/{id}` | 200 provider; body `{name, config, enabled}` | docs |
//! | POST | `/v1/identity-providers` | 201 provider; body `{name, provider_type, config?, enabled?}` | assumed |
//! | GET | `/v1/identity-providers/{id}` | 200 provider | assumed |
//! | DELETE | `/v1/identity-providers/{id}` | 204 | assumed |
//! | POST | `/v1/identity-providers/{id}/sync` | 202 provider, sync restarted | assumed |
//!
//! Unauthenticated control endpoints (never counted), shared by every simulator (see
//! `harness.rs`): `GET /_sim/stats`, `POST /_sim/reset`, `GET`/`POST /_sim/faults`.
//!
//! # Behaviour
//!
//! * Every `/v1` request needs `X-API-Key` (missing or unknown → 401 `unauthenticated`) and
//!   `X-Tenant-ID` (missing → 400 `invalid_input`); a tenant other than the key's → 403
//!   `tenant_mismatch`. Error bodies are `{code, message, details?, notices?}` with an
//!   `X-Request-ID` header.
//! * Providers are per tenant, ordered by creation. `limit` defaults to 50, must be 1..=250
//!   (else 400 `invalid_input`); `cursor` is opaque (an unknown one → 400 `invalid_cursor`);
//!   `enabled` filters.
//! * Names are unique per tenant (a duplicate → 409 `conflict`, our assumption). Unknown ids →
//!   404 `not_found`. `provider_type` must be one of the documented values.
//! * Sync lifecycle: a new provider is `pending` for the first half of `sync_duration`, then
//!   `syncing`, then `synced` with `last_synced_at` = the end of the sync. An update that
//!   changes `config` or `enabled`, and a sync request, start a new sync (`syncing`).
//!   [`JitsudoSimulator::fail_sync`] makes a provider `failed` with a `sync_error` until its
//!   next sync. The lifecycle is computed on each read.
//! * Counters count `/v1` requests by method and operation: `list`, `get`, `create`,
//!   `update`, `delete`, `sync`, `other`.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::{FaultConfig, Faults};
use super::harness::{ApiShape, Harness, json_response};
use super::{ServerHandle, lock, new_request_id};

const PREFIX: &str = "/v1/identity-providers";

static SHAPE: ApiShape = ApiShape {
    name: "jitsudo",
    prefix: "/v1",
    other_prefixes: &[],
    classify,
    request_id_header: "x-request-id",
    request_id_prefix: "",
};
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;
/// The documented `provider_type` values.
pub const PROVIDER_TYPES: &[&str] = &[
    "aws_identity_center",
    "okta",
    "azure_ad",
    "google_workspace",
    "slack",
    "github",
    "pagerduty",
    "custom_scim",
];

/// Configuration of a simulated JITSudo.
#[derive(Clone, Debug)]
pub struct JitsudoSimConfig {
    /// Tenant of `api_key`.
    pub tenant_id: String,
    pub api_key: String,
    /// More keys, each with its tenant (e.g. to provoke `tenant_mismatch`).
    pub other_keys: Vec<(String, String)>,
    /// How long a sync takes. Default 200 ms.
    pub sync_duration: Duration,
    /// Added to every `/v1` request.
    pub latency: Duration,
    /// Faults injected from the start (changeable at run time through
    /// [`JitsudoSimulator::faults`] or `POST /_sim/faults`). Default none.
    pub faults: FaultConfig,
}

impl Default for JitsudoSimConfig {
    fn default() -> Self {
        JitsudoSimConfig {
            tenant_id: "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0".into(),
            api_key: "js-simulated-api-key".into(),
            other_keys: vec![],
            sync_duration: Duration::from_millis(200),
            latency: Duration::ZERO,
            faults: FaultConfig::default(),
        }
    }
}

#[derive(Clone, Debug)]
struct Sync {
    /// A sync in progress: when it started (monotonic and wall clock).
    running: Option<(Instant, jiff::Timestamp)>,
    /// No sync has completed yet.
    first: bool,
    failure: Option<String>,
    last_synced_at: Option<jiff::Timestamp>,
}

#[derive(Clone, Debug)]
struct Provider {
    seq: u64,
    id: String,
    tenant: String,
    name: String,
    provider_type: String,
    config: Value,
    enabled: bool,
    created_at: jiff::Timestamp,
    updated_at: jiff::Timestamp,
    sync: Sync,
}

impl Provider {
    /// Completes a finished sync.
    fn settle(&mut self, duration: Duration) {
        if let Some((started, started_at)) = self.sync.running
            && started.elapsed() >= duration
        {
            let span = jiff::SignedDuration::try_from(duration).unwrap_or_default();
            self.sync.last_synced_at = Some(started_at.checked_add(span).unwrap_or(started_at));
            self.sync.running = None;
            self.sync.first = false;
        }
    }

    fn sync_status(&self, duration: Duration) -> &'static str {
        if self.sync.failure.is_some() {
            return "failed";
        }
        match self.sync.running {
            Some((started, _)) if self.sync.first && started.elapsed() < duration / 2 => "pending",
            Some(_) => "syncing",
            None => "synced",
        }
    }

    fn start_sync(&mut self) {
        self.sync.running = Some((Instant::now(), jiff::Timestamp::now()));
        self.sync.failure = None;
    }

    fn view(&self, duration: Duration) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "provider_type": self.provider_type,
            "config": self.config,
            "enabled": self.enabled,
            "last_synced_at": self.sync.last_synced_at.map(|t| t.to_string()),
            "sync_status": self.sync_status(duration),
            "sync_error": self.sync.failure,
            "created_at": self.created_at.to_string(),
            "updated_at": self.updated_at.to_string(),
        })
    }
}

#[derive(Default)]
struct Store {
    next_seq: u64,
    /// By seq: creation order.
    providers: BTreeMap<u64, Provider>,
}

impl Store {
    fn settle(&mut self, duration: Duration) {
        for p in self.providers.values_mut() {
            p.settle(duration);
        }
    }

    fn by_id(&mut self, tenant: &str, id: &str) -> Option<&mut Provider> {
        self.providers
            .values_mut()
            .find(|p| p.tenant == tenant && p.id.eq_ignore_ascii_case(id))
    }

    fn name_taken(&self, tenant: &str, name: &str, except: Option<&str>) -> bool {
        self.providers
            .values()
            .any(|p| p.tenant == tenant && p.name == name && Some(p.id.as_str()) != except)
    }

    fn insert(
        &mut self,
        tenant: &str,
        name: &str,
        provider_type: &str,
        config: Value,
        enabled: bool,
    ) -> &Provider {
        self.next_seq += 1;
        let now = jiff::Timestamp::now();
        let mut provider = Provider {
            seq: self.next_seq,
            id: new_request_id(),
            tenant: tenant.into(),
            name: name.into(),
            provider_type: provider_type.into(),
            config,
            enabled,
            created_at: now,
            updated_at: now,
            sync: Sync {
                running: None,
                first: true,
                failure: None,
                last_synced_at: None,
            },
        };
        provider.start_sync();
        let seq = provider.seq;
        self.providers.insert(seq, provider);
        &self.providers[&seq]
    }
}

struct SimState {
    config: JitsudoSimConfig,
    store: Mutex<Store>,
    /// Request counters and faults.
    harness: Harness,
    /// Creates that were applied (201 from the handler), whatever happened to the response.
    committed_creates: AtomicU64,
    /// Creates answered 409 because the provider existed.
    create_conflicts: AtomicU64,
}

impl SimState {
    fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = lock(&self.store);
        store.settle(self.config.sync_duration);
        store
    }

    fn tenant_of(&self, key: &str) -> Option<&str> {
        if key == self.config.api_key {
            return Some(&self.config.tenant_id);
        }
        self.config
            .other_keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t.as_str())
    }
}

type Shared = Arc<SimState>;

/// An API error: `{code, message, details?}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            details: Some(json!({ "field": field })),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
        }
    }

    fn not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("identity provider {id} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(details) = self.details {
            body["details"] = details;
        }
        if self.code == "tenant_mismatch" {
            body["notices"] = json!(["tenant isolation: a credential acts only in its own tenant"]);
        }
        json_response(self.status, &body)
    }
}

// ---------------------------------------------------------------------------------------------
// Public handle

/// A running simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct JitsudoSimulator {
    sim: Shared,
    server: Arc<ServerHandle>,
}

impl std::fmt::Debug for JitsudoSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitsudoSimulator")
            .field("base_url", &self.base_url())
            .field("tenant_id", &self.sim.config.tenant_id)
            .finish_non_exhaustive()
    }
}

impl JitsudoSimulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: JitsudoSimConfig) -> std::io::Result<Self> {
        // Injected errors in JITSudo's shape: `{code, message}` with a snake_case code.
        let faults = Faults::with_error_body(
            config.faults.clone(),
            Arc::new(|status, code, message| {
                let body = json!({"code": code.to_ascii_lowercase(), "message": message});
                json_response(status, &body)
            }),
        );
        let sim = Arc::new(SimState {
            store: Mutex::new(Store::default()),
            harness: Harness::new(&SHAPE, config.latency, faults),
            committed_creates: AtomicU64::new(0),
            create_conflicts: AtomicU64::new(0),
            config,
        });
        let server = ServerHandle::spawn(addr, build_router(sim.clone())).await?;
        Ok(Self {
            sim,
            server: Arc::new(server),
        })
    }

    /// `http://HOST:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn config(&self) -> &JitsudoSimConfig {
        &self.sim.config
    }

    /// API requests (under `/v1`) with this HTTP method.
    pub fn request_count(&self, method: &str) -> u64 {
        self.sim.harness.counters.count(method)
    }

    /// API requests with this method and operation.
    pub fn request_count_for(&self, method: &str, operation: &str) -> u64 {
        self.sim.harness.counters.count_for(method, operation)
    }

    /// API requests for this operation (`list`, `get`, `create`, ...).
    pub fn operation_count(&self, operation: &str) -> u64 {
        self.sim.harness.counters.count_operation(operation)
    }

    pub fn reset_counters(&self) {
        self.sim.harness.counters.reset();
    }

    /// Creates a provider in the main tenant directly (as another admin would); returns its id.
    pub fn insert_provider(
        &self,
        name: &str,
        provider_type: &str,
        config: Value,
        enabled: bool,
    ) -> String {
        let tenant = self.sim.config.tenant_id.clone();
        self.sim
            .store()
            .insert(&tenant, name, provider_type, config, enabled)
            .id
            .clone()
    }

    /// Creates `count` providers named `<prefix>-<n>` (n from 1, zero-padded to 4 digits);
    /// returns their ids in creation order.
    pub fn preload(&self, prefix: &str, count: usize) -> Vec<String> {
        (1..=count)
            .map(|n| {
                self.insert_provider(&format!("{prefix}-{n:04}"), "custom_scim", json!({}), true)
            })
            .collect()
    }

    /// The provider as `GET /v1/identity-providers/{id}` returns it.
    pub fn provider(&self, id: &str) -> Option<Value> {
        let duration = self.sim.config.sync_duration;
        self.sim
            .store()
            .providers
            .values()
            .find(|p| p.id == id)
            .map(|p| p.view(duration))
    }

    /// The provider of the main tenant with this name.
    pub fn provider_by_name(&self, name: &str) -> Option<Value> {
        let duration = self.sim.config.sync_duration;
        let tenant = &self.sim.config.tenant_id;
        self.sim
            .store()
            .providers
            .values()
            .find(|p| &p.tenant == tenant && p.name == name)
            .map(|p| p.view(duration))
    }

    /// Creates that were applied, including those whose response a fault then lost.
    pub fn committed_creates(&self) -> u64 {
        self.sim.committed_creates.load(Ordering::SeqCst)
    }

    /// Creates refused with 409 because the provider already existed.
    pub fn create_conflicts(&self) -> u64 {
        self.sim.create_conflicts.load(Ordering::SeqCst)
    }

    /// (id, name) of every provider, every tenant included, in creation order.
    pub fn provider_ids_and_names(&self) -> Vec<(String, String)> {
        self.sim
            .store()
            .providers
            .values()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect()
    }

    /// Number of providers, every tenant included.
    pub fn provider_count(&self) -> usize {
        self.sim.store().providers.len()
    }

    /// Marks a provider's sync as failed with `error` until its next sync. False when unknown.
    pub fn fail_sync(&self, id: &str, error: &str) -> bool {
        let mut store = self.sim.store();
        match store.providers.values_mut().find(|p| p.id == id) {
            Some(p) => {
                p.sync.running = None;
                p.sync.failure = Some(error.into());
                true
            }
            None => false,
        }
    }

    /// Edits a provider's name, config or enabled flag directly (drift). False when unknown.
    pub fn mutate_provider(
        &self,
        id: &str,
        edit: impl FnOnce(&mut String, &mut Value, &mut bool),
    ) -> bool {
        let mut store = self.sim.store();
        match store.providers.values_mut().find(|p| p.id == id) {
            Some(p) => {
                edit(&mut p.name, &mut p.config, &mut p.enabled);
                p.updated_at = jiff::Timestamp::now();
                true
            }
            None => false,
        }
    }

    /// The live fault settings and counters (see [`super::faults`]).
    pub fn faults(&self) -> Faults {
        self.sim.harness.faults.clone()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Runs a simulator until Ctrl-C or SIGTERM, printing
/// `jitsudo simulator listening on http://HOST:PORT` once it accepts connections.
pub async fn run_standalone(listen: SocketAddr, config: JitsudoSimConfig) -> anyhow::Result<()> {
    let started = JitsudoSimulator::start(listen, config).await;
    super::harness::serve_until_signal(&SHAPE, listen, started.map(|sim| sim.server)).await
}

// ---------------------------------------------------------------------------------------------
// Router and middleware

/// The tenant a request acts in, set by the auth middleware.
#[derive(Clone)]
struct Tenant(String);

fn build_router(sim: Shared) -> Router {
    let api = Router::new()
        .route(PREFIX, get(list_providers).post(create_provider))
        .route(
            &format!("{PREFIX}/{{id}}"),
            get(get_provider)
                .put(update_provider)
                .delete(delete_provider),
        )
        .route(&format!("{PREFIX}/{{id}}/sync"), post(sync_provider))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {method} {}", uri.path()),
            )
        })
        .layer(from_fn_with_state(sim.clone(), authenticate))
        .with_state(sim.clone());
    let providers = {
        let sim = sim.clone();
        move || sim.store().providers.len()
    };
    sim.harness.router(api, providers)
}

fn classify(method: &Method, path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return "other";
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", []) => "list",
        ("POST", []) => "create",
        ("GET", [_]) => "get",
        ("PUT", [_]) => "update",
        ("DELETE", [_]) => "delete",
        ("POST", [_, "sync"]) => "sync",
        _ => "other",
    }
}

async fn authenticate(State(sim): State<Shared>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1") {
        return next.run(request).await;
    }
    let (key, tenant) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        (header("x-api-key"), header("x-tenant-id"))
    };
    let Some(key) = key else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing X-API-Key header",
        )
        .into_response();
    };
    let Some(key_tenant) = sim.tenant_of(&key).map(str::to_owned) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "invalid API key",
        )
        .into_response();
    };
    let Some(tenant) = tenant else {
        return ApiError::invalid("X-Tenant-ID", "the X-Tenant-ID header is required")
            .into_response();
    };
    if !tenant.eq_ignore_ascii_case(&key_tenant) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_mismatch",
            format!("X-Tenant-ID {tenant} does not match the tenant of the credential"),
        )
        .into_response();
    }
    request.extensions_mut().insert(Tenant(key_tenant));
    next.run(request).await
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn tenant_of(request_tenant: Option<axum::Extension<Tenant>>) -> String {
    request_tenant.map(|t| t.0.0).unwrap_or_default()
}

fn parse_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("invalid JSON: {e}"))),
    }
}

fn cursor_for(seq: u64) -> String {
    format!("{:x}", (seq << 8) ^ 0x5a)
}

fn seq_of_cursor(cursor: &str) -> Option<u64> {
    let raw = u64::from_str_radix(cursor, 16).ok()?;
    (raw & 0xff == 0x5a).then_some(raw >> 8)
}

async fn list_providers(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(tenant);
    let mut limit = DEFAULT_LIMIT;
    let mut after = 0u64;
    let mut enabled = None;
    for (key, value) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "limit",
                            format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                        )
                    })?
            }
            "cursor" if !value.is_empty() => {
                after = seq_of_cursor(&value).ok_or_else(|| ApiError {
                    details: Some(json!({"field": "cursor"})),
                    ..ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_cursor",
                        "the cursor is not valid",
                    )
                })?
            }
            "enabled" => match value.as_ref() {
                "true" => enabled = Some(true),
                "false" => enabled = Some(false),
                _ => {
                    return Err(ApiError::invalid(
                        "enabled",
                        "enabled must be true or false",
                    ));
                }
            },
            _ => {}
        }
    }
    let duration = sim.config.sync_duration;
    let store = sim.store();
    let mut matching = store
        .providers
        .range(after + 1..)
        .map(|(_, p)| p)
        .filter(|p| p.tenant == tenant && enabled.is_none_or(|e| p.enabled == e));
    let page: Vec<&Provider> = matching.by_ref().take(limit).collect();
    let has_more = matching.next().is_some();
    let next_cursor = match page.last() {
        Some(last) if has_more => Some(cursor_for(last.seq)),
        _ => None,
    };
    let data: Vec<Value> = page.iter().map(|p| p.view(duration)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": data, "next_cursor": next_cursor, "has_more": has_more}),
    ))
}

async fn get_provider(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(tenant);
    let duration = sim.config.sync_duration;
    let mut store = sim.store();
    let provider = store
        .by_id(&tenant, &id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    Ok(json_response(StatusCode::OK, &provider.view(duration)))
}

fn name_field(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    body.get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid("name", "name is required and must be a non-empty string"))
}

fn config_field(body: &serde_json::Map<String, Value>, required: bool) -> Result<Value, ApiError> {
    match body.get("config") {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        None if !required => Ok(json!({})),
        _ => Err(ApiError::invalid(
            "config",
            "config is required and must be an object",
        )),
    }
}

fn enabled_field(body: &serde_json::Map<String, Value>, required: bool) -> Result<bool, ApiError> {
    match body.get("enabled") {
        Some(Value::Bool(b)) => Ok(*b),
        None if !required => Ok(true),
        _ => Err(ApiError::invalid(
            "enabled",
            "enabled is required and must be a boolean",
        )),
    }
}

fn conflict(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("an identity provider named {name:?} already exists in this tenant"),
    )
}

async fn create_provider(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(tenant);
    let body = parse_object(&body)?;
    let name = name_field(&body)?;
    let provider_type = body
        .get("provider_type")
        .and_then(Value::as_str)
        .filter(|t| PROVIDER_TYPES.contains(t))
        .ok_or_else(|| {
            ApiError::invalid(
                "provider_type",
                format!("provider_type must be one of {}", PROVIDER_TYPES.join(", ")),
            )
        })?
        .to_owned();
    let config = config_field(&body, false)?;
    let enabled = enabled_field(&body, false)?;
    let duration = sim.config.sync_duration;
    let mut store = sim.store();
    if store.name_taken(&tenant, &name, None) {
        sim.create_conflicts.fetch_add(1, Ordering::SeqCst);
        return Err(conflict(&name));
    }
    let created = store.insert(&tenant, &name, &provider_type, config, enabled);
    sim.committed_creates.fetch_add(1, Ordering::SeqCst);
    Ok(json_response(StatusCode::CREATED, &created.view(duration)))
}

async fn update_provider(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(tenant);
    let body = parse_object(&body)?;
    let name = name_field(&body)?;
    let config = config_field(&body, true)?;
    let enabled = enabled_field(&body, true)?;
    let duration = sim.config.sync_duration;
    let mut store = sim.store();
    let Some(existing_id) = store.by_id(&tenant, &id).map(|p| p.id.clone()) else {
        return Err(ApiError::not_found(&id));
    };
    if store.name_taken(&tenant, &name, Some(&existing_id)) {
        return Err(conflict(&name));
    }
    let provider = store
        .by_id(&tenant, &id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    let resync = provider.config != config || provider.enabled != enabled;
    provider.name = name;
    provider.config = config;
    provider.enabled = enabled;
    provider.updated_at = jiff::Timestamp::now();
    if resync {
        provider.start_sync();
    }
    Ok(json_response(StatusCode::OK, &provider.view(duration)))
}

async fn delete_provider(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_of(tenant);
    let mut store = sim.store();
    let seq = store
        .by_id(&tenant, &id)
        .map(|p| p.seq)
        .ok_or_else(|| ApiError::not_found(&id))?;
    store.providers.remove(&seq);
    Ok(StatusCode::NO_CONTENT)
}

async fn sync_provider(
    State(sim): State<Shared>,
    tenant: Option<axum::Extension<Tenant>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(tenant);
    let duration = sim.config.sync_duration;
    let mut store = sim.store();
    let provider = store
        .by_id(&tenant, &id)
        .ok_or_else(|| ApiError::not_found(&id))?;
    provider.start_sync();
    Ok(json_response(
        StatusCode::ACCEPTED,
        &provider.view(duration),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    async fn start(adjust: impl FnOnce(&mut JitsudoSimConfig)) -> JitsudoSimulator {
        let mut config = JitsudoSimConfig::default();
        adjust(&mut config);
        JitsudoSimulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn list_parameters_are_validated() {
        let sim = start(|_| {}).await;
        let http = {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::new()
        };
        let call = |query: &str| {
            http.get(format!("{}{PREFIX}{query}", sim.base_url()))
                .header("X-API-Key", &sim.config().api_key)
                .header("X-Tenant-ID", &sim.config().tenant_id)
                .send()
        };
        let resp = call("?limit=251").await.unwrap();
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_input");
        assert_eq!(call("?cursor=nonsense").await.unwrap().status(), 400);
        sim.preload("p", 60);
        let body: Value = call("").await.unwrap().json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 50, "default limit");
        assert_eq!(body["has_more"], true);
        let body: Value = call("?enabled=false").await.unwrap().json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 0);
        assert_eq!(body["next_cursor"], Value::Null);
    }

    #[test]
    fn cursors_are_opaque_and_round_trip() {
        assert_eq!(seq_of_cursor(&cursor_for(42)), Some(42));
        assert_eq!(seq_of_cursor("zz"), None);
        assert_eq!(seq_of_cursor("1"), None);
        assert_eq!(
            classify(&Method::POST, "/v1/identity-providers/x/sync"),
            "sync"
        );
        assert_eq!(classify(&Method::GET, "/v1/identity-providers"), "list");
    }
}
