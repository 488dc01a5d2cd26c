//! A simulator of OpenStack Keystone's token API and OS-FEDERATION identity providers
//! (reference `remote-apis.md` §2, seed 004), optionally answering errors in Open Telekom
//! Cloud's `{"error_code","error_msg"}` shape.
//!
//! # Endpoints
//!
//! | Method | Path | Result |
//! |---|---|---|
//! | POST | `/v3/auth/tokens` | 201, token in `X-Subject-Token`, body `token.expires_at` |
//! | GET | `/v3/OS-FEDERATION/identity_providers?id=&enabled=` | `{identity_providers, links}` |
//! | PUT | `/v3/OS-FEDERATION/identity_providers/{id}` | create → 201 `{identity_provider}` |
//! | GET | `/v3/OS-FEDERATION/identity_providers/{id}` | 200 `{identity_provider}` |
//! | PATCH | `/v3/OS-FEDERATION/identity_providers/{id}` | 200 `{identity_provider}` |
//! | DELETE | `/v3/OS-FEDERATION/identity_providers/{id}` | 204, and its protocols (cascade) |
//! | GET | `/v3/OS-FEDERATION/identity_providers/{id}/protocols` | `{protocols, links}` |
//! | PUT | `/v3/OS-FEDERATION/identity_providers/{id}/protocols/{p}` | create → 201 `{protocol}` |
//! | GET / PATCH | `/v3/OS-FEDERATION/identity_providers/{id}/protocols/{p}` | 200 `{protocol}` |
//! | DELETE | `/v3/OS-FEDERATION/identity_providers/{id}/protocols/{p}` | 204 |
//! | GET | `/v3/OS-FEDERATION/mappings` | `{mappings, links}` |
//! | PUT | `/v3/OS-FEDERATION/mappings/{id}` | create → 201 `{mapping}` |
//! | GET / PATCH | `/v3/OS-FEDERATION/mappings/{id}` | 200 `{mapping}` |
//! | DELETE | `/v3/OS-FEDERATION/mappings/{id}` | 204 |
//!
//! Unauthenticated control endpoints (never counted), shared by every simulator (see
//! `harness.rs`): `GET /_sim/stats`, `POST /_sim/reset`, `GET`/`POST /_sim/faults`.
//!
//! # Behaviour
//!
//! * Tokens: `password` (user name, user domain name or id, password) and
//!   `application_credential` (id, secret) methods. Wrong credentials → 401. An application
//!   credential with an explicit `scope` → 401, as Keystone refuses it. Tokens live for
//!   `token_ttl`; an unknown, revoked or expired `X-Auth-Token` → 401 with
//!   `WWW-Authenticate: Keystone uri="…/v3"`.
//! * Create (PUT): the body must be `{"identity_provider":{…}}` with only `description`,
//!   `enabled` (default **false**), `remote_ids` (unique, ≤ 64 chars each), `authorization_ttl`
//!   (≥ 0) and `domain_id` (a generated domain id when omitted); anything else → 400. Ids over
//!   64 chars → 400. Existing id → 409 "Duplicate entry"; a remote id used by another provider
//!   → 409 "Duplicate remote ID".
//! * PATCH: the same fields except `domain_id` (→ 400); an empty object → 400; remote id
//!   conflicts → 409. Every PATCH body received is recorded ([`KeystoneSimulator::patch_bodies`]).
//! * Unknown provider → 404 `Could not find Identity Provider: <id>.`
//! * Mappings: the body must be `{"mapping":{"rules":[…]}}`, each rule an object with only
//!   `local` (array of objects) and `remote` (non-empty array of objects, each with a `type`);
//!   otherwise 400 `Invalid input for field 'rules/<i>/…': …` (Keystone's schema-validation
//!   message shape; the exact text of a real deployment may differ). Existing id on PUT → 409
//!   `Conflict occurred attempting to store mapping - Duplicate entry.`; unknown →
//!   404 `Could not find mapping: <id>.`
//! * Protocols: the body must be `{"protocol":{"mapping_id":…}}` naming an existing mapping
//!   (else 400 / 404 `Could not find mapping: <id>.`); existing on PUT → 409; unknown → 404
//!   `Could not find federated protocol <p> for Identity Provider: <idp>.`; an unknown
//!   provider → 404 as above. Deleting a provider deletes its protocols, not the mappings.
//! * Every write (PUT, PATCH, DELETE) of a provider, protocol or mapping is logged in order
//!   ([`KeystoneSimulator::write_log`]), e.g. `DELETE protocol acme/saml2`.
//! * Errors: `{"error":{"code","title","message"}}`, or with `otc_errors`
//!   `{"error_code":"IAM.xxxx","error_msg"}` (IAM.0001 401, IAM.0003 403, IAM.0004 404,
//!   IAM.0005 409, IAM.0012 429; IAM.0011 for 400 is our assumption).
//! * Throttling: [`KeystoneSimulator::throttle_next`] makes the next N requests answer 429
//!   (IAM.0012 in the OTC shape) with `Retry-After: 1`.
//! * Counters count requests under `/v3` by method and operation: `authenticate`, `list`,
//!   `get`, `create`, `update`, `delete`, `other`, and for protocols and mappings
//!   `protocol-list`, `protocol-get`, `protocol-create`, `protocol-update`, `protocol-delete`,
//!   `mapping-list`, `mapping-get`, `mapping-create`, `mapping-update`, `mapping-delete`.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::faults::{FaultConfig, Faults};
use super::harness::{ApiShape, Harness, json_response};
use super::{ServerHandle, lock, new_request_id};

