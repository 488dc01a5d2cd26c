//! Fault injection shared by every simulator: an axum middleware driven by a [`Faults`] handle
//! whose [`FaultConfig`] can be set at start (simulator config, `--fault-*` flags) and changed
//! at run time (`POST /_sim/faults`, or [`Faults::set`] from Rust).
//!
//! Faults, each with its own probability per request:
//!
//! | fault | what the client sees |
//! |---|---|
//! | `latency` | every request delayed (not a probability: a fixed delay) |
//! | `errorRate` | 500 or 503 with a JSON error body, nothing applied |
//! | `throttleRate` | 429 with `Retry-After`, alternating delay-seconds and HTTP-date |
//! | `hangRate` | no response for `hangFor` (default 1 h): the client's timeout fires |
//! | `resetRate` | status line, then the connection drops mid-body, nothing applied |
//! | `malformedRate` | the real 2xx JSON response, truncated (writes are applied) |
//! | `lostResponseRate` | writes (POST/PUT/PATCH) only: applied, then a dropped connection or a 502 |
//! | `lateCommitRate` | writes only: no answer (the client times out), and the write is applied later, just before the next write is processed (or after `hangFor`) |
//!
//! At most one of error/throttle/hang/reset is chosen per request (their rates add up); then
//! malformed and lost response are rolled on the real response. A seed makes the sequence of
//! choices reproducible for a given request order.
//!
//! Injected faults are counted by kind, and the layer tracks the largest number of requests
//! it saw in flight at once (to check a client's concurrency cap). It also logs every request
//! that may change state (any method but GET/HEAD/OPTIONS) with its `User-Agent` and arrival
//! time, so a test can tell which process wrote when (`GET /_sim/writes`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::lock;

/// Largest body the malformed-JSON fault buffers to truncate.
const MAX_BUFFERED_BODY: usize = 16 * 1024 * 1024;

/// What to inject. Rates are probabilities in `0.0..=1.0` per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added to every request before anything else, in milliseconds on the wire.
    #[serde(with = "millis")]
    pub latency: Duration,
    /// 500/503 instead of the real answer.
    pub error_rate: f64,
    /// 429 with `Retry-After`.
    pub throttle_rate: f64,
    /// Seconds announced in `Retry-After`.
    pub retry_after_seconds: u64,
    /// No answer until `hang_for` passes (or the client gives up).
    pub hang_rate: f64,
    /// How long a hung request hangs, in milliseconds on the wire.
    #[serde(with = "millis")]
    pub hang_for: Duration,
    /// The connection drops after the status line, before the body.
    pub reset_rate: f64,
    /// A 2xx JSON body cut in half.
    pub malformed_rate: f64,
    /// A write is applied, then its response is lost.
    pub lost_response_rate: f64,
    /// A write hangs unanswered and is applied only when the next write arrives (which then
    /// sees its effect, e.g. a 409 for a retried create), or after `hang_for`.
    pub late_commit_rate: f64,
    /// Seed of the fault RNG, for reproducible runs; random when unset.
    pub seed: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency: Duration::ZERO,
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_seconds: 1,
            hang_rate: 0.0,
            hang_for: Duration::from_secs(3600),
            reset_rate: 0.0,
            malformed_rate: 0.0,
            lost_response_rate: 0.0,
            late_commit_rate: 0.0,
            seed: None,
        }
    }
}

