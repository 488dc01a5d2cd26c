//! The `secprov-operator` binary: `run` (the controller), `crd` (the CRDs as YAML) and
//! `simulate` (remote API simulators for tests and demos).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use futures::FutureExt;
use secprov::controller::{self, Settings};
use secprov::leader::{self, ElectionConfig, LeaderElector};
use secprov::metrics::Metrics;
use secprov::server::{self, ServerState};

#[derive(Parser, Debug)]
#[command(
    name = "secprov-operator",
    version,
    about = "Declare SaaS security identity providers as Kubernetes resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG, ~/.kube/config or the in-cluster service account).
    Run(RunArgs),
    /// Print every CRD as YAML (identical to crds/secprov.dev.yaml).
    Crd,
    /// Run a remote API simulator on a local address.
    Simulate {
        #[command(subcommand)]
        backend: SimulateBackend,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// How often an in-sync provider is re-read from the remote system (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "SECPROV_RESYNC_INTERVAL")]
    resync_interval: Duration,
    /// How soon a provider whose remote state is settling (creating, refreshing) is read again.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "SECPROV_PROGRESS_INTERVAL")]
    progress_interval: Duration,
    /// Providers reconciled at once.
    #[arg(long, default_value_t = 16, env = "SECPROV_CONCURRENCY")]
    concurrency: u16,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SECPROV_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "SECPROV_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SECPROV_LOG_JSON")]
    log_json: bool,
    /// How often each ProviderConnection's credentials are checked remotely.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "SECPROV_CONNECTION_CHECK_INTERVAL")]
    connection_check_interval: Duration,
    /// Run the controllers only while holding the Lease `--leader-election-id`, so several
    /// replicas can run with one active (deploy/ turns it on).
    #[arg(long, env = "SECPROV_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE, the in-cluster namespace, --namespace,
    /// then `default`).
    #[arg(long, env = "SECPROV_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        default_value = "secprov-operator",
        env = "SECPROV_LEADER_ELECTION_ID"
    )]
    leader_election_id: String,
    /// How long a Lease that is not renewed keeps the others waiting.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, env = "SECPROV_LEADER_ELECTION_LEASE_DURATION")]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops (and exits).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "SECPROV_LEADER_ELECTION_RENEW_DEADLINE")]
    leader_election_renew_deadline: Duration,
    /// Time between acquire/renew attempts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "SECPROV_LEADER_ELECTION_RETRY_PERIOD")]
    leader_election_retry_period: Duration,
}

#[derive(Subcommand, Debug)]
enum SimulateBackend {
    /// Coveo Security Cache API.
    Coveo {
        /// Address to listen on, e.g. 127.0.0.1:8089 (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Organization id the simulator serves.
        #[arg(long, default_value = "demo-org")]
        organization_id: String,
        /// API key the simulator accepts (as `Authorization: Bearer <key>`).
        #[arg(long, env = "SECPROV_SIM_API_KEY")]
        api_key: String,
        /// How long a refresh stays REFRESHING.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        refresh_duration: Duration,
        /// Latency added to every request.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        latency: Duration,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", secprov::api::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Simulate { backend } => {
            secprov::telemetry::init(false);
            match backend {
                SimulateBackend::Coveo {
                    listen,
                    organization_id,
                    api_key,
                    refresh_duration,
                    latency,
                } => {
                    let config = secprov::simulator::coveo::CoveoSimConfig {
                        organization_id,
                        api_key,
                        refresh_duration,
                        latency,
                        ..Default::default()
                    };
                    secprov::simulator::coveo::run_standalone(listen, config).await
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    secprov::telemetry::init(args.log_json);
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = server::serve(addr, state).await {
            tracing::error!(error = %e, %addr, "metrics server failed");
        }
    });
    let settings = Settings {
        resync_interval: args.resync_interval,
        progress_interval: args.progress_interval,
        concurrency: args.concurrency.max(1),
        namespace: args.namespace.clone(),
        connection_check_interval: args.connection_check_interval,
        ..Settings::default()
    };
    let shutdown = shutdown_signal().shared();
    if !args.leader_election {
        metrics.set_leader(true);
        ready.store(true, Ordering::Relaxed);
        return controller::run(client, settings, metrics, shutdown).await;
    }

    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        ElectionConfig {
            namespace: lease_namespace(&args),
            lease_name: args.leader_election_id.clone(),
            identity: leader::default_identity(),
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        },
    ));
    // A standby is healthy and ready: it is doing its job, which is to wait.
    metrics.set_leader(false);
    ready.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.clone() => return Ok(()),
    }
    metrics.set_leader(true);
    let lost = Arc::new(AtomicBool::new(false));
    let holder = {
        let (elector, lost) = (elector.clone(), lost.clone());
        tokio::spawn(async move {
            elector.hold().await;
            lost.store(true, Ordering::SeqCst);
        })
    };
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = async {
                    while !lost.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } => {}
            }
        }
    };
    let result = controller::run(client, settings, metrics.clone(), stop).await;
    holder.abort();
    if lost.load(Ordering::SeqCst) {
        metrics.set_leader(false);
        // Simplest safe recovery: exit, and let Kubernetes restart us as a fresh candidate.
        anyhow::bail!(
            "lost leadership of Lease {:?}; exiting",
            elector.config().lease_name
        );
    }
    elector.release().await;
    result
}

/// Where the Lease lives when `--leader-election-namespace` is not given.
fn lease_namespace(args: &RunArgs) -> String {
    args.leader_election_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
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