mod federation;

const FEDERATION_PREFIX: &str = "/v3/OS-FEDERATION/identity_providers";
const MAPPINGS_PREFIX: &str = "/v3/OS-FEDERATION/mappings";

static SHAPE: ApiShape = ApiShape {
    name: "keystone",
    prefix: "/v3",
    other_prefixes: &[],
    classify,
    request_id_header: "x-openstack-request-id",
    request_id_prefix: "req-",
};
/// Longest identity provider id and remote id (Keystone's DB column and request schema).
const MAX_ID_LEN: usize = 64;

/// Configuration of a simulated Keystone.
#[derive(Clone, Debug)]
pub struct KeystoneSimConfig {
    pub user_name: String,
    pub user_domain_name: String,
    pub password: String,
    pub application_credential_id: String,
    pub application_credential_secret: String,
    /// Lifetime of issued tokens. Default 1 h (Keystone's default).
    pub token_ttl: Duration,
    /// Answer errors in OTC's `{"error_code","error_msg"}` shape.
    pub otc_errors: bool,
    /// Added to every `/v3` request.
    pub latency: Duration,
    /// Faults injected from the start (changeable at run time through
    /// [`KeystoneSimulator::faults`] or `POST /_sim/faults`). Default none.
    pub faults: FaultConfig,
}

impl Default for KeystoneSimConfig {
    fn default() -> Self {
        KeystoneSimConfig {
            user_name: "admin".into(),
            user_domain_name: "Default".into(),
            password: "simulated-password".into(),
            application_credential_id: "simulated-application-credential".into(),
            application_credential_secret: "simulated-application-credential-secret".into(),
            token_ttl: Duration::from_secs(3600),
            otc_errors: false,
            latency: Duration::ZERO,
            faults: FaultConfig::default(),
        }
    }
}

/// One identity provider as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SimIdentityProvider {
    pub id: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub remote_ids: Vec<String>,
    pub authorization_ttl: Option<i64>,
    pub domain_id: String,
}

impl SimIdentityProvider {
    /// A provider as a create without a body would make it.
    pub fn new(id: &str) -> Self {
        SimIdentityProvider {
            id: id.into(),
            description: None,
            enabled: false,
            remote_ids: vec![],
            authorization_ttl: None,
            domain_id: new_request_id().replace('-', ""),
        }
    }

