//! Leader election, and the fence that stops a deposed leader's writes at once.
//!
//! The election is Materialize's `k8s-controller` [`LeaderElection`]: client-go's protocol on a
//! `coordination.k8s.io/v1` Lease. A candidate takes the Lease when it has no holder, or when
//! the holder has not renewed it for `lease_duration` as measured on the candidate's own clock
//! since it last saw the record change (no trust in other machines' clocks); writes carry the
//! resourceVersion, so two candidates never win the same round; the leader renews every
//! `retry_period`, and the whole renew cycle (each attempt is bounded by the time left) ends
//! at `renew_deadline` after the last successful renewal was *sent*. Chosen over
//! `kube-lease-manager` 0.13, which also builds against kube 5, because that one judges expiry
//! by comparing the Lease's timestamps with the local clock (it tolerates skew only up to its
//! `grace`), has no renew deadline and takes whole seconds only, so our client-go-style flags
//! would not map onto it.
//!
//! What an elector alone cannot give is a bound that every writer checks. It notices a lost
//! Lease only when its renew loop next runs; after a pause (a long GC, SIGSTOP, a starved
//! node), in-flight reconciles resume at the same moment and may write first. So every write
//! leaving this process checks the [`WriteFence`]: the shared HTTP layer of the backends for
//! every non-GET request, and a layer on the Kubernetes client for status, finalizer and Event
//! writes. The fence is open until `renew_deadline` after the last successful Lease write was
//! sent, on the monotonic clock (which keeps running while the process is stopped). Another
//! replica can take over no earlier than `lease_duration` after it saw that write, so a write
//! the fence lets through leaves at least `lease_duration - renew_deadline` before any
//! takeover. The fence learns of Lease writes from a layer on the elector's own client, since
//! the crate does not expose its renewal times.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, Ready, ready};
use http::{Method, Request, Response};
use k8s_controller::LeaderElection;
use kube::Client;
use kube::client::{Body, ClientBuilder};
use tower::{BoxError, Layer, Service};

/// Timing and naming of the election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity, written as `holderIdentity`.
    pub identity: String,
    /// How long a Lease that is not renewed stays valid for the others.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up leadership.
    pub renew_deadline: Duration,
    /// Time between attempts (acquire and renew).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Checks `lease_duration > renew_deadline > retry_period > 0`: a leader that cannot renew
    /// must stop before another replica may take over, and get more than one try before that.
    pub fn validate(&self) -> Result<(), String> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.identity.is_empty() {
            return Err("the leader election identity must not be empty".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(format!(
                "--leader-election-lease-duration must be at least 1s, got {}",
                show(self.lease_duration)
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-election-renew-deadline ({}) must be shorter than \
                 --leader-election-lease-duration ({}): a leader that cannot renew must stop \
                 before another replica may take over",
                show(self.renew_deadline),
                show(self.lease_duration)
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-election-retry-period ({}) must be positive and shorter than \
                 --leader-election-renew-deadline ({}): the leader must be able to retry a \
                 failed renewal before it gives up",
                show(self.retry_period),
                show(self.renew_deadline)
            ));
        }
        Ok(())
    }
}

/// This process's identity: `POD_NAME` in a cluster, otherwise `hostname-pid`. Also sent in
/// the `User-Agent` of remote calls, so a remote audit log tells the replicas apart.
pub fn default_identity() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        if let Ok(pod) = std::env::var("POD_NAME")
            && !pod.is_empty()
        {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "secprov-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// A write refused because this replica does not (or no longer) hold the leader Lease.
#[derive(Debug, thiserror::Error)]
#[error("this replica does not hold the leader Lease: writes are stopped")]
pub struct NotLeader;

#[derive(Debug)]
enum FenceState {
    /// No election: every write may leave.
    Open,
    /// Election on: writes may leave until `until`, `valid_for` after the last Lease write.
    Leading {
        valid_for: Duration,
        until: Option<Instant>,
    },
    /// Leadership lost or given up: no write leaves any more.
    Revoked,
}

/// Whether this process may write now. See the module documentation.
#[derive(Debug)]
pub struct WriteFence {
    state: Mutex<FenceState>,
}

impl Default for WriteFence {
    fn default() -> Self {
        WriteFence::new()
    }
}

impl WriteFence {
    /// An open fence (no election).
    pub const fn new() -> Self {
        WriteFence {
            state: Mutex::new(FenceState::Open),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Election on: no write leaves until a Lease write succeeds, and each one keeps the fence
    /// open for `valid_for` after it was sent.
    pub fn arm(&self, valid_for: Duration) {
        *self.state() = FenceState::Leading {
            valid_for,
            until: None,
        };
    }

    /// A write to our Lease, sent at `sent_at`, succeeded.
    pub fn renewed(&self, sent_at: Instant) {
        if let FenceState::Leading { valid_for, until } = &mut *self.state() {
            let new = sent_at + *valid_for;
            *until = Some(until.map_or(new, |old| old.max(new)));
        }
    }

    /// Closes the fence for good.
    pub fn revoke(&self) {
        *self.state() = FenceState::Revoked;
    }

    /// Ok when a write may leave now.
    pub fn check(&self) -> Result<(), NotLeader> {
        match &*self.state() {
            FenceState::Open => Ok(()),
            FenceState::Leading {
                until: Some(until), ..
            } if Instant::now() < *until => Ok(()),
            _ => Err(NotLeader),
        }
    }
}

/// The process-wide fence, checked by every remote and Kubernetes write.
pub fn fence() -> &'static WriteFence {
    static FENCE: WriteFence = WriteFence::new();
    &FENCE
}

/// True for methods that may change state.
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A Kubernetes client whose writes pass `fence` (reads always go through).
pub fn fenced_client(
    config: kube::Config,
    fence: &'static WriteFence,
) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(fence))
        .build())
}

