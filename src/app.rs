//! `secprov-operator run`: the probes and metrics server, the shutdown grace period, leader
//! election, and the controllers.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::Shared;

use crate::controller::{self, Settings};
use crate::health::Health;
use crate::leader::{self, ElectionConfig, Elector, Outcome};
use crate::metrics::Metrics;
use crate::server::{self, ServerState};

/// Options of `secprov-operator run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// How often an in-sync provider is re-read from the remote system (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = positive_duration, env = "SECPROV_RESYNC_INTERVAL")]
    pub resync_interval: Duration,
    /// How soon a provider whose remote state is settling (creating, refreshing) is read again.
    #[arg(long, default_value = "10s", value_parser = positive_duration, env = "SECPROV_PROGRESS_INTERVAL")]
    pub progress_interval: Duration,
    /// Providers reconciled at once.
    #[arg(long, default_value_t = 16, env = "SECPROV_CONCURRENCY")]
    pub concurrency: u16,
    /// Providers of one namespace reconciled at once, over all its connections (default: half
    /// of --concurrency): one tenant holds at most this many slots, however many connections
    /// it makes; the others serve other namespaces.
    #[arg(
        long,
        default_value_t = 0,
        env = "SECPROV_NAMESPACE_CONCURRENCY",
        hide_default_value = true
    )]
    pub namespace_concurrency: u16,
    /// Providers of one connection reconciled at once (default: half of --concurrency, at most
    /// --namespace-concurrency): a slow or hanging remote holds at most this many slots, the
    /// others serve other connections.
    #[arg(
        long,
        default_value_t = 0,
        env = "SECPROV_CONNECTION_CONCURRENCY",
        hide_default_value = true
    )]
    pub connection_concurrency: u16,
    /// Longest time the remote calls of one reconcile may take, retries included.
    #[arg(long, default_value = "2m", value_parser = positive_duration, env = "SECPROV_RECONCILE_TIMEOUT")]
    pub reconcile_timeout: Duration,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SECPROV_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "SECPROV_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Resyncs read each connection's providers in pages (about N/100 remote reads per resync
    /// of N providers) instead of one GET per provider.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SECPROV_BATCH_OBSERVE")]
    pub batch_observe: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SECPROV_LOG_JSON")]
    pub log_json: bool,
    /// How often each ProviderConnection's credentials are checked remotely.
    #[arg(long, default_value = "5m", value_parser = positive_duration, env = "SECPROV_CONNECTION_CHECK_INTERVAL")]
    pub connection_check_interval: Duration,
    /// Run the controllers only while holding the Lease `--leader-election-id`, so several
    /// replicas can run with one active (deploy/ turns it on).
    #[arg(long, env = "SECPROV_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease, and of the claims (one Lease per managed remote provider, so
    /// at most one SecurityProvider manages it; every replica and shard of one installation
    /// must share it). Default: POD_NAMESPACE, the in-cluster namespace, --namespace, then
    /// `default`.
    #[arg(long, env = "SECPROV_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease (default: `secprov-operator`, or with --watch-label-selector
    /// `secprov-operator-shard-<hash of the selector>`, so each shard elects its own leader).
    #[arg(long, env = "SECPROV_LEADER_ELECTION_ID")]
    pub leader_election_id: Option<String>,
    /// Reconcile only the SecurityProviders whose labels match this selector (same syntax and
    /// meaning as Flux's flag), e.g. `sharding.secprov.dev/key=a`; run one Deployment per
    /// shard with disjoint selectors, plus `!sharding.secprov.dev/key` for the unlabelled.
    #[arg(long, env = "SECPROV_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,
    /// How long a Lease that is not renewed keeps the others waiting.
    #[arg(long, default_value = "15s", value_parser = positive_duration, env = "SECPROV_LEADER_ELECTION_LEASE_DURATION")]
    pub leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops (and exits).
    #[arg(long, default_value = "10s", value_parser = positive_duration, env = "SECPROV_LEADER_ELECTION_RENEW_DEADLINE")]
    pub leader_election_renew_deadline: Duration,
    /// Time between acquire/renew attempts.
    #[arg(long, default_value = "2s", value_parser = positive_duration, env = "SECPROV_LEADER_ELECTION_RETRY_PERIOD")]
    pub leader_election_retry_period: Duration,
    /// The ClusterRole that SecretAccessDenied tells a namespace to bind (the Helm chart names
    /// it after the release).
    #[arg(long, default_value = crate::backend::connect::DEFAULT_CREDENTIAL_READER_ROLE, env = "SECPROV_CREDENTIAL_READER_ROLE")]
    pub credential_reader_role: String,
    /// Secret holding the key of the secrets fingerprint (`secretsHash` in status); created
    /// with a random key on first start. Delete it and restart to rotate the key.
    #[arg(long, default_value = crate::fingerprint_key::DEFAULT_SECRET_NAME, env = "SECPROV_FINGERPRINT_KEY_SECRET")]
    pub fingerprint_key_secret: String,
    /// Namespace of that Secret (default: the operator's own, as for the Lease: POD_NAMESPACE,
    /// the in-cluster namespace, --namespace, then `default`).
    #[arg(long, env = "SECPROV_FINGERPRINT_KEY_NAMESPACE")]
    pub fingerprint_key_namespace: Option<String>,
}

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the operator until SIGTERM (or a lost Lease).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::telemetry::init(args.log_json);
    crate::backend::connect::set_credential_reader_role(args.credential_reader_role.clone());
    let kube_config = kube::Config::infer()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    // Validated before anything starts: a bad selector or bad timings are a start-up error,
    // not a later surprise.
    let label_selector = crate::shard::parse_selector(args.watch_label_selector.as_deref())?;
    let elector = args
        .leader_election
        .then(|| {
            Elector::new(
                kube_config.clone(),
                election_config(&args, label_selector.as_deref()),
            )
        })
        .transpose()?;
    // Not fenced: a standby needs the key too, and create-if-absent makes its create safe.
    let unfenced = kube::Client::try_from(kube_config.clone())
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let fingerprint_key = load_fingerprint_key(&unfenced, &args).await?;
    // Every status, finalizer and Event write passes the leader fence.
    let client = leader::fenced_client(kube_config, leader::fence())
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(args.reconcile_timeout));
    serve_probes(args.metrics_addr, metrics.clone(), health.clone()).await?;
    let settings = Settings {
        resync_interval: args.resync_interval,
        progress_interval: args.progress_interval,
        concurrency: args.concurrency.max(1),
        namespace: args.namespace.clone(),
        connection_check_interval: args.connection_check_interval,
        batch_observe: args.batch_observe,
        label_selector,
        namespace_concurrency: args.namespace_concurrency,
        connection_concurrency: args.connection_concurrency,
        reconcile_timeout: args.reconcile_timeout,
        claims_namespace: lease_namespace(&args),
        fingerprint_key,
        write_fence: leader::fence(),
        ..Settings::default()
    };
    let shutdown = shutdown_signal().boxed().shared();
    exit_after_grace(shutdown.clone());
    metrics.set_leader(elector.is_none());
    let Some(elector) = elector else {
        return controller::run(client, settings, metrics, health, shutdown).await;
    };
    // A standby is healthy and ready: it is doing its job, which is to wait. Once it leads,
    // it is ready again when its caches are filled.
    health.set_ready(true);
    run_as_leader(elector, client, settings, metrics, health, shutdown).await
}