    fn view(&self, base: &str) -> Value {
        let this = format!("{base}{FEDERATION_PREFIX}/{}", encode(&self.id));
        json!({
            "id": self.id,
            "description": self.description,
            "enabled": self.enabled,
            "remote_ids": self.remote_ids,
            "authorization_ttl": self.authorization_ttl,
            "domain_id": self.domain_id,
            "links": {"self": this, "protocols": format!("{this}/protocols")},
        })
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[derive(Default)]
struct Store {
    idps: BTreeMap<String, SimIdentityProvider>,
    /// token -> expiry.
    tokens: HashMap<String, Instant>,
    throttle_remaining: u32,
    patch_bodies: Vec<Value>,
    /// Mapping id -> rules.
    mappings: BTreeMap<String, Value>,
    /// (provider id, protocol id) -> mapping id.
    protocols: BTreeMap<(String, String), String>,
    /// `METHOD kind id` of every write, in order.
    write_log: Vec<String>,
}

struct SimState {
    config: KeystoneSimConfig,
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
        lock(&self.store)
    }

    /// An error response in the configured shape.
    fn error(&self, status: StatusCode, message: impl Into<String>) -> Response {
        error_response(self.config.otc_errors, status, &message.into())
    }
}

/// An error response in Keystone's shape, or OTC's with `otc_errors`.
fn error_response(otc_errors: bool, status: StatusCode, message: &str) -> Response {
    let body = if otc_errors {
        let code = match status.as_u16() {
            401 => "IAM.0001",
            403 => "IAM.0003",
            404 => "IAM.0004",
            409 => "IAM.0005",
            429 => "IAM.0012",
            500..=599 => "IAM.0006",
            _ => "IAM.0011",
        };
        json!({"error_code": code, "error_msg": message})
    } else {
        json!({"error": {
            "code": status.as_u16(),
            "title": status.canonical_reason().unwrap_or("Error"),
            "message": message,
        }})
    };
    json_response(status, &body)
}

type Shared = Arc<SimState>;

// ---------------------------------------------------------------------------------------------
// Public handle

/// A running simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct KeystoneSimulator {
    sim: Shared,
    server: Arc<ServerHandle>,
}