impl FaultConfig {
    /// No fault at all (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Rejects rates outside `0..=1` and failure rates adding up to more than 1.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("errorRate", self.error_rate),
            ("throttleRate", self.throttle_rate),
            ("hangRate", self.hang_rate),
            ("resetRate", self.reset_rate),
            ("malformedRate", self.malformed_rate),
            ("lostResponseRate", self.lost_response_rate),
            ("lateCommitRate", self.late_commit_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        let failing = self.error_rate + self.throttle_rate + self.hang_rate + self.reset_rate;
        if failing > 1.0 + f64::EPSILON {
            return Err(format!(
                "errorRate + throttleRate + hangRate + resetRate must not exceed 1, got {failing}"
            ));
        }
        Ok(())
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Command-line flags of a simulator's faults (`secprov-sim <name> --fault-...`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FaultArgs {
    /// Latency added to every API request (e.g. 50ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fault_latency: Option<Duration>,
    /// Probability of a 500/503 answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Probability of a 429 answer with Retry-After (seconds and HTTP-date alternately).
    #[arg(long, default_value_t = 0.0)]
    pub fault_throttle_rate: f64,
    /// Seconds announced in Retry-After.
    #[arg(long, default_value_t = 1)]
    pub fault_retry_after_seconds: u64,
    /// Probability of a request that never gets an answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_hang_rate: f64,
    /// Probability of a connection dropped mid-response.
    #[arg(long, default_value_t = 0.0)]
    pub fault_reset_rate: f64,
    /// Probability of a truncated JSON body on a success.
    #[arg(long, default_value_t = 0.0)]
    pub fault_malformed_rate: f64,
    /// Probability that a write (create/update) is applied but its response is lost.
    #[arg(long, default_value_t = 0.0)]
    pub fault_lost_response_rate: f64,
    /// Probability that a write hangs and is applied only later, just before the next write.
    #[arg(long, default_value_t = 0.0)]
    pub fault_late_commit_rate: f64,
    /// Seed of the fault RNG, for reproducible runs.
    #[arg(long)]
    pub fault_seed: Option<u64>,
}

impl FaultArgs {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> FaultConfig {
        FaultConfig {
            latency: self.fault_latency.unwrap_or_default(),
            error_rate: self.fault_error_rate,
            throttle_rate: self.fault_throttle_rate,
            retry_after_seconds: self.fault_retry_after_seconds,
            hang_rate: self.fault_hang_rate,
            reset_rate: self.fault_reset_rate,
            malformed_rate: self.fault_malformed_rate,
            lost_response_rate: self.fault_lost_response_rate,
            late_commit_rate: self.fault_late_commit_rate,
            seed: self.fault_seed,
            ..FaultConfig::default()
        }
    }
}

/// Kinds of injected faults, as counted.
pub const KIND_LATENCY: &str = "latency";
pub const KIND_ERROR: &str = "error";
pub const KIND_THROTTLE_SECONDS: &str = "throttle_retry_after_seconds";
pub const KIND_THROTTLE_DATE: &str = "throttle_retry_after_date";
pub const KIND_HANG: &str = "hang";
pub const KIND_RESET: &str = "reset";
pub const KIND_MALFORMED: &str = "malformed_json";
pub const KIND_LOST_RESPONSE: &str = "lost_response";
pub const KIND_LATE_COMMIT: &str = "late_commit";

/// A write held back by the late-commit fault: `release` lets it proceed, `done` reports it
/// was applied.
struct LateWrite {
    release: Arc<tokio::sync::Notify>,
    done: tokio::sync::oneshot::Receiver<()>,
}

/// Builds an injected error response (status, upper-case code, message) in the shape of the
/// simulated API's own errors, so that a client parses it as it would a real one.
pub type ErrorBody = Arc<dyn Fn(StatusCode, &str, &str) -> Response + Send + Sync>;

struct Inner {
    config: Mutex<FaultConfig>,
    error_body: ErrorBody,
    rng: Mutex<StdRng>,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    throttles: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    late_writes: Mutex<Vec<LateWrite>>,
    writes: Mutex<Vec<WriteRecord>>,
}

/// Most write records kept; older ones are dropped first.
const MAX_WRITE_RECORDS: usize = 100_000;

/// One state-changing request as it arrived, before any injected latency or fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteRecord {
    pub method: String,
    pub path: String,
    /// The `User-Agent` header, empty when absent.
    pub user_agent: String,
    /// Arrival time, Unix milliseconds (wall clock).
    pub received_at_ms: i64,
}

/// The live fault settings and counters of one simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("config", &self.config())
            .field("injected", &self.injected())
            .finish()
    }
}

