//! A simulator of Coveo's Security Cache API (security identity providers), faithful to the
//! documented behaviour (seeds 000–002, reference `remote-apis.md` §1).
//!
//! # Endpoints (prefix `/rest/organizations/{organizationId}`)
//!
//! | Method | Path | Result |
//! |---|---|---|
//! | GET | `/securityproviders` | every provider with status, built-in one included |
//! | GET | `/securityproviders/page?filter=&page=&perPage=` | `{items,totalEntries,totalPages}` |
//! | POST | `/securityproviders/batch/filter?filter=&page=&perPage=` | same page shape; body: ids |
//! | GET | `/securityproviders/{id}` | `SecurityProviderModelWithStatus` |
//! | POST | `/securityproviders` | create → 200 `SecurityProviderModel` (no status fields) |
//! | PUT | `/securityproviders/{id}` | update → 200 `SecurityProviderModelWithStatus` |
//! | DELETE | `/securityproviders/{id}` | 204 |
//! | POST | `/securitycache/{id}/refresh` | 204; REFRESHING for `refresh_duration`, then IDLE |
//! | POST | `/securitycache/{id}/refresh/cancel`, `/securityproviders/{id}/refresh/cancel` | 204 |
//! | POST | `/securitycache/refresh` | 204; refreshes every provider (`SECURITY_CACHE_REFRESH`) |
//! | GET | `/securitycache/status` | `{currentStatus, statistics}` summed over providers |
//! | GET | `/securitycache/entities/{id}/members` | the provider's identities with their state |
//! | GET | `/securityproviders/{id}/schedules` | `ScheduleModel[]`, the console's two defaults |
//! | PUT | `/securityproviders/{id}/schedules/{scheduleId}` | 200 `ScheduleModel` |
//!
//! Push API identity endpoints (prefix `/push/v1/organizations/{organizationId}/providers/{id}`;
//! the real API serves them from the `api.cloud.coveo.com` host, the simulator from the same
//! one), see [`identities`]:
//!
//! | Method | Path | Result |
//! |---|---|---|
//! | PUT | `/permissions` | 202; adds or updates one identity (`NOT_UPDATED` until a refresh) |
//! | DELETE | `/permissions` | 202; disables one identity |
//! | PUT | `/mappings` | 202; adds one identity with aliases (`mappings`) |
//!
//! Unauthenticated control endpoints for tests and benchmarks (never counted):
//! `GET /_sim/stats` (request counters as JSON) and `POST /_sim/reset` (zero the counters);
//! `GET`/`POST /_sim/faults` reads or replaces the injected faults (see [`super::faults`]).
//!
//! # Behaviour, and where it is our assumption
//!
//! * Auth: a missing or non-Bearer `Authorization` header → 401 `UNAUTHORIZED`; a wrong key →
//!   401 `INVALID_TOKEN`; the right key on another organization → 403 `ACCESS_DENIED` (the
//!   Push API's documented codes). Every error body is `{"errorCode","message","requestId"}`
//!   with the same id in `X-Request-ID`.
//! * Create (POST) returns the plain model, as the spec types it; PUT returns the model with
//!   status. A new provider reports `currentStatus` `CREATING` for one `refresh_duration`,
//!   then `IDLE`, with zero statistics and **no `lastRefreshOperation` key** until its first
//!   refresh completes.
//! * PUT is update-only: an unknown id → 404. (The real `createOrUpdateSecurityProvider` may
//!   upsert; we choose the stricter behaviour so a client relying on upsert is noticed.) A body
//!   id that differs from the path id → 400 `INVALID_PARAMETER`; a body without an id takes
//!   the path id.
//! * `SECURITY_PROVIDER_INVALID_CONFIGURATION` (400) for exactly the four causes of seed 002:
//!   id, name or displayName over 255 UTF-16 units; the same `(type, id)` twice in
//!   `referencedBy`; a cascading provider (identified by entry `.id`, else `.name`, else the
//!   map key) that does not exist; id or name reserved (only `Email Security Provider`,
//!   case-insensitive, is known to be reserved). So POST/PUT on the built-in provider → 400.
//! * Malformed JSON, wrong field types, a missing `id` (POST) or `type`, an unknown `type` or
//!   reference type → 400 `INVALID_JSON`. Unknown fields are ignored. POST/PUT bodies need
//!   `Content-Type: application/json`, else 415 `UNSUPPORTED_MEDIA_TYPE` (as Spring does).
//! * Unknown provider → 404 `SECURITY_PROVIDER_NOT_FOUND`; create of an existing id → 409
//!   `SECURITY_PROVIDER_ALREADY_EXISTS` (both codes are assumptions). DELETE of the built-in
//!   provider → 403 `ACCESS_DENIED`. Deleting a provider others cascade to is allowed.
//! * Responses echo `name` = id, `displayName` defaulting to id, a per-organization
//!   `organizationClusterId` (`<org>-<26 base32 chars>`, deterministic), cascading entries
//!   keyed by target id with the target's real type, `attributes` for SOURCE references (name
//!   = source id, since the simulator knows no source names), `parameters` echoed as sent
//!   except that the value of a `sensitive: true` parameter reads `********`, as does every
//!   `userIdentities` password. Sending the mask back on PUT keeps the stored secret.
//! * Refresh: 204 even while already refreshing (no restart). A provider holding pushed
//!   identities processes them (see [`identities`]: broken mappings end `IN_ERROR`), its
//!   `statistics` are derived from them and `currentStatus` carries their counts (the
//!   processed count grows while REFRESHING); `lastRefreshOperation` =
//!   `{id, operationType, timestamp, result, numberOfEntitiesProcessed}`. A provider without
//!   identities (counts set by a test) turns every identity that is not DISABLED UP_TO_DATE,
//!   `lastRefreshOperation` =
//!   `{operationType, timestamp (epoch ms of completion), numberOfEntitiesProcessed = total}`.
//!   The lifecycle is computed lazily on each request, so reads are always consistent.
//! * Paging: `page` ≥ 0 (default 0), `perPage` in 1..=1000 (default 100; outside → 400
//!   `INVALID_PARAMETER`); `filter` is a case-insensitive substring of id or displayName;
//!   order is by id. A provider named `page` is shadowed by the paging route, as in the real
//!   API.
//! * Counters count every request under `/rest` (including rejected ones) by HTTP method and
//!   by operation: `list`, `page`, `batch_filter`, `get`, `create`, `update`, `delete`,
//!   `refresh`, `refresh_all`, `cancel_refresh`, `status`, `schedules`, `update_schedule`,
//!   `members`, `push_identity`, `disable_identity`, `push_mapping`, `other` (Push API paths
//!   count too).

mod error;
pub mod identities;
mod schedules;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::error::ApiError;
use self::store::{Now, PROVIDER_REFRESH, PageQuery, Store};
use super::faults::{FaultConfig, Faults};
use super::harness::{ApiShape, Harness};
use super::{RequestCounters, ServerHandle, lock};
use std::sync::atomic::{AtomicU64, Ordering};

/// Default `perPage` of the paged listings (reference §1.4).
const DEFAULT_PER_PAGE: usize = 100;
/// Largest accepted `perPage` (our assumption; Coveo's Platform APIs commonly cap at 1000).
const MAX_PER_PAGE: usize = 1000;
const ORGANIZATIONS_PREFIX: &str = "/rest/organizations/";
const PUSH_PREFIX: &str = "/push/v1/organizations/";

static SHAPE: ApiShape = ApiShape {
    name: "coveo",
    prefix: "/rest",
    other_prefixes: &["/push"],
    classify,
    request_id_header: "x-request-id",
    request_id_prefix: "",
};

/// The id of the built-in provider every organization has (reference §1.7).
pub const EMAIL_SECURITY_PROVIDER_ID: &str = "Email Security Provider";

/// Configuration of a simulated organization.
#[derive(Clone, Debug)]
pub struct CoveoSimConfig {
    pub organization_id: String,
    /// The only API key (Bearer token) accepted.
    pub api_key: String,
    /// How long CREATING and REFRESHING last. Default 200 ms.
    pub refresh_duration: Duration,
    /// Added to every `/rest` request. Default 0.
    pub latency: Duration,
    /// Faults injected from the start (changeable at run time through [`CoveoSimulator::faults`]
    /// or `POST /_sim/faults`). Default none.
    pub faults: FaultConfig,
}

impl CoveoSimConfig {
    pub fn new(organization_id: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            organization_id: organization_id.into(),
            api_key: api_key.into(),
            refresh_duration: Duration::from_millis(200),
            latency: Duration::ZERO,
            faults: FaultConfig::default(),
        }
    }
}

