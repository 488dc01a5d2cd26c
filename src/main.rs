//! The `secprov-operator` binary: `run` (the controller), `crd` (the CRDs as YAML) and
//! `simulate` (remote API simulators for tests and demos).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use secprov::controller::{self, Settings};
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
    /// Resyncs read each connection's providers in pages (about N/100 remote reads per resync
    /// of N providers) instead of one GET per provider.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "SECPROV_BATCH_OBSERVE")]
    batch_observe: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SECPROV_LOG_JSON")]
    log_json: bool,
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
        namespace: args.namespace,
        batch_observe: args.batch_observe,
        ..Settings::default()
    };
    ready.store(true, Ordering::Relaxed);
    controller::run(client, settings, metrics, shutdown_signal()).await
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