/// A snapshot for `GET /_sim/faults`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultReport {
    pub config: FaultConfig,
    pub injected: BTreeMap<&'static str, u64>,
    pub total_injected: u64,
    pub max_in_flight: usize,
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_rng(&mut rand::rng()),
    }
}

impl Faults {
    /// A handle starting with `config` (not validated: callers building it in code are
    /// trusted; [`Faults::set`] validates). Injected errors have Coveo's error shape.
    pub fn new(config: FaultConfig) -> Self {
        Self::with_error_body(config, Arc::new(error_response))
    }

    /// Like [`Faults::new`], with injected errors shaped by `error_body`.
    pub fn with_error_body(config: FaultConfig, error_body: ErrorBody) -> Self {
        Faults {
            inner: Arc::new(Inner {
                error_body,
                rng: Mutex::new(rng_for(config.seed)),
                config: Mutex::new(config),
                injected: Mutex::new(BTreeMap::new()),
                throttles: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                late_writes: Mutex::new(Vec::new()),
                writes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current settings.
    pub fn config(&self) -> FaultConfig {
        lock(&self.inner.config).clone()
    }

    /// Replaces the settings (and reseeds when a seed is given).
    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        if config.seed.is_some() {
            *lock(&self.inner.rng) = rng_for(config.seed);
        }
        *lock(&self.inner.config) = config;
        Ok(())
    }

    /// Changes some settings in place.
    pub fn update(&self, change: impl FnOnce(&mut FaultConfig)) -> Result<(), String> {
        let mut config = self.config();
        change(&mut config);
        self.set(config)
    }

    /// Turns every fault off (counters are kept).
    pub fn clear(&self) {
        *lock(&self.inner.config) = FaultConfig::default();
    }

    /// Injected faults by kind.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.inner.injected).clone()
    }

    /// Injected faults of all kinds except latency (which every request gets when set).
    pub fn total_injected(&self) -> u64 {
        self.injected()
            .iter()
            .filter(|(kind, _)| **kind != KIND_LATENCY)
            .map(|(_, n)| n)
            .sum()
    }

    /// The most requests seen in flight at once since the start or the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Zeroes the counters and the in-flight high-water mark.
    pub fn reset_counters(&self) {
        lock(&self.inner.injected).clear();
        self.inner.max_in_flight.store(
            self.inner.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// The state-changing requests received so far, oldest first.
    pub fn writes(&self) -> Vec<WriteRecord> {
        lock(&self.inner.writes).clone()
    }

    fn record_write(&self, request: &Request) {
        if matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        ) {
            return;
        }
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let record = WriteRecord {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            user_agent: user_agent.to_owned(),
            received_at_ms: jiff::Timestamp::now().as_millisecond(),
        };
        let mut writes = lock(&self.inner.writes);
        if writes.len() >= MAX_WRITE_RECORDS {
            writes.remove(0);
        }
        writes.push(record);
    }

    /// Settings, counters and high-water mark.
    pub fn report(&self) -> FaultReport {
        FaultReport {
            config: self.config(),
            injected: self.injected(),
            total_injected: self.total_injected(),
            max_in_flight: self.max_in_flight(),
        }
    }

    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        (self.inner.error_body)(status, code, message)
    }

    fn count(&self, kind: &'static str) {
        *lock(&self.inner.injected).entry(kind).or_insert(0) += 1;
    }

    fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && lock(&self.inner.rng).random::<f64>() < rate
    }

    fn choose(&self, config: &FaultConfig) -> Option<Fault> {
        let failing =
            config.error_rate + config.throttle_rate + config.hang_rate + config.reset_rate;
        if failing <= 0.0 {
            return None;
        }
        let x: f64 = lock(&self.inner.rng).random();
        let mut edge = config.error_rate;
        if x < edge {
            return Some(Fault::Error);
        }
        edge += config.throttle_rate;
        if x < edge {
            return Some(Fault::Throttle);
        }
        edge += config.hang_rate;
        if x < edge {
            return Some(Fault::Hang);
        }
        edge += config.reset_rate;
        if x < edge {
            return Some(Fault::Reset);
        }
        None
    }
}

enum Fault {
    Error,
    Throttle,
    Hang,
    Reset,
}

/// Decrements the in-flight count however the request ends (even if the client goes away and
/// the handler future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A JSON error body shaped like Coveo's errors (and the control endpoints' errors).
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errorCode": code,
        "message": message,
        "requestId": super::new_request_id(),
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// A 200 whose body stream fails at once: hyper then drops the connection, which the client
/// sees as a reset while reading the response.
fn reset_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ))
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn is_control_path(path: &str) -> bool {
    path.starts_with("/_sim")
}

