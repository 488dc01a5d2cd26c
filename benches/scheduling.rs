//! Virtual-time benchmark of the reconcile scheduling (tokio paused time: exact and the same on
//! any machine, however loaded).
//!
//! What is real: kube-runtime's `Controller` (its scheduler, the bounded concurrency of
//! `Config::concurrency`, requeues) fed by a trigger stream of N objects from a reflector
//! store, and the operator's batch-observation [`Snapshots`] with its single flight.
//! What is modelled: the reconcile. The first reconcile of an object is the Coveo create path
//! (GET 404, POST: k = 2 remote calls of L each; 3 before the POST's answer served as the
//! observed provider); later ones are resyncs, which look the
//! provider up in the connection's snapshot (a paged list of 100 per page: the first page,
//! then the others 8 at a time, L per round) and fall back to one GET of L on a miss. Each reconcile requeues after the resync interval
//! with the operator's ±10 % jitter (seeded, so runs are identical). The Kubernetes API (status
//! writes) costs no time here.
//!
//! A bench target that prints its figures and fails when they miss their bounds:
//! `cargo bench --bench scheduling` (part of `make bench`) runs N = 10,000 and N = 100,000;
//! `cargo bench --bench scheduling -- --n=20000` runs one N.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector;
use kube::runtime::watcher;
use rand::{RngExt, SeedableRng};
use secprov::backend::coveo::CoveoConfig;
use secprov::backend::{
    ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey, RemoteHealth, RemoteState,
};
use secprov::controller::snapshot::{Snapshots, snapshot_max_age};
use secprov::error::RemoteError;
use tokio::time::Instant;

const PAGE: u64 = 100;
/// Remote calls of a Coveo create (k): GET (404) and POST.
const CREATE_CALLS: u32 = 2;

fn observed(id: &str) -> ObservedProvider {
    ObservedProvider {
        remote_id: id.into(),
        config: ProviderConfig::Coveo(CoveoConfig::desired(id, id, &Default::default())),
        state: RemoteState::default(),
        health: RemoteHealth::Healthy,
    }
}

/// A remote system with latency `l` per request, counting requests.
struct Remote {
    l: Duration,
    ids: Mutex<Vec<String>>,
    requests: AtomicU64,
    list_requests: AtomicU64,
}

#[async_trait]
impl ProviderBackend for Remote {
    async fn observe(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.l).await;
        Ok(Some(observed(&key.id)))
    }
    async fn create(&self, _: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        unreachable!()
    }
    async fn update(
        &self,
        _: &ObservedProvider,
        _: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        unreachable!()
    }
    async fn verify_credentials(&self) -> Result<(), RemoteError> {
        unreachable!()
    }
    async fn delete(&self, _: &str, _: Option<&ProviderConfig>) -> Result<bool, RemoteError> {
        unreachable!()
    }
    async fn refresh(&self, _: &str) -> Result<bool, RemoteError> {
        unreachable!()
    }
    async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        let ids = self.ids.lock().unwrap().clone();
        let pages = (ids.len() as u64).div_ceil(PAGE).max(1);
        self.requests.fetch_add(pages, Ordering::Relaxed);
        self.list_requests.fetch_add(pages, Ordering::Relaxed);
        // First page, then the others LIST_CONCURRENCY at a time (CoveoClient::list_each_concurrently).
        let rounds = 1 + (pages - 1).div_ceil(secprov::backend::coveo::LIST_CONCURRENCY as u64);
        tokio::time::sleep(self.l * rounds as u32).await;
        Ok(ids.iter().map(|id| observed(id)).collect())
    }
}