impl Default for CoveoSimConfig {
    fn default() -> Self {
        Self::new("simulatedorganization", "xx-simulated-api-key")
    }
}

/// State shared by the handlers and the public handle.
struct SimState {
    config: CoveoSimConfig,
    store: Mutex<Store>,
    /// Request counters and faults.
    harness: Harness,
    /// Creates that were applied (2xx from the handler), whatever happened to the response.
    committed_creates: AtomicU64,
    /// Creates answered 409 because the id existed.
    create_conflicts: AtomicU64,
}

impl SimState {
    fn new(config: CoveoSimConfig) -> Self {
        let cluster_id = organization_cluster_id(&config.organization_id);
        Self {
            store: Mutex::new(Store::new(
                config.organization_id.clone(),
                cluster_id,
                config.refresh_duration,
            )),
            harness: Harness::new(&SHAPE, config.latency, Faults::new(config.faults.clone())),
            committed_creates: AtomicU64::new(0),
            create_conflicts: AtomicU64::new(0),
            config,
        }
    }

    /// The store, with every finished refresh applied: all reads see the current lifecycle.
    fn store(&self) -> MutexGuard<'_, Store> {
        let mut store = lock(&self.store);
        store.settle(Instant::now());
        store
    }
}

type Shared = Arc<SimState>;

/// `<org>-<26 base32 chars>`, like seed 000's `organizationClusterId`; deterministic so
/// tests and demos are reproducible.
fn organization_cluster_id(organization_id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    // FNV-1a seeds a splitmix64 stream: no dependency, stable across Rust versions.
    let mut state = organization_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let suffix: String = (0..26)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut mixed = state;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            mixed ^= mixed >> 31;
            char::from(ALPHABET[(mixed % 32) as usize])
        })
        .collect();
    format!("{organization_id}-{suffix}")
}

// ---------------------------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------------------------

/// A running simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CoveoSimulator {
    sim: Shared,
    server: Arc<ServerHandle>,
}

impl std::fmt::Debug for CoveoSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoveoSimulator")
            .field("base_url", &self.base_url())
            .field("organization_id", &self.sim.config.organization_id)
            .finish_non_exhaustive()
    }
}

impl CoveoSimulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: CoveoSimConfig) -> std::io::Result<Self> {
        let sim = Arc::new(SimState::new(config));
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

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn config(&self) -> &CoveoSimConfig {
        &self.sim.config
    }

    /// API requests (paths under `/rest`) with this HTTP method, e.g. `"GET"`.
    pub fn request_count(&self, method: &str) -> u64 {
        self.sim.harness.counters.count(method)
    }

    /// API requests with this method and operation (see the module docs for the names),
    /// e.g. `request_count_for("POST", "refresh")`.
    pub fn request_count_for(&self, method: &str, operation: &str) -> u64 {
        self.sim.harness.counters.count_for(method, operation)
    }

    /// API requests for this operation, whatever the method.
    pub fn operation_count(&self, operation: &str) -> u64 {
        self.sim.harness.counters.count_operation(operation)
    }

    /// A shared handle on the counters (e.g. for snapshots).
    pub fn counters(&self) -> RequestCounters {
        self.sim.harness.counters.clone()
    }

    pub fn reset_counters(&self) {
        self.sim.harness.counters.reset();
    }

    /// The provider exactly as `GET /securityproviders/{id}` would return it.
    pub fn provider(&self, id: &str) -> Option<Value> {
        self.sim.store().provider_json(id)
    }

    /// Ids of all providers except the built-in Email Security Provider, in id order.
    pub fn provider_ids(&self) -> Vec<String> {
        self.sim.store().user_provider_ids()
    }

    /// Replaces what GET reports in `statistics.numberOfEntitiesByState` (missing states
    /// report 0). Returns false if the provider does not exist.
    pub fn set_statistics(&self, id: &str, by_state: BTreeMap<String, i64>) -> bool {
        self.sim.store().set_statistics(id, by_state)
    }

    /// Simulates an admin console edit (drift): `edit` receives the provider's GET JSON and
    /// may change configuration fields, `statistics`, `lastRefreshOperation` or
    /// `currentStatus` (a changed status replaces any running refresh and sticks until the
    /// next refresh). Removed fields reset to defaults; `id`/`name` cannot change. `edit` runs
    /// under the simulator's lock, so it must not call the simulator. Returns false if the
    /// provider does not exist.
    pub fn mutate_provider(&self, id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        self.sim.store().edit_as_json(id, edit)
    }

    /// The provider's refresh schedules as `GET …/schedules` returns them; None if unknown.
    pub fn schedules(&self, id: &str) -> Option<Value> {
        let store = self.sim.store();
        serde_json::to_value(store.schedules(id).ok()?).ok()
    }

    /// Simulates a console edit of the schedule running `refresh_type` (drift): `edit` gets
    /// its JSON and may change `enabled` and `frequency`. False if there is no such schedule.
    pub fn mutate_schedule(
        &self,
        id: &str,
        refresh_type: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        self.sim.store().edit_schedule(id, refresh_type, edit)
    }

    /// The secret values the provider holds, unmasked: `parameters.<name>` for sensitive
    /// parameters, `userIdentities.<name>` for passwords. None if the provider is unknown.
    pub fn secret_values(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.sim.store().secret_values(id)
    }

    /// The provider's pushed identities (`name`, `type`, `state`, `lastUpdateResult`).
    pub fn members(&self, id: &str) -> Option<Vec<Value>> {
        self.sim.store().members(id)
    }

    /// The live fault settings and counters (see [`super::faults`]).
    pub fn faults(&self) -> Faults {
        self.sim.harness.faults.clone()
    }

    /// Creates that were applied, including those whose response a fault then lost.
    pub fn committed_creates(&self) -> u64 {
        self.sim.committed_creates.load(Ordering::SeqCst)
    }

    /// Creates refused with 409 because the id already existed: a client that retried a
    /// create it could not confirm.
    pub fn create_conflicts(&self) -> u64 {
        self.sim.create_conflicts.load(Ordering::SeqCst)
    }