impl std::fmt::Debug for KeystoneSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneSimulator")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl KeystoneSimulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: KeystoneSimConfig) -> std::io::Result<Self> {
        let otc_errors = config.otc_errors;
        let faults = Faults::with_error_body(
            config.faults.clone(),
            Arc::new(move |status, _code, message| error_response(otc_errors, status, message)),
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

    /// `http://HOST:PORT`, no trailing slash (the auth URL is this plus `/v3`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn config(&self) -> &KeystoneSimConfig {
        &self.sim.config
    }

    /// API requests (under `/v3`) with this HTTP method.
    pub fn request_count(&self, method: &str) -> u64 {
        self.sim.harness.counters.count(method)
    }

    /// API requests with this method and operation.
    pub fn request_count_for(&self, method: &str, operation: &str) -> u64 {
        self.sim.harness.counters.count_for(method, operation)
    }

    /// API requests for this operation (`authenticate`, `get`, `create`, ...).
    pub fn operation_count(&self, operation: &str) -> u64 {
        self.sim.harness.counters.count_operation(operation)
    }

    pub fn reset_counters(&self) {
        self.sim.harness.counters.reset();
    }

    /// The provider as `GET …/identity_providers/{id}` returns its `identity_provider`.
    pub fn identity_provider(&self, id: &str) -> Option<Value> {
        let base = self.base_url();
        self.sim.store().idps.get(id).map(|i| i.view(&base))
    }

    /// Ids of every provider, in id order.
    pub fn identity_provider_ids(&self) -> Vec<String> {
        self.sim.store().idps.keys().cloned().collect()
    }

    /// Adds or replaces a provider directly (as another admin would).
    pub fn insert_identity_provider(&self, idp: SimIdentityProvider) {
        self.sim.store().idps.insert(idp.id.clone(), idp);
    }

    /// Edits a provider directly (drift). Returns false when it does not exist.
    pub fn mutate_identity_provider(
        &self,
        id: &str,
        edit: impl FnOnce(&mut SimIdentityProvider),
    ) -> bool {
        match self.sim.store().idps.get_mut(id) {
            Some(idp) => {
                edit(idp);
                true
            }
            None => false,
        }
    }

    /// The rules of mapping `id`.
    pub fn mapping(&self, id: &str) -> Option<Value> {
        self.sim.store().mappings.get(id).cloned()
    }

    /// Adds or replaces a mapping directly (as another admin would, or as drift).
    pub fn insert_mapping(&self, id: &str, rules: Value) {
        self.sim.store().mappings.insert(id.to_owned(), rules);
    }

    /// Ids of every mapping, in id order.
    pub fn mapping_ids(&self) -> Vec<String> {
        self.sim.store().mappings.keys().cloned().collect()
    }

    /// The mapping id protocol `protocol` of provider `idp` is bound to.
    pub fn protocol(&self, idp: &str, protocol: &str) -> Option<String> {
        let key = (idp.to_owned(), protocol.to_owned());
        self.sim.store().protocols.get(&key).cloned()
    }

    /// Adds a protocol or binds it to another mapping directly (as drift).
    pub fn insert_protocol(&self, idp: &str, protocol: &str, mapping_id: &str) {
        let key = (idp.to_owned(), protocol.to_owned());
        self.sim
            .store()
            .protocols
            .insert(key, mapping_id.to_owned());
    }

    /// Every write (PUT, PATCH, DELETE) of a provider, protocol or mapping, in order, as
    /// `METHOD identity_provider <id>`, `METHOD protocol <idp>/<p>`, `METHOD mapping <id>`.
    pub fn write_log(&self) -> Vec<String> {
        self.sim.store().write_log.clone()
    }

    /// Every PATCH body received, in order.
    pub fn patch_bodies(&self) -> Vec<Value> {
        self.sim.store().patch_bodies.clone()
    }

    /// Revokes every issued token (the next API call gets 401).
    pub fn revoke_tokens(&self) {
        self.sim.store().tokens.clear();
    }

    /// Tokens currently valid.
    pub fn valid_token_count(&self) -> usize {
        let now = Instant::now();
        self.sim
            .store()
            .tokens
            .values()
            .filter(|e| **e > now)
            .count()
    }

    /// Makes the next `requests` API requests fail with 429 (IAM.0012 in the OTC shape).
    pub fn throttle_next(&self, requests: u32) {
        self.sim.store().throttle_remaining = requests;
    }

    /// The live fault settings and counters (see [`super::faults`]).
    pub fn faults(&self) -> Faults {
        self.sim.harness.faults.clone()
    }

    /// Creates that were applied, including those whose response a fault then lost.
    pub fn committed_creates(&self) -> u64 {
        self.sim.committed_creates.load(Ordering::SeqCst)
    }

    /// Creates refused with 409 because the provider already existed.
    pub fn create_conflicts(&self) -> u64 {
        self.sim.create_conflicts.load(Ordering::SeqCst)
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Runs a simulator until Ctrl-C or SIGTERM, printing
/// `keystone simulator listening on http://HOST:PORT` once it accepts connections.
pub async fn run_standalone(listen: SocketAddr, config: KeystoneSimConfig) -> anyhow::Result<()> {
    let started = KeystoneSimulator::start(listen, config).await;
    super::harness::serve_until_signal(&SHAPE, listen, started.map(|sim| sim.server)).await
}

// ---------------------------------------------------------------------------------------------
// Router and middleware

fn build_router(sim: Shared) -> Router {
    let api = Router::new()
        .route("/v3/auth/tokens", post(issue_token))
        .route(FEDERATION_PREFIX, get(list_idps))
        .route(
            &format!("{FEDERATION_PREFIX}/{{id}}"),
            get(get_idp)
                .put(create_idp)
                .patch(update_idp)
                .delete(delete_idp),
        )
        .route(
            &format!("{FEDERATION_PREFIX}/{{id}}/protocols"),
            get(federation::list_protocols),
        )
        .route(
            &format!("{FEDERATION_PREFIX}/{{id}}/protocols/{{protocol}}"),
            get(federation::get_protocol)
                .put(federation::create_protocol)
                .patch(federation::update_protocol)
                .delete(federation::delete_protocol),
        )
        .route(MAPPINGS_PREFIX, get(federation::list_mappings))
        .route(
            &format!("{MAPPINGS_PREFIX}/{{id}}"),
            get(federation::get_mapping)
                .put(federation::create_mapping)
                .patch(federation::update_mapping)
                .delete(federation::delete_mapping),
        )
        .fallback(not_found_route)
        .layer(from_fn_with_state(sim.clone(), check_token))
        .layer(from_fn_with_state(sim.clone(), throttle))
        .with_state(sim.clone());
    let providers = {
        let sim = sim.clone();
        move || sim.store().idps.len()
    };
    sim.harness.router(api, providers)
}

fn classify(method: &Method, path: &str) -> &'static str {
    if path == "/v3/auth/tokens" {
        return if method == Method::POST {
            "authenticate"
        } else {
            "other"
        };
    }
    if let Some(rest) = path.strip_prefix(MAPPINGS_PREFIX) {
        return federation::classify_mapping(method, rest);
    }
    let Some(rest) = path.strip_prefix(FEDERATION_PREFIX) else {
        return "other";
    };
    if let Some(kind) = federation::classify_protocol(method, rest) {
        return kind;
    }
    let one = rest.len() > 1 && rest.starts_with('/') && !rest[1..].contains('/');
    match (method.as_str(), rest.is_empty() || rest == "/", one) {
        ("GET", true, _) => "list",
        ("GET", _, true) => "get",
        ("PUT", _, true) => "create",
        ("PATCH", _, true) => "update",
        ("DELETE", _, true) => "delete",
        _ => "other",
    }
}

