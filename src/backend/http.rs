//! HTTP concerns shared by every backend: TLS, a timeout on every request, a per-connection
//! token bucket and concurrency cap, and retries with exponential backoff and full jitter for
//! idempotent calls only, honouring `Retry-After` in both its forms. Every write (any method
//! but GET/HEAD/OPTIONS) passes the leader fence it was given ([`HttpOptions::fence`]) just
//! before it leaves, so a replica that lost its Lease stops writing at once.
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::RngExt;
use reqwest::header::HeaderMap;
use tokio::sync::Semaphore;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::leader::WriteFence;

/// Retry schedule for idempotent calls.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for in-process: the error goes back to
    /// the controller, which requeues the object after that delay instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter delay before retry number `retry` (0-based): uniform in
    /// `[0, min(max_delay, base_delay * 2^retry)]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl RngExt) -> Duration {
        crate::backoff::full_jitter(self.base_delay, self.max_delay, retry, rng)
    }
}

/// Settings of one connection's HTTP client.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Timeout of every single request.
    pub timeout: Duration,
    /// Extra trusted CA certificates, PEM.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Requests in flight at once.
    pub max_concurrency: u32,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Largest response body read; a larger one is `BadResponse`, so a remote cannot take the
    /// operator's memory.
    pub max_response_bytes: usize,
    /// Overall deadline of a bulk read (every page of a list), so endless or very slow paging
    /// cannot hold a reconcile slot.
    pub bulk_read_deadline: Duration,
    /// The fence every write passes: the operator's (see [`crate::leader`]); by default an
    /// open one, for callers that never hold a Lease (the CLI, tests).
    pub fence: &'static WriteFence,
}

/// The fence of a client that takes part in no election (the CLI, tests).
pub static NO_ELECTION: WriteFence = WriteFence::new();

/// Default of [`HttpOptions::max_response_bytes`]: 4 MiB, far above a page of 250 providers.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Default of [`HttpOptions::bulk_read_deadline`].
pub const DEFAULT_BULK_READ_DEADLINE: Duration = Duration::from_secs(120);

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(30),
            ca_bundle_pem: None,
            requests_per_second: 20,
            burst: 40,
            max_concurrency: 16,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            bulk_read_deadline: DEFAULT_BULK_READ_DEADLINE,
            fence: &NO_ELECTION,
        }
    }
}

/// A response whose status the caller interprets.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpResponse {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Parsed `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers, jiff::Timestamp::now())
    }

    /// The body as JSON; a body that doesn't parse is a `BadResponse` of `backend`'s
    /// `operation`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        backend: &'static str,
        operation: &'static str,
    ) -> Result<T, RemoteError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            RemoteError::transport(
                backend,
                operation,
                RemoteErrorKind::BadResponse,
                format!("unexpected response body: {e}"),
            )
        })
    }

    /// First value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// What a client reports to its observer (metrics, tests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation {
    /// One attempt of a request: the HTTP status (None when no response arrived) and how long
    /// it took.
    Request {
        operation: &'static str,
        status: Option<u16>,
        duration: Duration,
    },
    /// A request waited this long for the connection's token bucket.
    RateLimitWait(Duration),
}