/// Tower layer refusing state-changing requests while the fence is closed.
#[derive(Clone, Copy, Debug)]
pub struct FenceLayer(pub &'static WriteFence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;
    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0,
        }
    }
}

/// See [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: &'static WriteFence,
}

impl<S, B> Service<Request<Body>> for Fenced<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Either<Ready<Result<Response<B>, BoxError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if is_write(request.method())
            && let Err(e) = self.fence.check()
        {
            return Either::Left(ready(Err(Box::new(e))));
        }
        Either::Right(self.inner.call(request))
    }
}

/// Tower layer telling the fence about successful writes to one Lease (the elector's client).
#[derive(Clone, Debug)]
struct LeaseWriteLayer {
    fence: &'static WriteFence,
    /// `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases`: the create goes here.
    collection: String,
    /// `{collection}/{name}`: renewals go here.
    object: String,
}

impl<S> Layer<S> for LeaseWriteLayer {
    type Service = LeaseWrites<S>;
    fn layer(&self, inner: S) -> LeaseWrites<S> {
        LeaseWrites {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct LeaseWrites<S> {
    inner: S,
    layer: LeaseWriteLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<Body>> for LeaseWrites<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let ours = is_write(request.method())
            && (path == self.layer.collection || path == self.layer.object);
        let fence = self.layer.fence;
        // Before the request leaves: the others start their clocks when they see the write,
        // which can be long before the response gets back to us.
        let sent_at = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if ours && response.status().is_success() {
                fence.renewed(sent_at);
            }
            Ok(response)
        })
    }
}

/// How [`Elector::run`] ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The work finished while leading (a graceful shutdown); the Lease was released.
    Finished(T),
    /// Leadership was lost; the work was dropped and the fence is closed.
    Lost,
    /// Shutdown arrived before this replica ever led.
    StoppedAsStandby,
}

/// One candidate in the election, driving the process-wide [`fence`].
pub struct Elector {
    election: LeaderElection,
    config: ElectionConfig,
}