async fn throttle(State(sim): State<Shared>, request: Request, next: Next) -> Response {
    let throttled = {
        let mut store = sim.store();
        if store.throttle_remaining > 0 && request.uri().path().starts_with("/v3") {
            store.throttle_remaining -= 1;
            true
        } else {
            false
        }
    };
    if throttled {
        let mut response = sim.error(
            StatusCode::TOO_MANY_REQUESTS,
            "The throttling threshold has been reached. Threshold: 10 times per 1 seconds",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    next.run(request).await
}

/// 401 without a valid `X-Auth-Token` on every path but the token endpoint.
async fn check_token(State(sim): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/v3") || path == "/v3/auth/tokens" {
        return next.run(request).await;
    }
    let valid = request
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| {
            sim.store()
                .tokens
                .get(token)
                .is_some_and(|expiry| *expiry > Instant::now())
        });
    if valid {
        return next.run(request).await;
    }
    let host = host_of(request.headers());
    let mut response = sim.error(
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
    );
    if let Ok(value) = HeaderValue::from_str(&format!("Keystone uri=\"{host}/v3\"")) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn host_of(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

// ---------------------------------------------------------------------------------------------
// Handlers

type Reply = Result<Response, Response>;

fn parse_json(sim: &SimState, body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        sim.error(
            StatusCode::BAD_REQUEST,
            format!("Expecting to find valid JSON in request body: {e}"),
        )
    })
}

async fn issue_token(State(sim): State<Shared>, body: Bytes) -> Reply {
    let body = parse_json(&sim, &body)?;
    let unauthorized = || {
        sim.error(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
    };
    let identity = &body["auth"]["identity"];
    let methods: Vec<&str> = identity["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let config = &sim.config;
    let accepted = match methods.as_slice() {
        ["password"] => {
            let user = &identity["password"]["user"];
            let domain_ok = user["domain"]["name"].as_str() == Some(&config.user_domain_name)
                || user["domain"]["id"].as_str() == Some("default")
                    && config.user_domain_name == "Default";
            user["name"].as_str() == Some(&config.user_name)
                && domain_ok
                && user["password"].as_str() == Some(&config.password)
        }
        ["application_credential"] => {
            let credential = &identity["application_credential"];
            if body["auth"].get("scope").is_some() {
                return Err(unauthorized());
            }
            credential["id"].as_str() == Some(&config.application_credential_id)
                && credential["secret"].as_str() == Some(&config.application_credential_secret)
        }
        _ => {
            return Err(sim.error(
                StatusCode::BAD_REQUEST,
                "Invalid input for field 'identity': expected methods [\"password\"] or [\"application_credential\"]",
            ));
        }
    };
    if !accepted {
        return Err(unauthorized());
    }
    let token = format!("gAAAAAB{}", new_request_id().replace('-', ""));
    let now = jiff::Timestamp::now();
    let lifetime = jiff::SignedDuration::try_from(config.token_ttl).unwrap_or_default();
    let expires_at = now.checked_add(lifetime).unwrap_or(now);
    sim.store()
        .tokens
        .insert(token.clone(), Instant::now() + config.token_ttl);
    let body = json!({"token": {
        "methods": methods,
        "issued_at": now.to_string(),
        "expires_at": expires_at.to_string(),
        "user": {"name": config.user_name, "domain": {"name": config.user_domain_name}},
    }});
    let mut response = json_response(StatusCode::CREATED, &body);
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    Ok(response)
}

async fn list_idps(
    State(sim): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Reply {
    let mut id_filter = None;
    let mut enabled_filter = None;
    for (key, value) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "id" => id_filter = Some(value.into_owned()),
            "enabled" => enabled_filter = Some(matches!(value.as_ref(), "true" | "True" | "1")),
            _ => {}
        }
    }
    let base = host_of(&headers);
    let store = sim.store();
    let items: Vec<Value> = store
        .idps
        .values()
        .filter(|i| id_filter.as_ref().is_none_or(|id| &i.id == id))
        .filter(|i| enabled_filter.is_none_or(|e| i.enabled == e))
        .map(|i| i.view(&base))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "identity_providers": items,
            "links": {"self": format!("{base}{FEDERATION_PREFIX}"), "next": null, "previous": null},
        }),
    ))
}