type ShutdownSignal = Shared<futures::future::BoxFuture<'static, ()>>;

/// Serves /metrics, /healthz and /readyz in the background. Fatal when the address cannot be
/// bound or the server stops: an operator that cannot be watched or probed is not healthy.
async fn serve_probes(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<()> {
    let listener = server::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics server to {addr} (--metrics-addr)"))?;
    let state = ServerState { metrics, health };
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, state).await {
            tracing::error!(error = %e, %addr, "metrics server failed; exiting");
            std::process::exit(1);
        }
    });
    Ok(())
}

/// Observes the signal in a task of its own, so it is seen (and logged) whatever the
/// controller is doing, and bounds the graceful stop: in-flight reconciles get a grace period
/// well inside Kubernetes' default 30 s, then the process exits anyway.
fn exit_after_grace(shutdown: ShutdownSignal) {
    tokio::spawn(async move {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight work did not finish within the grace period; exiting");
        std::process::exit(0);
    });
}

/// Waits for the Lease, then runs the controllers while it is held.
async fn run_as_leader(
    elector: Elector,
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let work = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move {
            metrics.set_leader(true);
            controller::run(client, settings, metrics, health, shutdown).await
        }
    };
    match elector.run(work, shutdown).await {
        Outcome::Finished(result) => result,
        Outcome::StoppedAsStandby => Ok(()),
        Outcome::Lost => {
            metrics.set_leader(false);
            // The fence already stops every write; exit at once rather than wait for tasks,
            // and let Kubernetes restart us as a fresh candidate.
            tracing::error!(
                lease = %elector.config().lease_name,
                "lost leadership; exiting"
            );
            std::process::exit(1);
        }
    }
}