/// The middleware: `from_fn_with_state(faults.clone(), faults::inject)`.
pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if is_control_path(request.uri().path()) {
        return next.run(request).await;
    }
    faults.record_write(&request);
    let inner = &faults.inner;
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(&inner.in_flight);

    let config = faults.config();
    if !config.latency.is_zero() {
        faults.count(KIND_LATENCY);
        tokio::time::sleep(config.latency).await;
    }
    match faults.choose(&config) {
        Some(Fault::Error) => {
            faults.count(KIND_ERROR);
            let status = if faults.roll(0.5) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return faults.error(status, "INTERNAL_ERROR", "Injected server error.");
        }
        Some(Fault::Throttle) => {
            // Alternate the two forms so a client must understand both.
            let n = inner.throttles.fetch_add(1, Ordering::SeqCst);
            let value = if n % 2 == 0 {
                faults.count(KIND_THROTTLE_SECONDS);
                config.retry_after_seconds.to_string()
            } else {
                faults.count(KIND_THROTTLE_DATE);
                // An HTTP-date has whole seconds: round up so the wait is never shorter.
                let at = jiff::Timestamp::now()
                    + jiff::SignedDuration::from_secs(config.retry_after_seconds as i64 + 1);
                jiff::fmt::rfc2822::DateTimePrinter::new()
                    .timestamp_to_rfc9110_string(&at)
                    .unwrap_or_else(|_| config.retry_after_seconds.to_string())
            };
            let mut response = faults.error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "Injected throttling: slow down.",
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Fault::Hang) => {
            faults.count(KIND_HANG);
            tokio::time::sleep(config.hang_for).await;
            return faults.error(
                StatusCode::GATEWAY_TIMEOUT,
                "GATEWAY_TIMEOUT",
                "Injected hang ended.",
            );
        }
        Some(Fault::Reset) => {
            faults.count(KIND_RESET);
            return reset_response();
        }
        None => {}
    }

    let write = is_write(request.method());
    if write {
        // Writes held back earlier land now, before this one: a retried create then finds
        // the id taken, as it would behind a slow backend.
        let held: Vec<LateWrite> = std::mem::take(&mut *lock(&inner.late_writes));
        let caught_up = !held.is_empty();
        for late in held {
            late.release.notify_one();
            let _ = late.done.await;
        }
        if !caught_up && faults.roll(config.late_commit_rate) {
            faults.count(KIND_LATE_COMMIT);
            return late_commit(&faults, &config, request, next).await;
        }
    }
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    if write && faults.roll(config.lost_response_rate) {
        faults.count(KIND_LOST_RESPONSE);
        // Committed, then lost: half the time as a dropped connection, half as a 502 from a
        // gateway that gave up on the backend.
        return if faults.roll(0.5) {
            reset_response()
        } else {
            faults.error(
                StatusCode::BAD_GATEWAY,
                "BAD_GATEWAY",
                "Injected: upstream response lost.",
            )
        };
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json && faults.roll(config.malformed_rate) {
        let (mut parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BUFFERED_BODY).await else {
            return reset_response();
        };
        faults.count(KIND_MALFORMED);
        // Half a JSON document (at least one byte gone) is never valid JSON... except for
        // bodies so short that half of them is empty, which is not valid JSON either.
        let cut = bytes.slice(0..bytes.len() / 2);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(cut));
    }
    response
}

