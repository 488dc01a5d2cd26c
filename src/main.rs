//! The `secprov-operator` binary: `run` (the controller), `crd` (the CRDs as YAML), `export`
//! and `plan`. The remote API simulators are a separate binary, `secprov-sim` (sim/).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use futures::FutureExt;
use secprov::controller::{self, Settings};
use secprov::leader::{self, ElectionConfig, Elector, Outcome};
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
    /// Print the remote providers of a connection as SecurityProvider manifests that adopt them
    /// (sorted, without status); applying them changes nothing remotely.
    Export {
        /// Name of the ProviderConnection.
        #[arg(long)]
        connection: String,
        /// Namespace of the connection (default: the kubeconfig's namespace).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Show, without writing anything, what applying the SecurityProviders in a file would
    /// change remotely.
    Plan {
        /// YAML file with SecurityProvider manifests (other kinds are ignored); `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: std::path::PathBuf,
        /// Namespace for manifests without one (default: the kubeconfig's namespace).
        #[arg(short, long)]
        namespace: Option<String>,
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
    /// Resyncs read each connection's providers in pages (about N/100 remote reads per resync
    /// of N providers) instead of one GET per provider.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SECPROV_BATCH_OBSERVE")]
    batch_observe: bool,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", secprov::api::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Export {
            connection,
            namespace,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("cannot build a Kubernetes client from the kubeconfig")?;
            let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
            print!(
                "{}",
                secprov::cli::export(client, &connection, &namespace).await?
            );
            Ok(())
        }
        Command::Plan { file, namespace } => {
            let yaml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let client = kube::Client::try_default()
                .await
                .context("cannot build a Kubernetes client from the kubeconfig")?;
            let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
            let lines = secprov::cli::plan_manifests(client, &yaml, &namespace).await?;
            let count = |pred: fn(&secprov::cli::PlanLine) -> bool| {
                lines.iter().filter(|l| pred(l)).count()
            };
            for line in &lines {
                print!("{line}");
            }
            println!(
                "Plan: {} to create, {} to update, {} unchanged, {} not applicable.",
                count(|l| matches!(l, secprov::cli::PlanLine::Create { .. })),
                count(|l| matches!(l, secprov::cli::PlanLine::Update { .. })),
                count(|l| matches!(l, secprov::cli::PlanLine::NoChange { .. })),
                count(|l| matches!(l, secprov::cli::PlanLine::NotApplied { .. })),
            );
            Ok(())
        }
    }
}

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn run(args: RunArgs) -> anyhow::Result<()> {
    secprov::telemetry::init(args.log_json);
    let kube_config = kube::Config::infer()
        .await
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    // Validated before anything starts: bad timings are a start-up error, not a later surprise.
    let elector = args
        .leader_election
        .then(|| Elector::new(kube_config.clone(), election_config(&args)))
        .transpose()?;
    // Every status, finalizer and Event write passes the leader fence.
    let client = leader::fenced_client(kube_config, leader::fence())
        .context("cannot build a Kubernetes client from the kubeconfig")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let addr = args.metrics_addr;
    // Fatal: without /metrics, /healthz and /readyz the operator cannot be watched or probed.
    let listener = server::bind(addr)
        .await
        .with_context(|| format!("cannot bind the metrics server to {addr} (--metrics-addr)"))?;
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, state).await {
            tracing::error!(error = %e, %addr, "metrics server failed; exiting");
            std::process::exit(1);
        }
    });
    let settings = Settings {
        resync_interval: args.resync_interval,
        progress_interval: args.progress_interval,
        concurrency: args.concurrency.max(1),
        namespace: args.namespace.clone(),
        connection_check_interval: args.connection_check_interval,
        batch_observe: args.batch_observe,
        ..Settings::default()
    };
    let shutdown = shutdown_signal().shared();
    // Observe the signal in a task of its own, so it is seen (and logged) whatever the
    // controller is doing, and bound the graceful stop: in-flight reconciles get a grace period
    // well inside Kubernetes' default 30 s, then the process exits anyway.
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight work did not finish within the grace period; exiting");
            std::process::exit(0);
        });
    }
    let Some(elector) = elector else {
        metrics.set_leader(true);
        ready.store(true, Ordering::Relaxed);
        return controller::run(client, settings, metrics, shutdown).await;
    };
    // A standby is healthy and ready: it is doing its job, which is to wait.
    metrics.set_leader(false);
    ready.store(true, Ordering::Relaxed);
    let work = {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move {
            metrics.set_leader(true);
            controller::run(client, settings, metrics, shutdown).await
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

fn election_config(args: &RunArgs) -> ElectionConfig {
    ElectionConfig {
        namespace: lease_namespace(args),
        lease_name: args.leader_election_id.clone(),
        identity: leader::default_identity().to_owned(),
        lease_duration: args.leader_election_lease_duration,
        renew_deadline: args.leader_election_renew_deadline,
        retry_period: args.leader_election_retry_period,
    }
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