fn election_config(args: &RunArgs, selector: Option<&str>) -> ElectionConfig {
    ElectionConfig {
        namespace: lease_namespace(args),
        lease_name: args
            .leader_election_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| crate::shard::default_lease_name(selector)),
        identity: leader::default_identity().to_owned(),
        lease_duration: args.leader_election_lease_duration,
        renew_deadline: args.leader_election_renew_deadline,
        retry_period: args.leader_election_retry_period,
    }
}

/// The secrets fingerprint key, read (or created) once at start: every replica of an
/// installation, standbys included, holds the same key before it may reconcile.
async fn load_fingerprint_key(
    client: &kube::Client,
    args: &RunArgs,
) -> anyhow::Result<crate::fingerprint_key::FingerprintKey> {
    let namespace = args
        .fingerprint_key_namespace
        .clone()
        .unwrap_or_else(|| operator_namespace(args));
    let api = kube::Api::namespaced(client.clone(), &namespace);
    let load = crate::fingerprint_key::load_or_create(&api, &args.fingerprint_key_secret);
    let key = tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .context("reading the secrets fingerprint key took over 60 s")??;
    tracing::info!(key_id = key.id(), secret = %args.fingerprint_key_secret, %namespace, "secrets fingerprint key loaded");
    Ok(key)
}

/// Where the Lease lives when `--leader-election-namespace` is not given.
fn lease_namespace(args: &RunArgs) -> String {
    args.leader_election_namespace
        .clone()
        .unwrap_or_else(|| operator_namespace(args))
}

/// The operator's own namespace: POD_NAMESPACE, the in-cluster namespace, --namespace, then
/// `default`.
fn operator_namespace(args: &RunArgs) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
        })
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into())
}

/// Resolves on SIGTERM or Ctrl-C, so in-flight reconciles finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// A duration flag that must be above zero: a zero interval would requeue in a busy loop (or
/// make leader election meaningless), so it is refused at start with the flag's name.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod flag_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn zero_intervals_are_refused_with_the_flag_name() {
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("0").is_err());
        assert_eq!(positive_duration("2s"), Ok(Duration::from_secs(2)));
        let err = TestCli::try_parse_from(["secprov-operator", "--resync-interval", "0s"])
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("--resync-interval") && err.contains("greater than zero"),
            "{err}"
        );
        let err =
            TestCli::try_parse_from(["secprov-operator", "--connection-check-interval", "0ms"])
                .expect_err("refused")
                .to_string();
        assert!(err.contains("--connection-check-interval"), "{err}");
    }
}
