//! Hostile remotes, for the operator's security tests: an endpoint that redirects elsewhere,
//! a recorder that keeps everything it receives (the redirect target), a body that never ends,
//! and pagination that never ends, in the shape of each backend.
//!
//! Unlike the simulators these do not model an API; each answers every request the same
//! hostile way, and records what it was sent.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ServerHandle, lock};

/// How the hostile server answers.
#[derive(Clone, Debug)]
pub enum HostileMode {
    /// `307 Temporary Redirect` to `target` + the request's path and query. With
    /// `issue_tokens`, Keystone token requests are answered with a token first, so the
    /// redirect meets a request that carries the token instead of the password.
    RedirectTo { target: String, issue_tokens: bool },
    /// `200` with an empty JSON object (a recorder that looks healthy); Keystone token
    /// requests also get an `X-Subject-Token`.
    Record,
    /// `200` whose chunked JSON body never ends (a list whose items keep coming). Keystone
    /// token requests succeed, so the endless body is reached on an API call.
    EndlessBody,
    /// Lists that never end, in the shape of each backend; any other request is answered as
    /// [`HostileMode::Record`] would.
    EndlessPages,
    /// Accepts every request and never answers.
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ReceivedRequest {
    /// Whether `secret` appears anywhere in the request (path, headers or body).
    pub fn contains(&self, secret: &str) -> bool {
        self.path_and_query.contains(secret)
            || self.body.contains(secret)
            || self
                .headers
                .iter()
                .any(|(n, v)| n.contains(secret) || v.contains(secret))
    }
}

struct HostileState {
    mode: HostileMode,
    received: Mutex<Vec<ReceivedRequest>>,
    pages_served: AtomicU64,
}

/// A running hostile server.
pub struct HostileServer {
    state: Arc<HostileState>,
    server: ServerHandle,
}

/// The token a hostile server hands out on `POST .../auth/tokens`.
pub const HOSTILE_TOKEN: &str = "hostile-token-issued-by-the-endpoint";

impl HostileServer {
    /// Binds `addr` (e.g. `127.0.0.2:0`) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, mode: HostileMode) -> std::io::Result<Self> {
        let state = Arc::new(HostileState {
            mode,
            received: Mutex::new(Vec::new()),
            pages_served: AtomicU64::new(0),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = ServerHandle::spawn(addr, router).await?;
        Ok(HostileServer { state, server })
    }

    /// `http://HOST:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.received).clone()
    }

    /// List pages served by [`HostileMode::EndlessPages`].
    pub fn pages_served(&self) -> u64 {
        self.state.pages_served.load(Ordering::SeqCst)
    }

    /// Stops the server.
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

async fn handle(State(state): State<Arc<HostileState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    lock(&state.received).push(ReceivedRequest {
        method: parts.method.to_string(),
        path_and_query: path_and_query.clone(),
        headers: header_list(&parts.headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let is_token_request = parts.uri.path().ends_with("/auth/tokens");
    match &state.mode {
        HostileMode::RedirectTo {
            issue_tokens: true, ..
        } if is_token_request => token_response(),
        HostileMode::RedirectTo { target, .. } => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("{target}{path_and_query}"))],
        )
            .into_response(),
        HostileMode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        _ if is_token_request => token_response(),
        HostileMode::Record => axum::Json(json!({})).into_response(),
        HostileMode::EndlessBody => endless_body(),
        HostileMode::EndlessPages => endless_page(&state, parts.uri.path(), &path_and_query),
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn token_response() -> Response {
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    (
        StatusCode::CREATED,
        [("x-subject-token", HOSTILE_TOKEN)],
        axum::Json(json!({"token": {"expires_at": expires.to_string()}})),
    )
        .into_response()
}

/// `{"items":[{...},{...},...` forever, in 64 KiB chunks.
fn endless_body() -> Response {
    let item = r#"{"id":"x","name":"x","identity_providers":[],"data":[]},"#;
    let chunk = Bytes::from(item.repeat(65536 / item.len()));
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(b"{\"items\":["))
    });
    let tail = futures::stream::repeat_with(move || Ok(chunk.clone()));
    let body = Body::from_stream(futures::StreamExt::chain(head, tail));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A full page with fresh ids, and a pointer to a next page, whatever was asked.
fn endless_page(state: &HostileState, path: &str, path_and_query: &str) -> Response {
    let n = state.pages_served.fetch_add(1, Ordering::SeqCst);
    let ids = |count: u64| (0..count).map(move |i| format!("p{n}-{i}"));
    let page = if path.contains("/securityproviders") {
        // Coveo: full pages, no totalPages, so only a short page would end the list.
        let items: Vec<_> = ids(100)
            .map(|id| json!({"id": id, "type": "EXPANDED"}))
            .collect();
        json!({"items": items})
    } else if path.contains("/identity-providers") {
        // JITSudo: always more, always a new cursor.
        let data: Vec<_> = ids(2)
            .map(|id| json!({"id": id, "name": id, "provider_type": "oidc"}))
            .collect();
        json!({"data": data, "has_more": true, "next_cursor": format!("c{n}")})
    } else {
        // Keystone: links.next on the same origin, always a new marker.
        let idps: Vec<_> = ids(2).map(|id| json!({"id": id})).collect();
        let path_only = path_and_query.split('?').next().unwrap_or(path);
        json!({
            "identity_providers": idps,
            "links": {"next": format!("{path_only}?marker=m{n}")}
        })
    };
    axum::Json(page).into_response()
}