    /// Stops the server, waiting briefly for in-flight requests. Other clones stop serving too.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Runs a simulator until Ctrl-C or SIGTERM, printing
/// `coveo simulator listening on http://HOST:PORT` to stdout once it accepts connections.
pub async fn run_standalone(listen: SocketAddr, config: CoveoSimConfig) -> anyhow::Result<()> {
    let started = CoveoSimulator::start(listen, config).await;
    super::harness::serve_until_signal(&SHAPE, listen, started.map(|sim| sim.server)).await
}

// ---------------------------------------------------------------------------------------------
// Router and middleware
// ---------------------------------------------------------------------------------------------

fn api_path(suffix: &str) -> String {
    format!("{ORGANIZATIONS_PREFIX}{{organization}}{suffix}")
}

/// The API router, inside the shared layers and control routes of [`Harness::router`]:
/// count → latency → faults → auth → handler.
fn build_router(sim: Shared) -> Router {
    let api = Router::new()
        .route(
            &api_path("/securityproviders"),
            get(list_providers).post(create_provider),
        )
        .route(&api_path("/securityproviders/page"), get(page_providers))
        .route(
            &api_path("/securityproviders/batch/filter"),
            post(batch_filter),
        )
        .route(
            &api_path("/securityproviders/{id}"),
            get(get_provider)
                .put(update_provider)
                .delete(delete_provider),
        )
        .route(
            &api_path("/securityproviders/{id}/refresh/cancel"),
            post(cancel_refresh),
        )
        .route(
            &api_path("/securityproviders/{id}/schedules"),
            get(list_schedules),
        )
        .route(
            &api_path("/securityproviders/{id}/schedules/{schedule_id}"),
            put(update_schedule),
        )
        .route(
            &api_path("/securitycache/entities/{id}/members"),
            get(list_members),
        )
        .route(
            &push_path("/providers/{id}/permissions"),
            put(push_identity).delete(disable_identity),
        )
        .route(&push_path("/providers/{id}/mappings"), put(push_mapping))
        .route(&api_path("/securitycache/refresh"), post(refresh_all))
        .route(&api_path("/securitycache/status"), get(cache_status))
        .route(
            &api_path("/securitycache/{id}/refresh"),
            post(refresh_provider),
        )
        .route(
            &api_path("/securitycache/{id}/refresh/cancel"),
            post(cancel_refresh),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Faults come before auth (the harness's layer): gateways throttle first.
        .layer(from_fn_with_state(sim.clone(), authenticate))
        .with_state(sim.clone());
    let providers = {
        let sim = sim.clone();
        move || sim.store().user_provider_ids().len()
    };
    sim.harness.router(api, providers)
}

fn push_path(suffix: &str) -> String {
    format!("{PUSH_PREFIX}{{organization}}{suffix}")
}

fn is_api_path(path: &str) -> bool {
    path == "/rest" || path.starts_with("/rest/") || path.starts_with("/push/")
}

/// The operation name a request counts under.
fn classify(method: &Method, path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix(PUSH_PREFIX) {
        let segments: Vec<&str> = rest.split('/').skip(1).collect();
        return match (method.as_str(), segments.as_slice()) {
            ("PUT", ["providers", _, "permissions"]) => "push_identity",
            ("DELETE", ["providers", _, "permissions"]) => "disable_identity",
            ("PUT", ["providers", _, "mappings"]) => "push_mapping",
            _ => "other",
        };
    }
    let Some(rest) = path.strip_prefix(ORGANIZATIONS_PREFIX) else {
        return "other";
    };
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["securityproviders"]) => "list",
        ("POST", ["securityproviders"]) => "create",
        ("GET", ["securityproviders", "page"]) => "page",
        ("POST", ["securityproviders", "batch", "filter"]) => "batch_filter",
        ("GET", ["securityproviders", _]) => "get",
        ("PUT", ["securityproviders", _]) => "update",
        ("DELETE", ["securityproviders", _]) => "delete",
        ("GET", ["securityproviders", _, "schedules"]) => "schedules",
        ("PUT", ["securityproviders", _, "schedules", _]) => "update_schedule",
        ("GET", ["securitycache", "entities", _, "members"]) => "members",
        ("POST", ["securitycache", "refresh"]) => "refresh_all",
        ("GET", ["securitycache", "status"]) => "status",
        ("POST", ["securitycache", _, "refresh"]) => "refresh",
        (
            "POST",
            [
                "securitycache" | "securityproviders",
                _,
                "refresh",
                "cancel",
            ],
        ) => "cancel_refresh",
        _ => "other",
    }
}

async fn authenticate(State(sim): State<Shared>, request: Request, next: Next) -> Response {
    match check_access(&sim.config, request.headers(), request.uri().path()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// 401 without a valid Bearer key, then 403 for another organization's path.
fn check_access(config: &CoveoSimConfig, headers: &HeaderMap, path: &str) -> Result<(), ApiError> {
    if !is_api_path(path) {
        return Ok(());
    }
    let token = bearer_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            error::UNAUTHORIZED,
            "Full authentication is required: send 'Authorization: Bearer <access token>'.",
        )
    })?;
    if token != config.api_key {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            error::INVALID_TOKEN,
            "The access token is invalid, expired or disabled.",
        ));
    }
    match path_organization(path) {
        Some(organization) if organization != config.organization_id => {
            Err(ApiError::access_denied(format!(
                "The access token does not grant access to the organization '{organization}'."
            )))
        }
        _ => Ok(()),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The decoded `{organizationId}` path segment, if the path has one.
fn path_organization(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix(ORGANIZATIONS_PREFIX)
        .or_else(|| path.strip_prefix(PUSH_PREFIX))?;
    let segment = rest.split('/').next()?;
    Some(
        percent_encoding::percent_decode_str(segment)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Request parsing helpers
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ProviderPath {
    id: String,
}

fn provider_id(path: Result<Path<ProviderPath>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(path)| path.id).map_err(|rejection| {
        ApiError::invalid_parameter(format!("Invalid provider id in the path: {rejection}"))
    })
}

/// The body of a POST/PUT that carries JSON.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error::UNSUPPORTED_MEDIA_TYPE,
            format!("Content type '{content_type}' is not supported; use 'application/json'."),
        ));
    }
    body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            error::INVALID_JSON,
            rejection.body_text(),
        )
    })
}

/// `filter`, `page` and `perPage`. Empty values mean the default (as Spring treats them);
/// unknown parameters are ignored.
fn page_query(raw: Option<&str>) -> Result<PageQuery, ApiError> {
    let mut query = PageQuery {
        filter: None,
        page: 0,
        per_page: DEFAULT_PER_PAGE,
    };
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "filter" => query.filter = Some(value.to_lowercase()),
            "page" => query.page = parse_count("page", &value, 0, usize::MAX)?,
            "perPage" => query.per_page = parse_count("perPage", &value, 1, MAX_PER_PAGE)?,
            _ => {}
        }
    }
    Ok(query)
}

fn parse_count(name: &str, value: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|number| (min..=max).contains(number))
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Invalid value '{value}' for '{name}': expected an integer from {min} to {max}."
            ))
        })
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error::INTERNAL_ERROR,
            format!("Cannot serialize the response: {error}"),
        )
        .into_response(),
    }
}

fn ok_json(body: &impl Serialize) -> Response {
    json_response(StatusCode::OK, body)
}

// ---------------------------------------------------------------------------------------------
// Handlers (none awaits while holding the store lock)
// ---------------------------------------------------------------------------------------------

async fn list_providers(State(sim): State<Shared>) -> Response {
    let store = sim.store();
    ok_json(&store.list())
}

async fn page_providers(
    State(sim): State<Shared>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = page_query(raw.as_deref())?;
    let store = sim.store();
    Ok(ok_json(&store.page(&query)))
}

async fn batch_filter(
    State(sim): State<Shared>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = page_query(raw.as_deref())?;
    let body = json_body(&headers, body)?;
    let ids: BTreeSet<String> = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid_json(format!("Expected a JSON array of provider ids: {error}"))
    })?;
    let store = sim.store();
    Ok(ok_json(&store.batch(&ids, &query)))
}

async fn get_provider(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = provider_id(path)?;
    let store = sim.store();
    let view = store
        .provider_view(&id)
        .ok_or_else(|| ApiError::provider_not_found(&id))?;
    Ok(ok_json(&view))
}

async fn create_provider(
    State(sim): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = store::parse_input(&json_body(&headers, body)?)?;
    let mut store = sim.store();
    let spec = store.validate(input, None)?;
    let created = store.create(spec, Now::current()).inspect_err(|e| {
        if e.status == StatusCode::CONFLICT {
            sim.create_conflicts.fetch_add(1, Ordering::SeqCst);
        }
    })?;
    sim.committed_creates.fetch_add(1, Ordering::SeqCst);
    Ok(ok_json(&created))
}

async fn update_provider(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = provider_id(path)?;
    let input = store::parse_input(&json_body(&headers, body)?)?;
    let mut store = sim.store();
    let spec = store.validate(input, Some(&id))?;
    // Validation errors come first, as for a create; then PUT is update-only (module docs).
    if !store.contains(spec.id()) {
        return Err(ApiError::provider_not_found(&id));
    }
    let updated = store.update(spec)?;
    Ok(ok_json(&updated))
}