impl Elector {
    /// Validates `config` and builds the elector's own Kubernetes client (unfenced: renewing
    /// the Lease is the one write that must go out while the fence is closed).
    pub fn new(kube_config: kube::Config, config: ElectionConfig) -> anyhow::Result<Self> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid leader election settings: {e}"))?;
        let collection = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            config.namespace
        );
        let layer = LeaseWriteLayer {
            fence: fence(),
            object: format!("{collection}/{}", config.lease_name),
            collection,
        };
        let client = ClientBuilder::try_from(kube_config)?
            .with_layer(&layer)
            .build();
        let election = LeaderElection::new(
            client,
            &config.namespace,
            &config.lease_name,
            &config.identity,
        )
        .with_lease_duration(config.lease_duration)
        .with_renew_deadline(config.renew_deadline)
        .with_retry_period(config.retry_period);
        Ok(Elector { election, config })
    }

    /// The settings.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// Waits for the Lease, then runs `work` while renewing it. On loss `work` is dropped and
    /// the fence closed; when `work` ends by itself the fence is closed and the Lease released.
    /// `shutdown` only matters while standing by: once leading, `work` handles it.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = T>,
        shutdown: impl Future<Output = ()>,
    ) -> Outcome<T> {
        tracing::info!(lease = %self.config.lease_name, namespace = %self.config.namespace, identity = %self.config.identity, "waiting for leadership");
        fence().arm(self.config.renew_deadline);
        let leading = AtomicBool::new(false);
        let work = async {
            leading.store(true, Ordering::SeqCst);
            tracing::info!(identity = %self.config.identity, "became the leader");
            let output = work.await;
            fence().revoke();
            output
        };
        let standby_stop = async {
            shutdown.await;
            if leading.load(Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
        };
        tokio::select! {
            output = self.election.with_lease(work) => match output {
                Some(output) => Outcome::Finished(output),
                None => {
                    fence().revoke();
                    Outcome::Lost
                }
            },
            () = standby_stop => Outcome::StoppedAsStandby,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ElectionConfig {
        ElectionConfig {
            namespace: "ns".into(),
            lease_name: "secprov-operator".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn timings_must_be_lease_over_renew_deadline_over_retry_period() {
        assert_eq!(config().validate(), Ok(()));
        let err = ElectionConfig {
            renew_deadline: Duration::from_secs(15),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.contains("--leader-election-renew-deadline (15s) must be shorter than --leader-election-lease-duration (15s)"),
            "{err}"
        );
        let err = ElectionConfig {
            retry_period: Duration::from_secs(10),
            ..config()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.contains("--leader-election-retry-period (10s)"),
            "{err}"
        );
        let zero = ElectionConfig {
            retry_period: Duration::ZERO,
            ..config()
        };
        assert!(zero.validate().is_err());
        let short = ElectionConfig {
            lease_duration: Duration::from_millis(500),
            renew_deadline: Duration::from_millis(400),
            retry_period: Duration::from_millis(100),
            ..config()
        };
        assert!(short.validate().unwrap_err().contains("at least 1s"));
    }

    #[test]
    fn an_armed_fence_opens_only_for_the_renew_deadline_after_a_lease_write_was_sent() {
        let fence = WriteFence::new();
        assert!(fence.check().is_ok(), "no election: open");
        fence.arm(Duration::from_millis(200));
        assert!(
            fence.check().is_err(),
            "armed: closed until the Lease is ours"
        );
        fence.renewed(Instant::now());
        assert!(fence.check().is_ok());
        // An older renewal (a slow response) never shortens the window.
        fence.renewed(Instant::now() - Duration::from_secs(5));
        assert!(fence.check().is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(fence.check().is_err(), "expired without a renewal");
        fence.renewed(Instant::now());
        assert!(fence.check().is_ok());
        fence.revoke();
        assert!(fence.check().is_err());
        fence.renewed(Instant::now());
        assert!(fence.check().is_err(), "revoked for good");
    }

    type Hits = std::sync::Arc<std::sync::atomic::AtomicUsize>;

    /// A Kubernetes API stand-in answering every request with `status`, counting calls.
    fn api(
        status: u16,
        hits: Hits,
    ) -> impl Service<
        Request<Body>,
        Response = Response<Body>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
    > + Clone {
        tower::service_fn(move |_: Request<Body>| {
            hits.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Response::builder().status(status).body(Body::empty())?) }
        })
    }

    fn request(method: Method, path: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    }

    fn leaked_fence() -> &'static WriteFence {
        Box::leak(Box::new(WriteFence::new()))
    }

    #[tokio::test]
    async fn the_fenced_client_refuses_writes_while_closed_and_passes_reads() {
        use tower::ServiceExt;
        let fence = leaked_fence();
        fence.arm(Duration::from_secs(10));
        let hits = Hits::default();
        let service = FenceLayer(fence).layer(api(200, hits.clone()));
        let path = "/apis/secprov.dev/v1alpha1/namespaces/ns/securityproviders/p/status";
        for method in [Method::PATCH, Method::POST, Method::PUT, Method::DELETE] {
            let err = service.clone().oneshot(request(method, path)).await;
            assert!(err.unwrap_err().to_string().contains("leader Lease"));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the API");
        let read = service.clone().oneshot(request(Method::GET, path)).await;
        assert_eq!(read.unwrap().status(), 200);
        fence.renewed(Instant::now());
        let write = service.clone().oneshot(request(Method::PATCH, path)).await;
        assert_eq!(write.unwrap().status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn only_successful_writes_to_our_lease_open_the_fence() {
        use tower::ServiceExt;
        let layer = |fence| LeaseWriteLayer {
            fence,
            collection: "/apis/coordination.k8s.io/v1/namespaces/ns/leases".into(),
            object: "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op".into(),
        };
        let ours = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op";
        let cases = [
            (Method::PUT, ours, 200, true),
            (
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
                201,
                true,
            ),
            (Method::PUT, ours, 409, false),
            (Method::GET, ours, 200, false),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/other",
                200,
                false,
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/op",
                200,
                false,
            ),
        ];
        for (method, path, status, opens) in cases {
            let fence = leaked_fence();
            fence.arm(Duration::from_secs(10));
            let service = layer(fence).layer(api(status, Hits::default()));
            let _ = service.oneshot(request(method.clone(), path)).await;
            assert_eq!(fence.check().is_ok(), opens, "{method} {path} -> {status}");
        }
    }

    #[test]
    fn identity_prefers_pod_name() {
        // POD_NAME is not set in tests: hostname-pid.
        if std::env::var("POD_NAME").is_err() {
            assert!(default_identity().ends_with(&format!("-{}", std::process::id())));
        }
    }
}