/// Called with the client's backend name and each observation.
pub type RequestObserver = Arc<dyn Fn(&'static str, Observation) + Send + Sync>;

/// Makes ring the process's TLS crypto provider (once; later calls do nothing). reqwest is built
/// without a provider of its own so that only one crypto library is linked: the one kube uses.
/// Every reqwest client of the process, including tests' plain ones, needs this first.
pub fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One connection's HTTP client. Cheap to share behind an `Arc`.
pub struct HttpClient {
    backend: &'static str,
    client: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
    retry: RetryPolicy,
    max_response_bytes: usize,
    bulk_read_deadline: Duration,
    observer: Option<RequestObserver>,
    fence: &'static WriteFence,
}

impl HttpClient {
    /// Builds a client. TLS verification is always on; `ca_bundle_pem` adds trust anchors.
    pub fn new(backend: &'static str, options: &HttpOptions) -> Result<Self, String> {
        install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(user_agent())
            // None of the remote APIs redirects; following one would send the credentials
            // wherever the endpoint points. A 3xx is reported instead (see `attempt`).
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(pem) = &options.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("caBundle is not a valid PEM bundle: {e}"))?;
            if certs.is_empty() {
                return Err("caBundle contains no certificate".into());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let rps = NonZeroU32::new(options.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(options.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(HttpClient {
            backend,
            client,
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            in_flight: Semaphore::new(options.max_concurrency.max(1) as usize),
            retry: options.retry.clone(),
            max_response_bytes: options.max_response_bytes.max(1),
            bulk_read_deadline: options.bulk_read_deadline,
            observer: None,
            fence: options.fence,
        })
    }

    /// Calls `observer(backend, observation)` after every attempt and every rate-limit wait.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Checks writes against `fence` instead of the process-wide one (tests).
    pub fn with_fence(mut self, fence: &'static WriteFence) -> Self {
        self.fence = fence;
        self
    }

    /// The underlying client, to build requests.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request built by `build`, retrying idempotent calls on transport failures, 429
    /// and 5xx. Returns the final response whatever its status; `Err` only when no response
    /// arrived.
    pub async fn send(
        &self,
        operation: &'static str,
        idempotent: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<HttpResponse, RemoteError> {
        let mut retry = 0u32;
        loop {
            let outcome = self.attempt(operation, &build).await;
            let retry_delay = match &outcome {
                Ok(resp) if resp.status == 429 || resp.status >= 500 => resp.retry_after(),
                Ok(_) => return outcome,
                // A redirect or an oversized body would come again.
                Err(e)
                    if !matches!(
                        e.kind,
                        RemoteErrorKind::Timeout | RemoteErrorKind::Unavailable
                    ) =>
                {
                    return outcome;
                }
                Err(_) => None,
            };
            if !idempotent || retry + 1 >= self.retry.max_attempts {
                return outcome;
            }
            let delay = match retry_delay {
                Some(after) if after > self.retry.max_retry_after => return outcome,
                Some(after) => after,
                None => self.retry.backoff(retry, &mut rand::rng()),
            };
            tracing::debug!(
                backend = self.backend,
                operation,
                retry,
                ?delay,
                "retrying remote call"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// A JSON API call: `method url` with `Accept: application/json`, an optional JSON body,
    /// and the backend's credentials added by `authorize`. Retries as [`Self::send`] does.
    pub async fn send_json(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: &reqwest::Method,
        url: &url::Url,
        body: Option<&serde_json::Value>,
        authorize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<HttpResponse, RemoteError> {
        self.send(operation, idempotent, |client| {
            let mut req = authorize(client.request(method.clone(), url.clone()))
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                req = req.json(body);
            }
            req
        })
        .await
    }

    async fn attempt(
        &self,
        operation: &'static str,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<HttpResponse, RemoteError> {
        // The semaphore is never closed, so acquire only fails if it were; treat as unavailable.
        let _permit = self.in_flight.acquire().await.map_err(|_| {
            RemoteError::transport(
                self.backend,
                operation,
                RemoteErrorKind::Unavailable,
                "client shut down",
            )
        })?;
        if self.limiter.check().is_err() {
            let waiting = Instant::now();
            self.limiter.until_ready().await;
            self.observe(Observation::RateLimitWait(waiting.elapsed()));
        }
        let request = build(&self.client)
            .build()
            .map_err(|e| transport_error(self.backend, operation, &e))?;
        // Checked last, after every wait: the Lease may have been lost meanwhile.
        if crate::leader::is_write(request.method())
            && let Err(e) = self.fence.check()
        {
            return Err(RemoteError::transport(
                self.backend,
                operation,
                RemoteErrorKind::Unavailable,
                e.to_string(),
            ));
        }
        let started = Instant::now();
        let result = self.exchange(request).await;
        self.observe(Observation::Request {
            operation,
            status: result.as_ref().ok().map(|r| r.status),
            duration: started.elapsed(),
        });
        match result {
            Ok(resp) if (300..400).contains(&resp.status) => {
                Err(redirect_error(self.backend, operation, &resp))
            }
            Ok(resp) => Ok(resp),
            Err(Exchange::Transport(e)) => Err(transport_error(self.backend, operation, &e)),
            Err(Exchange::TooLarge) => Err(RemoteError::transport(
                self.backend,
                operation,
                RemoteErrorKind::BadResponse,
                format!(
                    "the response body is larger than {} bytes",
                    self.max_response_bytes
                ),
            )),
        }
    }

    /// Sends one request and reads its body, at most `max_response_bytes` of it.
    async fn exchange(&self, request: reqwest::Request) -> Result<HttpResponse, Exchange> {
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(Exchange::Transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(Exchange::TooLarge);
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(Exchange::Transport)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(Exchange::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body: body.freeze(),
        })
    }

    /// Runs a bulk read (every page of a list) under the connection's overall deadline.
    pub async fn bulk_read<T>(
        &self,
        operation: &'static str,
        read: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        tokio::time::timeout(self.bulk_read_deadline, read)
            .await
            .unwrap_or_else(|_| {
                Err(RemoteError::transport(
                    self.backend,
                    operation,
                    RemoteErrorKind::Timeout,
                    format!(
                        "reading every page took longer than {} s",
                        self.bulk_read_deadline.as_secs()
                    ),
                ))
            })
    }

    fn observe(&self, observation: Observation) {
        if let Some(observer) = &self.observer {
            observer(self.backend, observation);
        }
    }
}

/// Why one exchange produced no response.
enum Exchange {
    Transport(reqwest::Error),
    TooLarge,
}

/// A 3xx is never followed: it would carry the credentials to wherever it points.
fn redirect_error(
    backend: &'static str,
    operation: &'static str,
    resp: &HttpResponse,
) -> RemoteError {
    let target = resp
        .header("location")
        .and_then(|l| url::Url::parse(&l).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .map(|h| format!(" to host {h:?}"))
        .unwrap_or_default();
    RemoteError {
        status: Some(resp.status),
        ..RemoteError::transport(
            backend,
            operation,
            RemoteErrorKind::Rejected,
            format!(
                "the endpoint answered with a redirect{target}, which is not followed (credentials are sent only to the configured endpoint); set the endpoint to the final URL"
            ),
        )
    }
}

/// A header value marked sensitive (left out of debug output and HTTP/2 header compression
/// tables), for credentials.
pub fn sensitive_header(value: &str) -> Result<reqwest::header::HeaderValue, String> {
    let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        "the credential contains characters not allowed in an HTTP header".to_string()
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds a credential header marked sensitive. A value that is not a valid header value makes
/// the request fail before it is sent, like an invalid header would.
pub fn with_credential(
    req: reqwest::RequestBuilder,
    name: &'static str,
    value: &str,
) -> reqwest::RequestBuilder {
    match sensitive_header(value) {
        Ok(v) => req.header(name, v),
        Err(_) => req.header(name, value),
    }
}

/// Is `next` on the same origin (scheme, host, port) as `base`? Paging links elsewhere are
/// not followed: the request would carry the token there.
pub fn same_origin(base: &url::Url, next: &url::Url) -> bool {
    base.origin() == next.origin()
}

/// `secprov-operator/VERSION (IDENTITY)`: the identity (the leader election's, `POD_NAME` or
/// `hostname-pid`) tells a remote audit log which replica wrote.
pub fn user_agent() -> String {
    format!(
        "secprov-operator/{} ({})",
        env!("CARGO_PKG_VERSION"),
        crate::leader::default_identity()
    )
}

/// Turns a backend's non-success response (operation, status, headers, body) into a
/// [`RemoteError`]: each backend has one, for its own error body shape.
pub type ErrorParser = fn(&'static str, u16, &HeaderMap, &[u8]) -> RemoteError;

/// What every backend's REST client shares: the connection's [`HttpClient`], the API's base
/// URL and the backend's error parser. A client adds only its credentials and its paths.
pub struct RestClient {
    backend: &'static str,
    http: HttpClient,
    base: url::Url,
    parse_error: ErrorParser,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("backend", &self.backend)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client of the API at `base` (see [`parse_endpoint`]).
    pub fn new(
        backend: &'static str,
        base: url::Url,
        options: &HttpOptions,
        parse_error: ErrorParser,
    ) -> Result<Self, String> {
        Ok(RestClient {
            backend,
            http: HttpClient::new(backend, options)?,
            base,
            parse_error,
        })
    }

    /// Calls `observer(backend, operation, status, duration)` after every attempt.
    pub fn with_observer(mut self, observer: RequestObserver) -> Self {
        self.http = self.http.with_observer(observer);
        self
    }

    /// The base URL.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The base URL followed by `tail`, each segment percent-encoded.
    pub fn url(&self, tail: &[&str]) -> url::Url {
        url_with_segments(&self.base, tail)
    }

    /// A JSON call (see [`HttpClient::send_json`]), its response read by [`Reply`].
    pub async fn call(
        &self,
        operation: &'static str,
        idempotent: bool,
        method: &reqwest::Method,
        url: &url::Url,
        body: Option<&serde_json::Value>,
        authorize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Reply, RemoteError> {
        let response = self
            .http
            .send_json(operation, idempotent, method, url, body, authorize)
            .await?;
        Ok(self.reply(operation, response))
    }

    /// Runs a bulk read under the connection's overall deadline (see
    /// [`HttpClient::bulk_read`]).
    pub async fn bulk_read<T>(
        &self,
        operation: &'static str,
        read: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        self.http.bulk_read(operation, read).await
    }

    /// Any request (see [`HttpClient::send`]), its response read by [`Reply`].
    pub async fn send(
        &self,
        operation: &'static str,
        idempotent: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, RemoteError> {
        let response = self.http.send(operation, idempotent, build).await?;
        Ok(self.reply(operation, response))
    }

    fn reply(&self, operation: &'static str, response: HttpResponse) -> Reply {
        Reply {
            backend: self.backend,
            operation,
            parse_error: self.parse_error,
            response,
        }
    }
}

/// The response to one operation, read the same way by every backend: 2xx is success, 404
/// means "not there", anything else goes through the backend's error parser.
#[derive(Debug)]
pub struct Reply {
    backend: &'static str,
    operation: &'static str,
    parse_error: ErrorParser,
    /// The raw response.
    pub response: HttpResponse,
}

impl Reply {
    /// The operation this reply answers.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.response.status
    }

    /// The response as an error of this operation.
    pub fn error(&self) -> RemoteError {
        let r = &self.response;
        (self.parse_error)(self.operation, r.status, &r.headers, &r.body)
    }

    /// 2xx: the body as JSON; else the error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, RemoteError> {
        if !self.response.is_success() {
            return Err(self.error());
        }
        self.response.json(self.backend, self.operation)
    }

    /// Like [`Self::json`], but 404 is `None`.
    pub fn json_or_none<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, RemoteError> {
        match self.response.status {
            404 => Ok(None),
            _ => self.json().map(Some),
        }
    }

    /// 2xx: `()`; else the error.
    pub fn ok(&self) -> Result<(), RemoteError> {
        match self.response.is_success() {
            true => Ok(()),
            false => Err(self.error()),
        }
    }

    /// 2xx: true; 404: false (already gone); else the error. For deletes.
    pub fn existed(&self) -> Result<bool, RemoteError> {
        match self.response.status {
            404 => Ok(false),
            _ => self.ok().map(|()| true),
        }
    }

    /// A `BadResponse` error of this operation: the body parsed but lacks what it must carry.
    pub fn bad_response(&self, message: &str) -> RemoteError {
        RemoteError::transport(
            self.backend,
            self.operation,
            RemoteErrorKind::BadResponse,
            message,
        )
    }
}

/// What a backend's error parser reads from an error body; [`response_error`] adds the rest.
#[derive(Debug)]
pub struct ErrorParts {
    pub kind: RemoteErrorKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

/// The [`RemoteError`] of a non-success response: `parts` from the backend's parser, the
/// status and `Retry-After` from the response.
pub fn response_error(
    backend: &'static str,
    operation: &'static str,
    status: u16,
    headers: &HeaderMap,
    parts: ErrorParts,
) -> RemoteError {
    RemoteError {
        backend,
        operation,
        kind: parts.kind,
        status: Some(status),
        code: parts.code,
        message: parts.message,
        request_id: parts.request_id,
        retry_after: retry_after(headers, jiff::Timestamp::now()),
    }
}

/// The remote message when it says something, else the status and a short excerpt of the
/// body (an HTML error page, an empty body).
pub fn message_or_body(message: Option<String>, status: u16, body: &[u8]) -> String {
    match message {
        Some(m) if !m.trim().is_empty() => m,
        _ if body.is_empty() => format!("HTTP {status} with an empty body"),
        _ => format!("HTTP {status}: {}", short_text(body)),
    }
}

/// The first of `names` present in `headers`, as text.
pub fn first_header(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
}

/// Rejects an empty credential (a Secret key holding only whitespace) with `message`.
pub fn non_empty(secret: String, message: &str) -> Result<String, String> {
    match secret.trim().is_empty() {
        true => Err(message.to_owned()),
        false => Ok(secret),
    }
}

/// Describes a transport failure without echoing request details (headers carry credentials).
fn transport_error(
    backend: &'static str,
    operation: &'static str,
    e: &reqwest::Error,
) -> RemoteError {
    let (kind, what) = if e.is_timeout() {
        (RemoteErrorKind::Timeout, "request timed out")
    } else if e.is_connect() {
        (RemoteErrorKind::Unavailable, "cannot connect")
    } else if e.is_body() || e.is_decode() {
        (
            RemoteErrorKind::Unavailable,
            "connection failed while reading the response",
        )
    } else {
        (RemoteErrorKind::Unavailable, "request failed")
    };
    let host = e
        .url()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let mut source = std::error::Error::source(e);
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let message = if cause.is_empty() {
        format!("{what} ({host})")
    } else {
        format!("{what} ({host}): {cause}")
    };
    RemoteError::transport(backend, operation, kind, message)
}

/// Whether a remote id can be used as one URL path segment: not empty, not `.` or `..` (which
/// would address the collection or its parent), no `/` and no control characters.
pub fn is_usable_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && !id.contains('/')
        && !id.chars().any(char::is_control)
}

/// Refuses to address a provider by an unusable id: a DELETE or PUT of `.../{""}` or
/// `.../..` would address the whole collection. Nothing is sent.
pub fn require_usable_id(
    backend: &'static str,
    operation: &'static str,
    id: &str,
) -> Result<(), RemoteError> {
    if is_usable_id(id) {
        return Ok(());
    }
    Err(RemoteError::transport(
        backend,
        operation,
        RemoteErrorKind::Rejected,
        format!(
            "refusing to send a {operation} for the provider id {:?}: it is empty or not a single path segment",
            truncate_text(id, 64)
        ),
    ))
}

/// Checks the id of a provider the remote system returned: usable, and the requested one when
/// there was one. Anything else is `BadResponse` (a remote that answers for another object must
/// not be taken at its word).
pub fn check_returned_id(
    backend: &'static str,
    operation: &'static str,
    requested: Option<&str>,
    returned: &str,
) -> Result<(), RemoteError> {
    let problem = if !is_usable_id(returned) {
        "an empty or unusable provider id".to_string()
    } else if let Some(requested) = requested.filter(|r| *r != returned) {
        format!(
            "the provider id {:?} instead of the requested {:?}",
            truncate_text(returned, 64),
            truncate_text(requested, 64)
        )
    } else {
        return Ok(());
    };
    Err(RemoteError::transport(
        backend,
        operation,
        RemoteErrorKind::BadResponse,
        format!("the response has {problem}"),
    ))
}

/// A bulk read that did not end within `max_pages` pages: an error, never a silently truncated
/// list (a missing provider would look deleted).
pub fn too_many_pages(backend: &'static str, max_pages: usize) -> RemoteError {
    RemoteError::transport(
        backend,
        "list",
        RemoteErrorKind::BadResponse,
        format!("the list did not end after {max_pages} pages"),
    )
}

/// Longest `Retry-After` taken at its word: a larger value (a remote bug, or an attack) would
/// otherwise overflow timers or park an object for years.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` as delay-seconds or an HTTP-date (relative to `now`), capped at
/// [`RETRY_AFTER_CAP`].
pub fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let delta = when.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(delta.max(0) as u64).min(RETRY_AFTER_CAP))
}

/// Joins a base URL and path segments, percent-encoding each segment (ids may contain spaces
/// or slashes).
pub fn url_with_segments(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        for segment in segments {
            path.push(segment);
        }
    }
    url
}

/// Parses a connection endpoint: https, or http only for loopback hosts.
pub fn parse_endpoint(endpoint: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "endpoint {endpoint:?} uses http:// with a non-loopback host; use https://"
        )),
        other => Err(format!(
            "endpoint {endpoint:?} has unsupported scheme {other:?}"
        )),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Truncates a remote message so a large HTML error page doesn't end up in a condition.
pub fn short_text(body: &[u8]) -> String {
    truncate_text(&String::from_utf8_lossy(body), 300)
}

/// `text` trimmed, with control characters replaced by spaces, and cut at `max_chars`
/// characters (an ellipsis marks the cut). For remote text in conditions and Events.
pub fn truncate_text(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    /// A server that answers every request with 204 and counts them.
    async fn counting_server() -> (url::Url, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::NO_CONTENT }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), hits)
    }

    #[tokio::test]
    async fn a_closed_fence_stops_writes_before_they_leave_but_not_reads() {
        let (url, hits) = counting_server().await;
        let fence: &'static WriteFence = Box::leak(Box::new(WriteFence::new()));
        fence.arm(Duration::from_secs(10));
        let client = HttpClient::new("test", &HttpOptions::default())
            .unwrap()
            .with_fence(fence);
        let send = |method: reqwest::Method| {
            let (client, url) = (&client, url.clone());
            async move {
                client
                    .send("op", true, |c| c.request(method.clone(), url.clone()))
                    .await
            }
        };
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let err = send(method).await.unwrap_err();
            assert!(err.to_string().contains("leader Lease"), "{err}");
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(send(reqwest::Method::GET).await.unwrap().status, 204);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        fence.renewed(Instant::now());
        assert_eq!(send(reqwest::Method::POST).await.unwrap().status, 204);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn the_user_agent_names_this_process() {
        assert!(user_agent().starts_with("secprov-operator/"));
        assert!(user_agent().contains(crate::leader::default_identity()));
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Mon, 23 Nov 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Mon, 23 Nov 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(
            retry_after(&headers("18446744073709551615"), now),
            Some(RETRY_AFTER_CAP)
        );
        assert_eq!(
            retry_after(&headers("Thu, 31 Dec 2099 23:59:59 GMT"), now),
            Some(RETRY_AFTER_CAP)
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_capped_ceiling() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rng();
        for retry in 0..10 {
            let ceiling = (policy.base_delay * 2u32.pow(retry)).min(policy.max_delay);
            for _ in 0..50 {
                assert!(policy.backoff(retry, &mut rng) <= ceiling);
            }
        }
        // Full jitter spreads values over the whole range instead of clustering at the ceiling.
        let samples: Vec<_> = (0..200).map(|_| policy.backoff(3, &mut rng)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(400)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(1200)));
    }

    #[test]
    fn endpoints_must_be_https_unless_loopback() {
        assert!(parse_endpoint("https://platform.cloud.coveo.com").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(parse_endpoint("http://localhost:8080").is_ok());
        assert!(parse_endpoint("http://[::1]:8080").is_ok());
        let err = parse_endpoint("http://platform.cloud.coveo.com").unwrap_err();
        assert!(err.contains("non-loopback"), "{err}");
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        let base = url::Url::parse("http://127.0.0.1:1/rest/organizations/").unwrap();
        let url = url_with_segments(
            &base,
            &["org", "securityproviders", "Email Security Provider"],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/rest/organizations/org/securityproviders/Email%20Security%20Provider"
        );
        let url = url_with_segments(&base, &["a/b"]);
        assert_eq!(url.as_str(), "http://127.0.0.1:1/rest/organizations/a%2Fb");
    }

    #[test]
    fn ids_that_are_not_one_path_segment_are_refused_before_sending() {
        for bad in ["", ".", "..", "a/b", "x\u{0}y", "tab\there"] {
            assert!(!is_usable_id(bad), "{bad:?}");
            let err = require_usable_id("coveo", "delete", bad).unwrap_err();
            assert_eq!(err.kind, RemoteErrorKind::Rejected);
        }
        for good in ["Email Security Provider", "a.b", "..x", "idp-1"] {
            assert!(
                require_usable_id("coveo", "delete", good).is_ok(),
                "{good:?}"
            );
        }
    }

    #[test]
    fn a_returned_id_must_be_usable_and_the_requested_one() {
        assert!(check_returned_id("keystone", "get", Some("a"), "a").is_ok());
        assert!(check_returned_id("jitsudo", "create", None, "uuid").is_ok());
        for (requested, returned) in [(Some("a"), "b"), (Some("a"), ""), (None, ""), (None, "..")] {
            let err = check_returned_id("keystone", "get", requested, returned).unwrap_err();
            assert_eq!(
                err.kind,
                RemoteErrorKind::BadResponse,
                "{requested:?} {returned:?}"
            );
        }
    }

    #[test]
    fn remote_text_is_truncated_and_loses_control_characters() {
        let long = "é".repeat(5000);
        let cut = truncate_text(&long, 300);
        assert_eq!(cut.chars().count(), 301);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_text("  a\nb\u{7}c ", 300), "a b c");
        assert_eq!(truncate_text("short", 300), "short");
        assert!(short_text(long.as_bytes()).len() < 1024);
    }

    #[test]
    fn paging_links_are_followed_only_on_the_same_origin() {
        let base = url::Url::parse("http://127.0.0.1:5000/v3").unwrap();
        let ok = url::Url::parse("http://127.0.0.1:5000/v3/x?marker=1").unwrap();
        assert!(same_origin(&base, &ok));
        for other in [
            "http://127.0.0.2:5000/v3/x",
            "https://127.0.0.1:5000/v3/x",
            "http://127.0.0.1:5001/v3/x",
        ] {
            assert!(
                !same_origin(&base, &url::Url::parse(other).unwrap()),
                "{other}"
            );
        }
    }

    #[test]
    fn credential_headers_are_marked_sensitive() {
        assert!(sensitive_header("key-1").unwrap().is_sensitive());
        assert!(sensitive_header("bad\nvalue").is_err());
    }
}