fn not_found(sim: &SimState, id: &str) -> Response {
    sim.error(
        StatusCode::NOT_FOUND,
        format!("Could not find Identity Provider: {id}."),
    )
}

async fn get_idp(State(sim): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let store = sim.store();
    let idp = store.idps.get(&id).ok_or_else(|| not_found(&sim, &id))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"identity_provider": idp.view(&host_of(&headers))}),
    ))
}

/// Validates the `identity_provider` object of a create or update against Keystone's schema.
fn validated_fields(
    sim: &SimState,
    body: &Value,
    create: bool,
) -> Result<Map<String, Value>, Response> {
    let bad = |message: String| sim.error(StatusCode::BAD_REQUEST, message);
    let idp = body
        .get("identity_provider")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad("Invalid input for field 'identity_provider': 'identity_provider' is a required property".into())
        })?;
    for (key, value) in idp {
        let ok = match key.as_str() {
            "description" => value.is_string() || value.is_null(),
            "enabled" => value.is_boolean(),
            "authorization_ttl" => value.is_null() || value.as_i64().is_some_and(|v| v >= 0),
            "domain_id" if create => value.is_string() || value.is_null(),
            "domain_id" => {
                return Err(bad(
                    "Invalid input for field 'identity_provider': Additional properties are not allowed ('domain_id' was unexpected)".into(),
                ));
            }
            "remote_ids" => match value {
                Value::Null => true,
                Value::Array(ids) => {
                    let strings: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
                    let mut unique = strings.clone();
                    unique.sort();
                    unique.dedup();
                    strings.len() == ids.len()
                        && unique.len() == strings.len()
                        && strings.iter().all(|s| s.chars().count() <= MAX_ID_LEN)
                }
                _ => false,
            },
            other => {
                return Err(bad(format!(
                    "Invalid input for field 'identity_provider': Additional properties are not allowed ('{other}' was unexpected)"
                )));
            }
        };
        if !ok {
            return Err(bad(format!(
                "Invalid input for field 'identity_provider/{key}': {value} is not valid"
            )));
        }
    }
    if !create && idp.is_empty() {
        return Err(bad(
            "Invalid input for field 'identity_provider': {} does not have enough properties"
                .into(),
        ));
    }
    Ok(idp.clone())
}

fn remote_id_conflict(store: &Store, id: &str, remote_ids: &[String]) -> Option<String> {
    remote_ids.iter().find_map(|r| {
        store
            .idps
            .values()
            .any(|other| other.id != id && other.remote_ids.contains(r))
            .then(|| r.clone())
    })
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn create_idp(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    if id.chars().count() > MAX_ID_LEN {
        return Err(sim.error(
            StatusCode::BAD_REQUEST,
            format!("Invalid input for field 'idp_id': '{id}' is too long"),
        ));
    }
    let body = parse_json(&sim, &body)?;
    let fields = validated_fields(&sim, &body, true)?;
    let mut store = sim.store();
    if store.idps.contains_key(&id) {
        sim.create_conflicts.fetch_add(1, Ordering::SeqCst);
        return Err(sim.error(
            StatusCode::CONFLICT,
            "Conflict occurred attempting to store identity_provider - Duplicate entry.",
        ));
    }
    let mut idp = SimIdentityProvider::new(&id);
    apply_fields(&mut idp, &fields);
    if let Some(domain) = fields.get("domain_id").and_then(Value::as_str) {
        idp.domain_id = domain.to_owned();
    }
    if let Some(taken) = remote_id_conflict(&store, &id, &idp.remote_ids) {
        return Err(sim.error(
            StatusCode::CONFLICT,
            format!("Conflict occurred attempting to store identity_provider - Duplicate remote ID: {taken}"),
        ));
    }
    let view = idp.view(&host_of(&headers));
    store.write_log.push(format!("PUT identity_provider {id}"));
    store.idps.insert(id, idp);
    sim.committed_creates.fetch_add(1, Ordering::SeqCst);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "identity_provider": view }),
    ))
}