async fn delete_provider(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = provider_id(path)?;
    sim.store().delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh_provider(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = provider_id(path)?;
    sim.store()
        .start_refresh(&id, PROVIDER_REFRESH, Now::current())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh_all(State(sim): State<Shared>) -> StatusCode {
    sim.store().start_refresh_all(Now::current());
    StatusCode::NO_CONTENT
}

async fn cancel_refresh(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = provider_id(path)?;
    sim.store().cancel_refresh(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SchedulePath {
    id: String,
    schedule_id: String,
}

async fn list_schedules(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = provider_id(path)?;
    let store = sim.store();
    Ok(ok_json(&store.schedules(&id)?))
}

async fn update_schedule(
    State(sim): State<Shared>,
    path: Result<Path<SchedulePath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(path) = path.map_err(|rejection| {
        ApiError::invalid_parameter(format!("Invalid schedule path: {rejection}"))
    })?;
    let input = schedules::parse_input(&json_body(&headers, body)?)?;
    let mut store = sim.store();
    let updated = store.update_schedule(&path.id, &path.schedule_id, input)?;
    Ok(ok_json(updated))
}

async fn list_members(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = provider_id(path)?;
    let members = sim
        .store()
        .members(&id)
        .ok_or_else(|| ApiError::provider_not_found(&id))?;
    let total = members.len();
    Ok(ok_json(
        &json!({"items": members, "totalEntries": total, "totalPages": 1}),
    ))
}

async fn push_identity(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    push(sim, path, headers, body, identities::PushKind::Permissions)
}

async fn push_mapping(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    push(sim, path, headers, body, identities::PushKind::Mappings)
}

fn push(
    sim: Shared,
    path: Result<Path<ProviderPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: identities::PushKind,
) -> Result<StatusCode, ApiError> {
    let id = provider_id(path)?;
    let body = identities::parse_push(&json_body(&headers, body)?, kind)?;
    sim.store().push_identity(&id, body)?;
    Ok(StatusCode::ACCEPTED)
}

async fn disable_identity(
    State(sim): State<Shared>,
    path: Result<Path<ProviderPath>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let id = provider_id(path)?;
    let body = identities::parse_disable(&json_body(&headers, body)?)?;
    sim.store().disable_identity(&id, &body)?;
    Ok(StatusCode::ACCEPTED)
}

async fn cache_status(State(sim): State<Shared>) -> Response {
    let status = sim.store().cache_status();
    ok_json(&status)
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        error::ROUTE_NOT_FOUND,
        format!("No resource matches {method} {}.", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error::METHOD_NOT_ALLOWED,
        format!("{method} is not supported on {}.", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use reqwest::Method as HttpMethod;
    use serde_json::json;

    const ORG: &str = "mycoveocloudv2organization";
    const MASK_FOR_TESTS: &str = store::MASK;
    const KEY: &str = "xx-test-api-key";
    const SOURCE_ID: &str = "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy";
    /// How long CREATING/REFRESHING last in tests: long enough to observe, short enough to wait.
    const LIFECYCLE: Duration = Duration::from_millis(300);

    /// Seed 000's sample response, verbatim.
    const SEED_000: &str = r#"{
      "id": "mypushsourcesecurityidentityprovider",
      "name": "mypushsourcesecurityidentityprovider",
      "displayName": "mypushsourcesecurityidentityprovider",
      "organizationClusterId": "mycoveocloudv2organization-x3xz5hehgtdarowotab2oekcwa",
      "type": "EXPANDED",
      "nodeRequired": false,
      "caseSensitive": false,
      "parameters": {},
      "cascadingSecurityProviders": {
        "Email Security Provider": {
          "id": "Email Security Provider",
          "name": "Email Security Provider",
          "type": "EMAIL"
        }
      },
      "referencedBy": [
        {
          "type": "SOURCE",
          "id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy",
          "attributes": {
            "id": "mycoveocloudv2organization-rp5rxzbdz753uhndklv2ztkfgy",
            "name": "MyPushSource",
            "sourceType": "PUSH",
            "crawlerInstanceType": "Push",
            "pushEnabled": true,
            "onPremisesEnabled": false
          }
        }
      ],
      "statistics": {
        "numberOfEntitiesByState": {
          "UP_TO_DATE": 10,
          "DISABLED": 0,
          "NOT_UPDATED": 0,
          "OUT_OF_DATE": 0,
          "IN_ERROR": 0
        },
        "numberOfEntitiesInError": 0,
        "totalNumberOfEntities": 10
      },
      "lastRefreshOperation": {
        "operationType": "SECURITY_CACHE_REFRESH",
        "timestamp": 1513008128699,
        "numberOfEntitiesProcessed": 10
      },
      "currentStatus": {
        "type": "IDLE"
      }
    }"#;

    struct Reply {
        status: StatusCode,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    impl Reply {
        fn error_code(&self) -> &str {
            self.body["errorCode"].as_str().unwrap_or("<none>")
        }
    }

    struct Api {
        sim: CoveoSimulator,
        http: reqwest::Client,
    }

    impl Api {
        async fn start() -> Self {
            Self::start_with(|_| {}).await
        }

        async fn start_with(adjust: impl FnOnce(&mut CoveoSimConfig)) -> Self {
            let mut config = CoveoSimConfig::new(ORG, KEY);
            config.refresh_duration = LIFECYCLE;
            adjust(&mut config);
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            let sim = CoveoSimulator::start(addr, config)
                .await
                .expect("simulator starts");
            Self {
                sim,
                http: {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    reqwest::Client::new()
                },
            }
        }

        fn url(&self, suffix: &str) -> String {
            format!("{}/rest/organizations/{ORG}{suffix}", self.sim.base_url())
        }

        async fn call(&self, method: HttpMethod, suffix: &str, body: Option<Value>) -> Reply {
            let request = self.http.request(method, self.url(suffix)).bearer_auth(KEY);
            let request = match body {
                Some(body) => request.json(&body),
                None => request,
            };
            send(request).await
        }

        async fn get(&self, suffix: &str) -> Reply {
            self.call(HttpMethod::GET, suffix, None).await
        }

        async fn post(&self, suffix: &str, body: Value) -> Reply {
            self.call(HttpMethod::POST, suffix, Some(body)).await
        }

        async fn post_empty(&self, suffix: &str) -> Reply {
            self.call(HttpMethod::POST, suffix, None).await
        }

        async fn put(&self, suffix: &str, body: Value) -> Reply {
            self.call(HttpMethod::PUT, suffix, Some(body)).await
        }

        async fn delete(&self, suffix: &str) -> Reply {
            self.call(HttpMethod::DELETE, suffix, None).await
        }

        async fn create(&self, body: Value) -> Reply {
            self.post("/securityproviders", body).await
        }

        async fn create_expanded(&self, id: &str) -> Reply {
            let reply = self.create(expanded(id)).await;
            assert_eq!(reply.status, StatusCode::OK, "create {id}: {}", reply.body);
            reply
        }

        /// Polls GET until `currentStatus.type` is `wanted`.
        async fn wait_for_status(&self, id: &str, wanted: &str) -> Value {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let reply = self.get(&provider_path(id)).await;
                if reply.body["currentStatus"]["type"] == wanted {
                    return reply.body;
                }
                assert!(
                    Instant::now() < deadline,
                    "{id} never became {wanted}: {}",
                    reply.body
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the simulator");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body is readable");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn provider_path(id: &str) -> String {
        format!(
            "/securityproviders/{}",
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        )
    }

    fn refresh_path(id: &str) -> String {
        format!(
            "/securitycache/{}/refresh",
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        )
    }

    /// Seed 002's create payload for a push source's provider.
    fn expanded(id: &str) -> Value {
        json!({
            "id": id,
            "nodeRequired": false,
            "type": "EXPANDED",
            "referencedBy": [{"id": SOURCE_ID, "type": "SOURCE"}],
            "cascadingSecurityProviders": {
                "EmailSecurityProvider": {"id": "Email Security Provider", "type": "EMAIL"}
            }
        })
    }

    fn states(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs
            .iter()
            .map(|(state, count)| ((*state).to_owned(), *count))
            .collect()
    }

    /// A 400 `INVALID_CONFIGURATION` (see [`assert_error`]) whose message mentions `part`.
    fn assert_invalid_configuration(reply: &Reply, part: &str) {
        assert_error(reply, StatusCode::BAD_REQUEST, error::INVALID_CONFIGURATION);
        let message = reply.body["message"].as_str().unwrap_or("");
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }

    fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.error_code(), code, "{}", reply.body);
        let message = reply.body["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "error has a message: {}", reply.body);
        let request_id = reply
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            request_id,
            reply.body["requestId"].as_str(),
            "request ids match"
        );
        assert_json_content_type(reply);
    }

    fn assert_json_content_type(reply: &Reply) {
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json"));
    }

    fn now_ms() -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }

    #[tokio::test]
    async fn missing_or_invalid_key_is_401_with_a_coveo_error_body() {
        let api = Api::start().await;
        let url = api.url("/securityproviders");
        let missing = send(api.http.get(&url)).await;
        assert_error(&missing, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        let basic = send(api.http.get(&url).basic_auth("user", Some(KEY))).await;
        assert_error(&basic, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        let wrong = send(api.http.get(&url).bearer_auth("not-the-key")).await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "INVALID_TOKEN");
        let request_id = wrong.body["requestId"].as_str().unwrap_or("");
        assert_eq!(request_id.len(), 36, "uuid-like request id: {request_id}");
    }

    #[tokio::test]
    async fn valid_key_on_another_organization_is_403() {
        let api = Api::start().await;
        let url = format!(
            "{}/rest/organizations/otherorg/securityproviders",
            api.sim.base_url()
        );
        let reply = send(api.http.get(&url).bearer_auth(KEY)).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "ACCESS_DENIED");
    }

    #[tokio::test]
    async fn email_security_provider_is_built_in_and_protected() {
        let api = Api::start().await;
        let list = api.get("/securityproviders").await;
        assert_eq!(list.status, StatusCode::OK);
        assert_json_content_type(&list);
        let providers = list.body.as_array().expect("an array");
        assert_eq!(providers.len(), 1);
        assert_eq!(providers[0]["id"], EMAIL_SECURITY_PROVIDER_ID);
        assert_eq!(providers[0]["type"], "EMAIL");
        assert_eq!(providers[0]["currentStatus"]["type"], "IDLE");
        assert!(api.sim.provider_ids().is_empty());

        let email_path = provider_path(EMAIL_SECURITY_PROVIDER_ID);
        assert_eq!(
            api.get(&email_path).await.body["displayName"],
            EMAIL_SECURITY_PROVIDER_ID
        );
        let delete = api.delete(&email_path).await;
        assert_error(&delete, StatusCode::FORBIDDEN, "ACCESS_DENIED");
        let body = json!({"id": EMAIL_SECURITY_PROVIDER_ID, "type": "EMAIL"});
        let update = api.put(&email_path, body).await;
        assert_error(
            &update,
            StatusCode::BAD_REQUEST,
            error::INVALID_CONFIGURATION,
        );
        assert_eq!(
            api.post_empty(&refresh_path(EMAIL_SECURITY_PROVIDER_ID))
                .await
                .status,
            StatusCode::NO_CONTENT
        );
    }

    #[tokio::test]
    async fn created_provider_matches_seed_000_field_by_field() {
        let api = Api::start().await;
        let id = "mypushsourcesecurityidentityprovider";
        api.create_expanded(id).await;
        api.wait_for_status(id, "IDLE").await;
        assert!(api.sim.set_statistics(id, states(&[("UP_TO_DATE", 10)])));
        // The seed's lastRefreshOperation comes from an organization-wide refresh.
        let before = now_ms();
        let refresh = api.post_empty("/securitycache/refresh").await;
        assert_eq!(refresh.status, StatusCode::NO_CONTENT);
        let mut actual = api.wait_for_status(id, "IDLE").await;

        let mut expected: Value = serde_json::from_str(SEED_000).expect("seed 000 is JSON");
        // Three values are instance-specific; check their form, then align them.
        let cluster_id = actual["organizationClusterId"]
            .as_str()
            .expect("a string")
            .to_owned();
        let suffix = cluster_id
            .strip_prefix(&format!("{ORG}-"))
            .expect("org prefix");
        assert_eq!(suffix.len(), 26);
        assert!(
            suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        expected["organizationClusterId"] = json!(cluster_id);
        assert_eq!(actual["referencedBy"][0]["attributes"]["name"], SOURCE_ID);
        expected["referencedBy"][0]["attributes"]["name"] = json!(SOURCE_ID);
        let timestamp = actual["lastRefreshOperation"]["timestamp"]
            .as_i64()
            .expect("epoch ms");
        assert!(
            timestamp >= before && timestamp <= now_ms(),
            "timestamp {timestamp}"
        );
        expected["lastRefreshOperation"]["timestamp"] = json!(timestamp);
        assert_eq!(actual, expected);

        // The helper returns exactly what GET returns.
        actual = api.get(&provider_path(id)).await.body;
        assert_eq!(api.sim.provider(id), Some(actual));
    }

    #[tokio::test]
    async fn create_returns_the_model_then_creating_then_idle() {
        let api = Api::start().await;
        let id = "My Secured Push Source Security Identity Provider";
        let created = api.create_expanded(id).await;
        assert_json_content_type(&created);
        let model = created.body.as_object().expect("an object");
        for status_field in ["statistics", "lastRefreshOperation", "currentStatus"] {
            assert!(
                !model.contains_key(status_field),
                "POST returns no {status_field}"
            );
        }
        assert_eq!(created.body["name"], id);
        assert_eq!(created.body["displayName"], id);
        let email = &created.body["cascadingSecurityProviders"][EMAIL_SECURITY_PROVIDER_ID];
        assert_eq!(
            email,
            &json!({"id": EMAIL_SECURITY_PROVIDER_ID, "name": EMAIL_SECURITY_PROVIDER_ID, "type": "EMAIL"})
        );

        let fresh = api.get(&provider_path(id)).await.body;
        assert_eq!(fresh["currentStatus"], json!({"type": "CREATING"}));
        assert_eq!(fresh["statistics"]["totalNumberOfEntities"], 0);
        assert_eq!(
            fresh["statistics"]["numberOfEntitiesByState"]
                .as_object()
                .map(|m| m.len()),
            Some(5)
        );
        let idle = api.wait_for_status(id, "IDLE").await;
        assert!(
            idle.get("lastRefreshOperation").is_none(),
            "no refresh yet: {idle}"
        );
        assert_eq!(api.sim.provider_ids(), vec![id.to_owned()]);
    }

    #[tokio::test]
    async fn creating_an_existing_id_is_409() {
        let api = Api::start().await;
        api.create_expanded("dup").await;
        let again = api.create(expanded("dup")).await;
        assert_error(
            &again,
            StatusCode::CONFLICT,
            "SECURITY_PROVIDER_ALREADY_EXISTS",
        );
    }

    #[tokio::test]
    async fn id_or_name_longer_than_255_is_an_invalid_configuration() {
        let api = Api::start().await;
        let longest = "a".repeat(255);
        api.create_expanded(&longest).await;
        let too_long = api.create(expanded(&"b".repeat(256))).await;
        assert_invalid_configuration(&too_long, "too long");
        for field in ["name", "displayName"] {
            let mut body = expanded("short");
            body[field] = json!("c".repeat(256));
            let reply = api.create(body).await;
            assert_error(
                &reply,
                StatusCode::BAD_REQUEST,
                error::INVALID_CONFIGURATION,
            );
        }
        // The same check applies to updates.
        let mut body = expanded(&longest);
        body["displayName"] = json!("d".repeat(256));
        let update = api.put(&provider_path(&longest), body).await;
        assert_error(
            &update,
            StatusCode::BAD_REQUEST,
            error::INVALID_CONFIGURATION,
        );
    }

    #[tokio::test]
    async fn referencing_a_resource_twice_is_an_invalid_configuration() {
        let api = Api::start().await;
        let mut body = expanded("twice");
        body["referencedBy"] = json!([
            {"id": SOURCE_ID, "type": "SOURCE"},
            {"id": SOURCE_ID, "type": "SOURCE"}
        ]);
        let reply = api.create(body).await;
        assert_invalid_configuration(&reply, "more than once");

        // The same id under two different types is two resources.
        let mut body = expanded("distinct");
        body["referencedBy"] = json!([
            {"id": SOURCE_ID, "type": "SOURCE"},
            {"id": SOURCE_ID, "type": "SECURITY_PROVIDER"}
        ]);
        let created = api.create(body).await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        assert!(created.body["referencedBy"][1].get("attributes").is_none());
    }

    #[tokio::test]
    async fn a_missing_cascading_provider_is_an_invalid_configuration() {
        let api = Api::start().await;
        let mut body = expanded("cascades");
        body["cascadingSecurityProviders"] =
            json!({"Whatever": {"id": "no-such-provider", "type": "EXPANDED"}});
        let reply = api.create(body).await;
        assert_invalid_configuration(&reply, "no-such-provider");

        // Cascading to an existing provider is keyed by its id and reports its real type.
        api.create_expanded("target").await;
        let mut body = expanded("cascades");
        body["cascadingSecurityProviders"] = json!({"anything": {"id": "target", "type": "EMAIL"}});
        let created = api.create(body).await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        assert_eq!(
            created.body["cascadingSecurityProviders"],
            json!({"target": {"id": "target", "name": "target", "type": "EXPANDED"}})
        );
    }

    #[tokio::test]
    async fn a_reserved_id_or_name_is_an_invalid_configuration() {
        let api = Api::start().await;
        for id in [EMAIL_SECURITY_PROVIDER_ID, "email security provider"] {
            let reply = api.create(expanded(id)).await;
            assert_invalid_configuration(&reply, "reserved");
        }
        let mut body = expanded("innocent");
        body["name"] = json!(EMAIL_SECURITY_PROVIDER_ID);
        let reply = api.create(body).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            error::INVALID_CONFIGURATION,
        );
    }

    #[tokio::test]
    async fn malformed_or_mistyped_bodies_are_rejected() {
        let api = Api::start().await;
        let url = api.url("/securityproviders");
        let malformed = api
            .http
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", "application/json");
        let reply = send(malformed.body("{not json")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_JSON");
        let mut mistyped = expanded("x");
        mistyped["nodeRequired"] = json!("yes");
        assert_error(
            &api.create(mistyped).await,
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        );
        let no_id = json!({"type": "EXPANDED"});
        assert_error(
            &api.create(no_id).await,
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        );
        let bad_type = json!({"id": "x", "type": "NOT_A_TYPE"});
        assert_error(
            &api.create(bad_type).await,
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        );
        let not_json = api
            .http
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", "text/plain");
        let reply = send(not_json.body(expanded("x").to_string())).await;
        assert_error(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        );

        let mut extra = expanded("extra-fields");
        extra["organizationId"] = json!("ignored");
        extra["somethingNew"] = json!({"nested": true});
        let created = api.create(extra).await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        assert!(created.body.get("somethingNew").is_none());
    }

    #[tokio::test]
    async fn unknown_provider_is_404_for_every_operation() {
        let api = Api::start().await;
        let path = provider_path("ghost");
        let code = "SECURITY_PROVIDER_NOT_FOUND";
        assert_error(&api.get(&path).await, StatusCode::NOT_FOUND, code);
        assert_error(
            &api.put(&path, expanded("ghost")).await,
            StatusCode::NOT_FOUND,
            code,
        );
        assert_error(&api.delete(&path).await, StatusCode::NOT_FOUND, code);
        assert_error(
            &api.post_empty(&refresh_path("ghost")).await,
            StatusCode::NOT_FOUND,
            code,
        );
        assert!(api.sim.provider("ghost").is_none());
        assert!(!api.sim.set_statistics("ghost", BTreeMap::new()));
        assert!(!api.sim.mutate_provider("ghost", |_| {}));
    }

    #[tokio::test]
    async fn put_replaces_the_configuration_and_keeps_the_status() {
        let api = Api::start().await;
        let id = "updatable";
        api.create_expanded(id).await;
        api.wait_for_status(id, "IDLE").await;
        api.sim.set_statistics(id, states(&[("UP_TO_DATE", 4)]));
        api.post_empty(&refresh_path(id)).await;
        let refreshed = api.wait_for_status(id, "IDLE").await;

        let update = json!({
            "id": id,
            "displayName": "Updated name",
            "type": "EXPANDED",
            "caseSensitive": true,
            "parameters": {"tenant": {"value": "t1", "sensitive": false}},
            "referencedBy": [{"type": "SOURCE", "id": "other-source"}]
        });
        let reply = api.put(&provider_path(id), update).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["displayName"], "Updated name");
        assert_eq!(reply.body["caseSensitive"], true);
        assert_eq!(reply.body["cascadingSecurityProviders"], json!({}));
        assert_eq!(
            reply.body["referencedBy"][0]["attributes"]["id"],
            "other-source"
        );
        assert_eq!(
            reply.body["lastRefreshOperation"],
            refreshed["lastRefreshOperation"]
        );
        assert_eq!(reply.body["statistics"], refreshed["statistics"]);
        assert_eq!(api.get(&provider_path(id)).await.body, reply.body);

        let mismatch = api.put(&provider_path(id), expanded("another-id")).await;
        assert_error(&mismatch, StatusCode::BAD_REQUEST, "INVALID_PARAMETER");
        let without_id = json!({"type": "EXPANDED", "displayName": "From path"});
        let reply = api.put(&provider_path(id), without_id).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["id"], id);
    }

    #[tokio::test]
    async fn delete_removes_the_provider() {
        let api = Api::start().await;
        api.create_expanded("doomed").await;
        let reply = api.delete(&provider_path("doomed")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.body, Value::Null);
        assert_eq!(
            api.get(&provider_path("doomed")).await.status,
            StatusCode::NOT_FOUND
        );
        assert!(api.sim.provider_ids().is_empty());
        assert_eq!(
            api.delete(&provider_path("doomed")).await.status,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn refresh_goes_refreshing_then_idle_with_a_new_operation() {
        let api = Api::start().await;
        let id = "refreshable";
        api.create_expanded(id).await;
        api.wait_for_status(id, "IDLE").await;
        let counts = [
            ("UP_TO_DATE", 3),
            ("OUT_OF_DATE", 2),
            ("IN_ERROR", 1),
            ("DISABLED", 1),
        ];
        api.sim.set_statistics(id, states(&counts));

        let before = now_ms();
        let reply = api.post_empty(&refresh_path(id)).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.body, Value::Null);
        let running = api.get(&provider_path(id)).await.body;
        assert_eq!(
            running["currentStatus"],
            json!({"type": "REFRESHING", "refreshType": "SECURITY_PROVIDER_REFRESH"})
        );
        assert_eq!(running["statistics"]["numberOfEntitiesInError"], 1);
        // A second trigger while refreshing is accepted and changes nothing.
        assert_eq!(
            api.post_empty(&refresh_path(id)).await.status,
            StatusCode::NO_CONTENT
        );

        let done = api.wait_for_status(id, "IDLE").await;
        assert_eq!(done["currentStatus"], json!({"type": "IDLE"}));
        let operation = &done["lastRefreshOperation"];
        assert_eq!(operation["operationType"], "SECURITY_PROVIDER_REFRESH");
        assert_eq!(operation["numberOfEntitiesProcessed"], 7);
        let timestamp = operation["timestamp"].as_i64().expect("epoch ms");
        assert!(
            timestamp >= before + 250 && timestamp <= now_ms(),
            "timestamp {timestamp}"
        );
        let statistics = &done["statistics"];
        assert_eq!(statistics["numberOfEntitiesByState"]["UP_TO_DATE"], 6);
        assert_eq!(statistics["numberOfEntitiesByState"]["DISABLED"], 1);
        assert_eq!(statistics["numberOfEntitiesByState"]["IN_ERROR"], 0);
        assert_eq!(statistics["numberOfEntitiesInError"], 0);
        assert_eq!(statistics["totalNumberOfEntities"], 7);
    }

    #[tokio::test]
    async fn cancelling_a_refresh_returns_to_idle_without_an_operation() {
        let api = Api::start_with(|c| c.refresh_duration = Duration::from_secs(30)).await;
        let id = "cancellable";
        api.create_expanded(id).await;
        api.post_empty(&refresh_path(id)).await;
        assert_eq!(
            api.wait_for_status(id, "REFRESHING").await["currentStatus"]["type"],
            "REFRESHING"
        );
        let spec_path = format!("/securitycache/{id}/refresh/cancel");
        assert_eq!(
            api.post_empty(&spec_path).await.status,
            StatusCode::NO_CONTENT
        );
        let idle = api.get(&provider_path(id)).await.body;
        assert_eq!(idle["currentStatus"], json!({"type": "IDLE"}));
        assert!(idle.get("lastRefreshOperation").is_none());
        let client_path = format!("/securityproviders/{id}/refresh/cancel");
        assert_eq!(
            api.post_empty(&client_path).await.status,
            StatusCode::NO_CONTENT
        );
    }

    #[tokio::test]
    async fn paging_walks_three_pages_in_id_order() {
        let api = Api::start().await;
        for index in (0..25).rev() {
            api.create_expanded(&format!("prov-{index:02}")).await;
        }
        let mut seen = Vec::new();
        for (page, expected_len) in [(0, 10), (1, 10), (2, 6)] {
            let reply = api
                .get(&format!("/securityproviders/page?page={page}&perPage=10"))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(reply.body["totalEntries"], 26);
            assert_eq!(reply.body["totalPages"], 3);
            let items = reply.body["items"].as_array().expect("items");
            assert_eq!(items.len(), expected_len);
            assert!(items.iter().all(|item| item.get("currentStatus").is_some()));
            seen.extend(
                items
                    .iter()
                    .map(|item| item["id"].as_str().unwrap_or("").to_owned()),
            );
        }
        let mut all = api.sim.provider_ids();
        all.push(EMAIL_SECURITY_PROVIDER_ID.to_owned());
        all.sort();
        assert_eq!(seen, all);
        let beyond = api.get("/securityproviders/page?page=3&perPage=10").await;
        assert_eq!(beyond.body["items"], json!([]));

        let defaults = api.get("/securityproviders/page").await;
        assert_eq!(defaults.body["items"].as_array().map(Vec::len), Some(26));
        assert_eq!(defaults.body["totalPages"], 1);
    }

    #[tokio::test]
    async fn paging_filters_by_id_or_display_name_and_validates_parameters() {
        let api = Api::start().await;
        for index in 0..12 {
            api.create_expanded(&format!("prov-{index:02}")).await;
        }
        let mut special = expanded("zzz");
        special["displayName"] = json!("Special Display Name");
        api.create(special).await;

        let by_id = api
            .get("/securityproviders/page?filter=PROV-1&perPage=5")
            .await;
        assert_eq!(by_id.body["totalEntries"], 2);
        let by_name = api
            .get("/securityproviders/page?filter=special%20DISPLAY")
            .await;
        assert_eq!(by_name.body["items"][0]["id"], "zzz");
        let empty_filter = api.get("/securityproviders/page?filter=&page=").await;
        assert_eq!(empty_filter.body["totalEntries"], 14);

        for bad in ["perPage=1001", "perPage=0", "page=-1", "perPage=abc"] {
            let reply = api.get(&format!("/securityproviders/page?{bad}")).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_PARAMETER");
        }
        let max = api.get("/securityproviders/page?perPage=1000").await;
        assert_eq!(max.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn batch_filter_returns_known_ids_only_paged() {
        let api = Api::start().await;
        for index in 0..5 {
            api.create_expanded(&format!("prov-{index:02}")).await;
        }
        let ids = json!(["prov-03", "unknown", "prov-01", "prov-03"]);
        let all = api
            .post("/securityproviders/batch/filter", ids.clone())
            .await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.body);
        let found: Vec<&str> = all.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["id"].as_str())
            .collect();
        assert_eq!(found, ["prov-01", "prov-03"]);
        assert_eq!(all.body["totalEntries"], 2);

        let second = api
            .post("/securityproviders/batch/filter?page=1&perPage=1", ids)
            .await;
        assert_eq!(second.body["items"][0]["id"], "prov-03");
        assert_eq!(second.body["totalPages"], 2);
        let filtered = api
            .post(
                "/securityproviders/batch/filter?filter=01",
                json!(["prov-01", "prov-02"]),
            )
            .await;
        assert_eq!(filtered.body["totalEntries"], 1);

        let not_ids = api
            .post("/securityproviders/batch/filter", json!({"ids": []}))
            .await;
        assert_error(&not_ids, StatusCode::BAD_REQUEST, "INVALID_JSON");
    }

    #[tokio::test]
    async fn counters_count_api_requests_by_method_and_operation() {
        let api = Api::start().await;
        api.create_expanded("counted").await;
        api.get("/securityproviders").await;
        api.get(&provider_path("counted")).await;
        api.get(&provider_path("missing")).await;
        api.put(&provider_path("counted"), expanded("counted"))
            .await;
        api.post_empty(&refresh_path("counted")).await;
        api.delete(&provider_path("counted")).await;
        send(api.http.get(api.url("/securityproviders"))).await; // 401s count too

        assert_eq!(api.sim.request_count("GET"), 4);
        assert_eq!(api.sim.request_count("post"), 2);
        assert_eq!(api.sim.request_count("PUT"), 1);
        assert_eq!(api.sim.request_count("DELETE"), 1);
        assert_eq!(api.sim.request_count_for("GET", "get"), 2);
        assert_eq!(api.sim.request_count_for("GET", "list"), 2);
        assert_eq!(api.sim.request_count_for("POST", "create"), 1);
        assert_eq!(api.sim.request_count_for("POST", "refresh"), 1);
        assert_eq!(api.sim.operation_count("update"), 1);

        // The control endpoint needs no auth and is not counted.
        let stats_url = format!("{}/_sim/stats", api.sim.base_url());
        let stats = send(api.http.get(&stats_url)).await;
        assert_eq!(stats.status, StatusCode::OK);
        assert_eq!(stats.body["counters"]["byMethod"]["GET"], 4);
        assert_eq!(
            stats.body["counters"]["byMethodAndOperation"]["POST refresh"],
            1
        );
        assert_eq!(stats.body["counters"]["total"], 8);
        assert_eq!(api.sim.request_count("GET"), 4);

        api.sim.reset_counters();
        assert_eq!(api.sim.request_count("GET"), 0);
        api.get("/securityproviders").await;
        assert_eq!(api.sim.request_count("GET"), 1);
        let reset = send(api.http.post(format!("{}/_sim/reset", api.sim.base_url()))).await;
        assert_eq!(reset.status, StatusCode::NO_CONTENT);
        assert_eq!(api.sim.counters().total(), 0);
    }

    #[tokio::test]
    async fn console_edits_and_statistics_show_up_in_get() {
        let api = Api::start().await;
        let id = "drifting";
        api.create_expanded(id).await;
        api.wait_for_status(id, "IDLE").await;
        assert!(api.sim.mutate_provider(id, |provider| {
            provider["displayName"] = json!("Edited in the console");
            provider["caseSensitive"] = json!(true);
            provider["cascadingSecurityProviders"] = json!({});
        }));
        let edited = api.get(&provider_path(id)).await.body;
        assert_eq!(edited["displayName"], "Edited in the console");
        assert_eq!(edited["caseSensitive"], true);
        assert_eq!(edited["cascadingSecurityProviders"], json!({}));
        assert_eq!(edited["referencedBy"][0]["id"], SOURCE_ID);

        api.sim.mutate_provider(id, |provider| {
            provider["currentStatus"] = json!({"type": "ERROR"})
        });
        assert_eq!(
            api.get(&provider_path(id)).await.body["currentStatus"]["type"],
            "ERROR"
        );
        api.sim
            .set_statistics(id, states(&[("IN_ERROR", 2), ("UNKNOWN", 1)]));
        let stats = api.get(&provider_path(id)).await.body["statistics"].clone();
        assert_eq!(stats["numberOfEntitiesInError"], 2);
        assert_eq!(stats["totalNumberOfEntities"], 3);
        assert_eq!(stats["numberOfEntitiesByState"]["UNKNOWN"], 1);

        // A refresh clears the error.
        api.post_empty(&refresh_path(id)).await;
        let idle = api.wait_for_status(id, "IDLE").await;
        assert_eq!(
            idle["statistics"]["numberOfEntitiesByState"]["UP_TO_DATE"],
            3
        );
    }

    #[tokio::test]
    async fn ids_with_spaces_and_slashes_round_trip() {
        let api = Api::start().await;
        for id in [
            "My Secured Push Source Security Identity Provider",
            "team/a b+c",
            "é-ü",
        ] {
            api.create_expanded(id).await;
            let reply = api.get(&provider_path(id)).await;
            assert_eq!(reply.status, StatusCode::OK, "{id}: {}", reply.body);
            assert_eq!(reply.body["id"], id);
            assert_eq!(
                api.post_empty(&refresh_path(id)).await.status,
                StatusCode::NO_CONTENT
            );
        }
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_get_json_errors() {
        let api = Api::start().await;
        assert_error(
            &api.get("/nothing/here").await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        );
        let patch = api
            .call(HttpMethod::PATCH, "/securityproviders/x", None)
            .await;
        assert_error(&patch, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    }

    #[tokio::test]
    async fn cache_status_sums_all_providers() {
        let api = Api::start().await;
        api.create_expanded("one").await;
        api.create_expanded("two").await;
        api.sim.set_statistics("one", states(&[("UP_TO_DATE", 2)]));
        api.sim.set_statistics("two", states(&[("IN_ERROR", 3)]));
        let status = api.get("/securitycache/status").await.body;
        assert_eq!(status["statistics"]["totalNumberOfEntities"], 5);
        assert_eq!(status["statistics"]["numberOfEntitiesInError"], 3);
        assert_eq!(status["statistics"]["numberOfProviders"], 3);
        assert!(status["currentStatus"]["type"].is_string());
    }

    #[tokio::test]
    async fn latency_is_added_to_api_requests() {
        let api = Api::start_with(|c| c.latency = Duration::from_millis(150)).await;
        let started = Instant::now();
        api.get("/securityproviders").await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn thousands_of_concurrent_creates_are_handled() {
        let api = Api::start().await;
        let count = 2000;
        let replies: Vec<StatusCode> = futures::stream::iter(0..count)
            .map(|index| {
                let api = &api;
                async move {
                    api.create(expanded(&format!("bulk-{index:05}")))
                        .await
                        .status
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(replies.iter().all(|status| *status == StatusCode::OK));
        assert_eq!(api.sim.provider_ids().len(), count);
        let list = api.get("/securityproviders").await;
        assert_eq!(list.body.as_array().map(Vec::len), Some(count + 1));
        let page = api
            .get("/securityproviders/page?filter=bulk-019&perPage=1000")
            .await;
        assert_eq!(page.body["totalEntries"], 100);
    }

    #[tokio::test]
    async fn shutdown_stops_serving() {
        let api = Api::start().await;
        let url = api.url("/securityproviders");
        assert_eq!(api.get("/securityproviders").await.status, StatusCode::OK);
        api.sim.clone().shutdown().await;
        let fresh_client = {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::new()
        };
        assert!(
            fresh_client
                .get(&url)
                .bearer_auth(KEY)
                .send()
                .await
                .is_err()
        );
    }

    impl Api {
        async fn push(&self, method: HttpMethod, suffix: &str, body: Value) -> Reply {
            let url = format!(
                "{}/push/v1/organizations/{ORG}/providers/{suffix}",
                self.sim.base_url()
            );
            send(self.http.request(method, url).bearer_auth(KEY).json(&body)).await
        }
    }

    #[tokio::test]
    async fn pushed_identities_are_processed_by_a_refresh_and_broken_mappings_end_in_error() {
        let h = Api::start().await;
        h.create_expanded("p").await;
        h.wait_for_status("p", "IDLE").await;
        for (user, provider) in [
            ("a", EMAIL_SECURITY_PROVIDER_ID),
            ("b", EMAIL_SECURITY_PROVIDER_ID),
            ("c", "Missing Directory"),
        ] {
            let mapping = json!({"identity": {"name": user, "type": "USER"},
                "mappings": [{"name": format!("{user}@x"), "type": "USER", "provider": provider}]});
            assert_eq!(
                h.push(HttpMethod::PUT, "p/mappings", mapping).await.status,
                StatusCode::ACCEPTED
            );
        }
        let group = json!({"identity": {"name": "g", "type": "GROUP"}, "members": [{"name": "a", "type": "USER"}]});
        assert_eq!(
            h.push(HttpMethod::PUT, "p/permissions", group).await.status,
            StatusCode::ACCEPTED
        );
        let gone = json!({"identity": {"name": "b", "type": "USER"}});
        assert_eq!(
            h.push(HttpMethod::DELETE, "p/permissions", gone)
                .await
                .status,
            StatusCode::ACCEPTED
        );
        let bad = json!({"identity": {"name": "x", "type": "ROBOT"}});
        assert_error(
            &h.push(HttpMethod::PUT, "p/permissions", bad).await,
            StatusCode::BAD_REQUEST,
            "INVALID_JSON",
        );
        let unknown = json!({"identity": {"name": "x", "type": "USER"}});
        assert_eq!(
            h.push(HttpMethod::PUT, "nope/permissions", unknown)
                .await
                .status,
            StatusCode::NOT_FOUND
        );

        let before = h.get(&provider_path("p")).await.body;
        assert_eq!(
            before["statistics"]["numberOfEntitiesByState"]["NOT_UPDATED"],
            3
        );
        assert_eq!(before["statistics"]["totalNumberOfEntities"], 4);
        assert_eq!(before["currentStatus"]["totalNumberOfEntities"], 4);
        assert!(before.get("lastRefreshOperation").is_none());

        assert_eq!(
            h.post_empty(&refresh_path("p")).await.status,
            StatusCode::NO_CONTENT
        );
        let refreshing = h.get(&provider_path("p")).await.body;
        assert_eq!(refreshing["currentStatus"]["type"], "REFRESHING");
        let after = h.wait_for_status("p", "IDLE").await;
        let by_state = &after["statistics"]["numberOfEntitiesByState"];
        assert_eq!(
            (
                by_state["UP_TO_DATE"].as_i64(),
                by_state["IN_ERROR"].as_i64(),
                by_state["DISABLED"].as_i64()
            ),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(after["statistics"]["numberOfEntitiesInError"], 1);
        assert_eq!(after["currentStatus"]["numberOfEntitiesInError"], 1);
        assert_eq!(
            after["lastRefreshOperation"]["numberOfEntitiesProcessed"],
            3
        );
        assert_eq!(
            after["lastRefreshOperation"]["result"],
            "COMPLETED_WITH_ERRORS"
        );
        let members = h.get("/securitycache/entities/p/members").await.body;
        let c = members["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "c")
            .unwrap()
            .clone();
        assert_eq!(c["state"], "IN_ERROR");
        assert_eq!(h.sim.request_count_for("PUT", "push_mapping"), 3);
        assert_eq!(h.sim.request_count_for("DELETE", "disable_identity"), 1);
    }

    #[tokio::test]
    async fn sensitive_values_and_passwords_are_masked_on_read_and_kept_when_sent_back() {
        let h = Api::start().await;
        let mut body = expanded("c");
        body["type"] = json!("DATABASE");
        body["parameters"] = json!({"host": {"value": "db", "sensitive": false}, "token": {"value": "s3cret", "sensitive": true}});
        body["userIdentities"] =
            json!({"svc": {"name": "svc", "userName": "crawler", "password": "pa55"}});
        h.create(body.clone()).await;
        let read = h.get(&provider_path("c")).await.body;
        assert_eq!(
            read["parameters"]["token"],
            json!({"value": MASK_FOR_TESTS, "sensitive": true})
        );
        assert_eq!(read["parameters"]["host"]["value"], "db");
        assert_eq!(
            read["userIdentities"]["svc"],
            json!({"name": "svc", "userName": "crawler", "password": MASK_FOR_TESTS})
        );
        assert!(!read.to_string().contains("s3cret") && !read.to_string().contains("pa55"));
        // Sending back what was read keeps the secrets; a new value replaces them.
        assert_eq!(
            h.put(&provider_path("c"), read).await.status,
            StatusCode::OK
        );
        let secrets = h.sim.secret_values("c").unwrap();
        assert_eq!(secrets["parameters.token"], "s3cret");
        assert_eq!(secrets["userIdentities.svc"], "pa55");
        body["parameters"]["token"]["value"] = json!("rotated");
        assert_eq!(
            h.put(&provider_path("c"), body).await.status,
            StatusCode::OK
        );
        assert_eq!(
            h.sim.secret_values("c").unwrap()["parameters.token"],
            "rotated"
        );
    }

    #[tokio::test]
    async fn providers_have_the_console_default_schedules_and_accept_schedule_puts() {
        let h = Api::start().await;
        h.create_expanded("s").await;
        let schedules = h.get("/securityproviders/s/schedules").await.body;
        let list = schedules.as_array().expect("an array");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["refreshType"], "SECURITY_PROVIDER_REFRESH");
        assert_eq!(list[0]["frequency"]["type"], "DAILY");
        assert_eq!(
            list[0]["frequency"]["hourMinute"],
            json!({"hour": 4, "minute": 0})
        );
        assert_eq!(
            list[1]["refreshType"],
            "SECURITY_PROVIDER_REFRESH_ENTITIES_IN_ERROR"
        );
        let id = list[0]["id"].as_str().unwrap().to_owned();
        let weekly = json!({"refreshType": "SECURITY_PROVIDER_REFRESH", "enabled": true,
            "frequency": {"type": "WEEKLY", "weekDays": ["SUNDAY"], "hourMinute": {"hour": 1, "minute": 15}}});
        let reply = h
            .put(&format!("/securityproviders/s/schedules/{id}"), weekly)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["frequency"]["weekDays"], json!(["SUNDAY"]));
        let bad = json!({"frequency": {"type": "DAILY", "hourMinute": {"hour": 25, "minute": 0}}});
        assert_error(
            &h.put(&format!("/securityproviders/s/schedules/{id}"), bad)
                .await,
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER",
        );
        let ok = json!({"frequency": {"type": "DAILY", "hourMinute": {"hour": 3, "minute": 0}}});
        assert_error(
            &h.put("/securityproviders/s/schedules/nope", ok).await,
            StatusCode::NOT_FOUND,
            "SCHEDULE_NOT_FOUND",
        );
        assert!(
            h.sim
                .mutate_schedule("s", "SECURITY_PROVIDER_REFRESH", |s| s["enabled"] =
                    json!(false))
        );
        assert_eq!(h.sim.schedules("s").unwrap()[0]["enabled"], false);
        assert_eq!(h.sim.request_count_for("GET", "schedules"), 1);
        assert_eq!(h.sim.request_count_for("PUT", "update_schedule"), 3);
    }

    #[test]
    fn organization_cluster_id_is_deterministic_and_seed_shaped() {
        let id = organization_cluster_id(ORG);
        assert_eq!(id, organization_cluster_id(ORG));
        assert_ne!(id, organization_cluster_id("otherorg"));
        assert_eq!(id.len(), ORG.len() + 1 + 26);
    }

    #[test]
    fn requests_are_classified_by_operation() {
        let base = "/rest/organizations/o";
        let cases = [
            (Method::GET, "/securityproviders", "list"),
            (Method::POST, "/securityproviders", "create"),
            (Method::GET, "/securityproviders/page", "page"),
            (
                Method::POST,
                "/securityproviders/batch/filter",
                "batch_filter",
            ),
            (Method::GET, "/securityproviders/a%20b", "get"),
            (Method::PUT, "/securityproviders/a", "update"),
            (Method::DELETE, "/securityproviders/a", "delete"),
            (Method::POST, "/securitycache/a/refresh", "refresh"),
            (Method::POST, "/securitycache/refresh", "refresh_all"),
            (
                Method::POST,
                "/securitycache/a/refresh/cancel",
                "cancel_refresh",
            ),
            (Method::GET, "/securitycache/status", "status"),
            (Method::PATCH, "/securityproviders/a", "other"),
        ];
        for (method, suffix, operation) in cases {
            assert_eq!(
                classify(&method, &format!("{base}{suffix}")),
                operation,
                "{method} {suffix}"
            );
        }
    }
}
