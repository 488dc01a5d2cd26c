//! The scaffolding every simulator shares around its own API routes, so that each simulator
//! file holds only what is particular to its remote API:
//!
//! * request counting by operation ([`RequestCounters`]) and a request id on every response;
//! * the configured latency, then the fault layer ([`crate::faults`]);
//! * the control endpoints: `GET /_sim/stats`, `POST /_sim/reset`, `GET`/`POST /_sim/faults`
//!   and `POST /_sim/faults/reset`;
//! * the standalone runner behind `secprov-sim <name>`.
//!
//! Layers run outside-in: count (and request id) → latency → faults → the simulator's own
//! layers (authentication, ...) → handler. Only requests under the API's path prefix are
//! counted and delayed; the fault layer leaves the `/_sim` control paths alone.
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::faults::{self, Faults};
use crate::{RequestCounters, ServerHandle, new_request_id, shutdown_signal};

/// What the harness needs to know about one remote API.
#[derive(Debug)]
pub(crate) struct ApiShape {
    /// Lower-case name, as in `secprov-sim <name>` and the "listening on" line.
    pub name: &'static str,
    /// Path prefix of the API requests, e.g. `/rest`.
    pub prefix: &'static str,
    /// Further API path prefixes served by the same simulator (Coveo's Push API, `/push`).
    pub other_prefixes: &'static [&'static str],
    /// The operation name a request counts under (see the `/_sim/stats` table in docs/development.md).
    pub classify: fn(&Method, &str) -> &'static str,
    /// The response header that carries the request id, and a prefix of its value.
    pub request_id_header: &'static str,
    pub request_id_prefix: &'static str,
}

impl ApiShape {
    fn is_api_path(&self, path: &str) -> bool {
        std::iter::once(&self.prefix)
            .chain(self.other_prefixes)
            .any(|prefix| {
                path.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// The shared part of a simulator's state. Cheap to clone; clones share counters and faults.
#[derive(Clone, Debug)]
pub(crate) struct Harness {
    shape: &'static ApiShape,
    latency: Duration,
    pub counters: RequestCounters,
    pub faults: Faults,
}

impl Harness {
    pub fn new(shape: &'static ApiShape, latency: Duration, faults: Faults) -> Self {
        Harness {
            shape,
            latency,
            counters: RequestCounters::new(),
            faults,
        }
    }

    /// Wraps a simulator's API router (its routes and own layers, state applied) in the shared
    /// layers and adds the control routes; `providers` counts the stored providers for
    /// `/_sim/stats`.
    pub fn router(
        &self,
        api: Router,
        providers: impl Fn() -> usize + Clone + Send + Sync + 'static,
    ) -> Router {
        let api = api
            .layer(from_fn_with_state(self.faults.clone(), faults::inject))
            .layer(from_fn_with_state(self.clone(), count_and_delay));
        let stats = {
            let counters = self.counters.clone();
            move || async move {
                json_response(
                    StatusCode::OK,
                    &json!({"counters": counters.snapshot(), "providers": providers()}),
                )
            }
        };
        let reset = {
            let counters = self.counters.clone();
            move || async move {
                counters.reset();
                StatusCode::NO_CONTENT
            }
        };
        Router::new()
            .route("/_sim/stats", get(stats))
            .route("/_sim/reset", post(reset))
            .merge(faults::control_router(self.faults.clone()))
            .merge(api)
    }
}

/// Counts API requests, applies the configured latency and makes sure every API response
/// carries a request id.
async fn count_and_delay(State(harness): State<Harness>, request: Request, next: Next) -> Response {
    let shape = harness.shape;
    let path = request.uri().path();
    if !shape.is_api_path(path) {
        return next.run(request).await;
    }
    let operation = (shape.classify)(request.method(), path);
    harness
        .counters
        .record(request.method().as_str(), operation);
    if !harness.latency.is_zero() {
        tokio::time::sleep(harness.latency).await;
    }
    let mut response = next.run(request).await;
    let name = HeaderName::from_static(shape.request_id_header);
    if !response.headers().contains_key(&name)
        && let Ok(value) =
            HeaderValue::from_str(&format!("{}{}", shape.request_id_prefix, new_request_id()))
    {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A JSON response with this status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs a started simulator until Ctrl-C or SIGTERM, printing
/// `<name> simulator listening on http://HOST:PORT` to stdout once it accepts connections.
pub(crate) async fn serve_until_signal(
    shape: &ApiShape,
    listen: SocketAddr,
    server: std::io::Result<Arc<ServerHandle>>,
) -> anyhow::Result<()> {
    let server =
        server.with_context(|| format!("cannot start the {} simulator on {listen}", shape.name))?;
    {
        // Scripts wait for this exact line, so flush it at once.
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{} simulator listening on {}",
            shape.name,
            server.base_url()
        )?;
        stdout.flush()?;
    }
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(_: &Method, _: &str) -> &'static str {
        "op"
    }

    static SHAPE: ApiShape = ApiShape {
        name: "test",
        prefix: "/v1",
        other_prefixes: &["/push"],
        classify,
        request_id_header: "x-request-id",
        request_id_prefix: "req-",
    };

    #[test]
    fn only_paths_under_the_prefix_are_api_paths() {
        assert!(SHAPE.is_api_path("/v1"));
        assert!(SHAPE.is_api_path("/v1/things"));
        assert!(!SHAPE.is_api_path("/v10/things"));
        assert!(SHAPE.is_api_path("/push/v1/things"));
        assert!(!SHAPE.is_api_path("/pushy"));
        assert!(!SHAPE.is_api_path("/_sim/stats"));
    }
}