struct Ctx {
    remote: Arc<Remote>,
    backend: Arc<dyn ProviderBackend>,
    snapshots: Snapshots<&'static str>,
    resync: Duration,
    created: Mutex<HashMap<String, Instant>>,
    reconciles: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, std::convert::Infallible> {
    ctx.reconciles.fetch_add(1, Ordering::Relaxed);
    let id = cm.metadata.name.clone().unwrap();
    let known = ctx.created.lock().unwrap().contains_key(&id);
    if known {
        if ctx
            .snapshots
            .lookup(&"conn", &ctx.backend, &id)
            .await
            .is_none()
        {
            ctx.backend
                .observe(&ProviderKey {
                    id: id.clone(),
                    known_remote_id: None,
                })
                .await
                .unwrap();
        }
    } else {
        // GET (404), POST.
        ctx.remote
            .requests
            .fetch_add(CREATE_CALLS as u64, Ordering::Relaxed);
        tokio::time::sleep(ctx.remote.l * CREATE_CALLS).await;
        ctx.remote.ids.lock().unwrap().push(id.clone());
        ctx.snapshots.record(&"conn", &observed(&id));
        ctx.created.lock().unwrap().insert(id, Instant::now());
    }
    let base = ctx.resync.as_millis() as u64;
    let jitter = ctx.rng.lock().unwrap().random_range(0..=base / 5);
    Ok(Action::requeue(Duration::from_millis(
        base - base / 10 + jitter,
    )))
}

fn error_policy(_: Arc<ConfigMap>, _: &std::convert::Infallible, _: Arc<Ctx>) -> Action {
    unreachable!()
}

struct Report {
    converge: Duration,
    ideal: Duration,
    resync_reads: Vec<u64>,
    resync_list_reads: Vec<u64>,
}

async fn simulate(n: usize, c: u16, l: Duration, resync: Duration, periods: u32) -> Report {
    let (store, mut writer) = reflector::store::<ConfigMap>();
    let objects: Vec<ConfigMap> = (0..n)
        .map(|i| {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(format!("sp-{i:06}"));
            cm.metadata.namespace = Some("bench".into());
            cm
        })
        .collect();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in &objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let remote = Arc::new(Remote {
        l,
        ids: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        list_requests: AtomicU64::new(0),
    });
    let ctx = Arc::new(Ctx {
        remote: remote.clone(),
        backend: remote.clone(),
        snapshots: Snapshots::new(snapshot_max_age(resync)),
        resync,
        created: Mutex::new(HashMap::new()),
        reconciles: AtomicU64::new(0),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(7)),
    });
    let trigger =
        futures::stream::iter(objects.into_iter().map(Ok)).chain(futures::stream::pending());
    let start = Instant::now();
    let controller = Controller::for_stream(trigger, store)
        .with_config(Config::default().concurrency(c))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let driver = tokio::spawn(controller);

    // Convergence: every object created once.
    while ctx.created.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converge = ctx
        .created
        .lock()
        .unwrap()
        .values()
        .max()
        .unwrap()
        .duration_since(start);
    let ideal = l * CREATE_CALLS * (n.div_ceil(c as usize) as u32);
    // Then whole resync periods, counting remote reads in each.
    let mut resync_reads = Vec::new();
    let mut resync_list_reads = Vec::new();
    let mut t = start + converge;
    for _ in 0..periods {
        let (r0, l0) = (
            remote.requests.load(Ordering::Relaxed),
            remote.list_requests.load(Ordering::Relaxed),
        );
        t += resync;
        tokio::time::sleep_until(t).await;
        resync_reads.push(remote.requests.load(Ordering::Relaxed) - r0);
        resync_list_reads.push(remote.list_requests.load(Ordering::Relaxed) - l0);
    }
    driver.abort();
    Report {
        converge,
        ideal,
        resync_reads,
        resync_list_reads,
    }
}

fn print(n: usize, c: u16, l: Duration, r: &Report) {
    println!(
        "N={n} C={c} L={l:?} k={CREATE_CALLS}: all created after {:.3} s virtual, ideal ceil(N/C)*k*L = {:.3} s, ratio {:.4}; remote reads per resync period: {:?} (of which list pages {:?}; target <= N/100 = {})",
        r.converge.as_secs_f64(),
        r.ideal.as_secs_f64(),
        r.converge.as_secs_f64() / r.ideal.as_secs_f64(),
        r.resync_reads,
        r.resync_list_reads,
        n / 100
    );
}

async fn check(n: usize) {
    let (c, l, resync) = (16, Duration::from_millis(50), Duration::from_secs(300));
    let report = simulate(n, c, l, resync, 3).await;
    print(n, c, l, &report);
    assert!(report.converge.as_secs_f64() <= report.ideal.as_secs_f64() * 1.5);
    // About one paged list per resync period. When the objects' resyncs are spread over the
    // whole period (100k objects take longer to create than a resync interval), a snapshot
    // lives 90 % of the period, so some periods see two lists.
    let pages = (n as u64).div_ceil(PAGE);
    for reads in &report.resync_reads {
        assert!(*reads <= 2 * pages, "{reads}");
    }
    if n <= 10_000 {
        assert!(report.resync_reads.iter().all(|r| *r <= pages));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; the only option is `--n=N`.
    let sizes: Vec<usize> = std::env::args()
        .filter_map(|arg| arg.strip_prefix("--n=")?.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    // Paused time: the runtime jumps to the next timer whenever every task waits.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    for n in sizes {
        runtime.block_on(check(n));
    }
}