fn apply_fields(idp: &mut SimIdentityProvider, fields: &Map<String, Value>) {
    if let Some(d) = fields.get("description") {
        idp.description = d.as_str().map(str::to_owned);
    }
    if let Some(e) = fields.get("enabled").and_then(Value::as_bool) {
        idp.enabled = e;
    }
    if let Some(r) = fields.get("remote_ids") {
        idp.remote_ids = string_list(r);
    }
    if let Some(t) = fields.get("authorization_ttl") {
        idp.authorization_ttl = t.as_i64();
    }
}

async fn update_idp(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let body = parse_json(&sim, &body)?;
    sim.store().patch_bodies.push(body.clone());
    let fields = validated_fields(&sim, &body, false)?;
    let mut store = sim.store();
    let mut idp = store
        .idps
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found(&sim, &id))?;
    apply_fields(&mut idp, &fields);
    if let Some(taken) = remote_id_conflict(&store, &id, &idp.remote_ids) {
        return Err(sim.error(
            StatusCode::CONFLICT,
            format!("Conflict occurred attempting to store identity_provider - Duplicate remote ID: {taken}"),
        ));
    }
    let view = idp.view(&host_of(&headers));
    store
        .write_log
        .push(format!("PATCH identity_provider {id}"));
    store.idps.insert(id, idp);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "identity_provider": view }),
    ))
}

/// Deletes the provider and, as Keystone's `ondelete=CASCADE` does, its protocols.
async fn delete_idp(State(sim): State<Shared>, Path(id): Path<String>) -> Reply {
    let mut store = sim.store();
    match store.idps.remove(&id) {
        Some(_) => {
            store.protocols.retain(|(idp, _), _| idp != &id);
            store
                .write_log
                .push(format!("DELETE identity_provider {id}"));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(not_found(&sim, &id)),
    }
}

async fn not_found_route(
    State(sim): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    sim.error(
        StatusCode::NOT_FOUND,
        format!("The resource could not be found: {method} {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    async fn start(adjust: impl FnOnce(&mut KeystoneSimConfig)) -> KeystoneSimulator {
        let mut config = KeystoneSimConfig::default();
        adjust(&mut config);
        KeystoneSimulator::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn missing_token_is_401_with_www_authenticate() {
        let sim = start(|_| {}).await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::get(format!("{}{FEDERATION_PREFIX}", sim.base_url()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Keystone uri="), "{challenge}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], 401);
        assert_eq!(body["error"]["title"], "Unauthorized");
    }

    #[test]
    fn requests_are_classified() {
        assert_eq!(classify(&Method::POST, "/v3/auth/tokens"), "authenticate");
        assert_eq!(classify(&Method::GET, FEDERATION_PREFIX), "list");
        let one = format!("{FEDERATION_PREFIX}/acme");
        assert_eq!(classify(&Method::GET, &one), "get");
        assert_eq!(classify(&Method::PUT, &one), "create");
        assert_eq!(classify(&Method::PATCH, &one), "update");
        assert_eq!(classify(&Method::DELETE, &one), "delete");
        assert_eq!(
            classify(&Method::GET, &format!("{one}/protocols")),
            "protocol-list"
        );
        assert_eq!(
            classify(&Method::PATCH, &format!("{one}/protocols/saml2")),
            "protocol-update"
        );
        assert_eq!(
            classify(&Method::PUT, &format!("{MAPPINGS_PREFIX}/m")),
            "mapping-create"
        );
        assert_eq!(classify(&Method::GET, MAPPINGS_PREFIX), "mapping-list");
    }
}
