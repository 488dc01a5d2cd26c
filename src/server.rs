//! HTTP endpoints for operations: `/metrics` (Prometheus text format), `/healthz` (the
//! controller is not wedged) and `/readyz` (its caches are filled); see [`crate::health`].
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// The router, separate from binding so tests can drive it.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthz(State(state): State<ServerState>) -> impl IntoResponse {
    let longest = state.metrics.longest_running();
    match state.health.wedged(longest, std::time::Instant::now()) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => {
            tracing::error!(%why, "controller wedged; failing /healthz so Kubernetes restarts it");
            (StatusCode::SERVICE_UNAVAILABLE, format!("wedged: {why}"))
        }
    }
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds the endpoints' address. Separate from [`serve`] so the caller can treat a port that
/// cannot be bound as a start-up error (an operator without /metrics and probes is not healthy).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the endpoints on a bound `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: ServerState) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tower::ServiceExt;

    async fn get(state: &ServerState, path: &str) -> StatusCode {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        router(state.clone())
            .oneshot(request)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn probes_tell_the_truth() {
        let state = ServerState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(Duration::from_secs(120))),
        };
        assert_eq!(
            get(&state, "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&state, "/healthz").await, StatusCode::OK);
        state.health.set_ready(true);
        assert_eq!(get(&state, "/readyz").await, StatusCode::OK);
        // A watch that has only failed for five minutes: wedged.
        let long_ago = Instant::now() - Duration::from_secs(301);
        state
            .health
            .watch_event("SecurityProvider", false, long_ago);
        assert_eq!(
            get(&state, "/healthz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state
            .health
            .watch_event("SecurityProvider", true, Instant::now());
        assert_eq!(get(&state, "/healthz").await, StatusCode::OK);
    }
}