/// Holds a write back until the next write arrives or `hang_for` passes, then applies it in
/// a task of its own, so that it lands even after the client gave up and hung up.
async fn late_commit(
    faults: &Faults,
    config: &FaultConfig,
    request: Request,
    next: Next,
) -> Response {
    let release = Arc::new(tokio::sync::Notify::new());
    let (done_tx, done) = tokio::sync::oneshot::channel();
    lock(&faults.inner.late_writes).push(LateWrite {
        release: release.clone(),
        done,
    });
    let hang_for = config.hang_for;
    let task = tokio::spawn(async move {
        tokio::select! {
            () = release.notified() => {}
            () = tokio::time::sleep(hang_for) => {}
        }
        let response = next.run(request).await;
        let _ = done_tx.send(());
        response
    });
    match task.await {
        Ok(response) => response,
        Err(_) => reset_response(),
    }
}

/// `GET /_sim/faults`: settings, counters and in-flight high-water mark.
pub async fn get_faults(State(faults): State<Faults>) -> Response {
    axum::Json(faults.report()).into_response()
}

/// `POST /_sim/faults` with a [`FaultConfig`] JSON body (missing fields take their defaults,
/// so `{}` turns every fault off).
pub async fn set_faults(State(faults): State<Faults>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                &format!("Expected a fault configuration: {e}"),
            );
        }
    };
    match faults.set(config) {
        Ok(()) => axum::Json(faults.report()).into_response(),
        Err(message) => error_response(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", &message),
    }
}

/// `POST /_sim/faults/reset`: zero the counters.
pub async fn reset_fault_counters(State(faults): State<Faults>) -> StatusCode {
    faults.reset_counters();
    StatusCode::NO_CONTENT
}

/// `GET /_sim/writes`: every state-changing request so far, oldest first.
pub async fn get_writes(State(faults): State<Faults>) -> Response {
    axum::Json(faults.writes()).into_response()
}

/// The control routes, to merge into a simulator's router.
pub fn control_router(faults: Faults) -> axum::Router {
    axum::Router::new()
        .route("/_sim/writes", axum::routing::get(get_writes))
        .route(
            "/_sim/faults",
            axum::routing::get(get_faults).post(set_faults),
        )
        .route(
            "/_sim/faults/reset",
            axum::routing::post(reset_fault_counters),
        )
        .with_state(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated() {
        assert!(FaultConfig::default().validate().is_ok());
        let bad = FaultConfig {
            error_rate: 1.5,
            ..FaultConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("errorRate"));
        let too_much = FaultConfig {
            error_rate: 0.6,
            reset_rate: 0.6,
            ..FaultConfig::default()
        };
        assert!(too_much.validate().is_err());
    }

    #[test]
    fn a_seed_makes_choices_reproducible() {
        let config = FaultConfig {
            error_rate: 0.3,
            throttle_rate: 0.3,
            seed: Some(7),
            ..FaultConfig::default()
        };
        let sequence = |faults: &Faults| -> Vec<u8> {
            (0..50)
                .map(|_| match faults.choose(&config) {
                    Some(Fault::Error) => 1,
                    Some(Fault::Throttle) => 2,
                    Some(_) => 3,
                    None => 0,
                })
                .collect()
        };
        let a = sequence(&Faults::new(config.clone()));
        let b = sequence(&Faults::new(config.clone()));
        assert_eq!(a, b);
        assert!(a.contains(&0) && a.contains(&1) && a.contains(&2));
    }

    #[test]
    fn config_json_uses_camel_case_and_millis() {
        let config: FaultConfig =
            serde_json::from_str(r#"{"errorRate":0.1,"latency":50,"hangFor":2000}"#).unwrap();
        assert_eq!(config.error_rate, 0.1);
        assert_eq!(config.latency, Duration::from_millis(50));
        assert_eq!(config.hang_for, Duration::from_secs(2));
        assert!(serde_json::from_str::<FaultConfig>(r#"{"errorrate":1}"#).is_err());
    }
}
