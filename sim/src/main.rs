//! `secprov-sim`: runs one of the remote API simulators (Coveo, Keystone, JITSudo) on a local
//! address, for the demo and for manual exploration. Test tooling, not part of the operator.
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secprov_sim::faults::{FaultArgs, FaultConfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "secprov-sim",
    version,
    about = "In-memory simulators of the remote APIs secprov-operator talks to"
)]
struct Cli {
    #[command(subcommand)]
    simulator: Simulator,
}

#[derive(Subcommand, Debug)]
enum Simulator {
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
        /// Injected faults (also changeable at run time: POST /_sim/faults).
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// OpenStack Keystone tokens and OS-FEDERATION identity providers.
    Keystone {
        /// Address to listen on, e.g. 127.0.0.1:18090 (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// User accepted by the password method.
        #[arg(long, default_value = "admin")]
        user_name: String,
        /// Domain (name) of that user.
        #[arg(long, default_value = "Default")]
        user_domain_name: String,
        /// Password accepted by the password method.
        #[arg(long, env = "SECPROV_SIM_PASSWORD")]
        password: String,
        /// Application credential id accepted by the application_credential method.
        #[arg(long, default_value = "demo-application-credential")]
        application_credential_id: String,
        /// Application credential secret (the method is refused when unset).
        #[arg(long, env = "SECPROV_SIM_APPLICATION_CREDENTIAL_SECRET")]
        application_credential_secret: Option<String>,
        /// Lifetime of issued tokens.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
        /// Answer errors in Open Telekom Cloud's {"error_code","error_msg"} shape.
        #[arg(long)]
        otc_errors: bool,
        /// Latency added to every request.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Injected faults (also changeable at run time: POST /_sim/faults).
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// JITSudo tenant identity providers.
    Jitsudo {
        /// Address to listen on, e.g. 127.0.0.1:18091 (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Tenant id of the API key (sent by clients as X-Tenant-ID).
        #[arg(long, default_value = "2489e9ad-2ee2-4e00-8ec9-32d5f69181c0")]
        tenant_id: String,
        /// API key the simulator accepts (as X-API-Key).
        #[arg(long, env = "SECPROV_SIM_API_KEY")]
        api_key: String,
        /// How long a sync takes (pending, then syncing, then synced).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        sync_duration: Duration,
        /// Latency added to every request.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Injected faults (also changeable at run time: POST /_sim/faults).
        #[command(flatten)]
        faults: FaultArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    match cli.simulator {
        Simulator::Coveo {
            listen,
            organization_id,
            api_key,
            refresh_duration,
            latency,
            faults,
        } => {
            let config = secprov_sim::coveo::CoveoSimConfig {
                organization_id,
                api_key,
                refresh_duration,
                latency,
                faults: fault_config(&faults)?,
            };
            secprov_sim::coveo::run_standalone(listen, config).await
        }
        Simulator::Keystone {
            listen,
            user_name,
            user_domain_name,
            password,
            application_credential_id,
            application_credential_secret,
            token_ttl,
            otc_errors,
            latency,
            faults,
        } => {
            let config = secprov_sim::keystone::KeystoneSimConfig {
                user_name,
                user_domain_name,
                password,
                application_credential_id,
                // An unguessable secret when none is given: the method is then unusable.
                application_credential_secret: application_credential_secret
                    .unwrap_or_else(secprov_sim::new_request_id),
                token_ttl,
                otc_errors,
                latency,
                faults: fault_config(&faults)?,
            };
            secprov_sim::keystone::run_standalone(listen, config).await
        }
        Simulator::Jitsudo {
            listen,
            tenant_id,
            api_key,
            sync_duration,
            latency,
            faults,
        } => {
            let config = secprov_sim::jitsudo::JitsudoSimConfig {
                tenant_id,
                api_key,
                sync_duration,
                latency,
                faults: fault_config(&faults)?,
                ..Default::default()
            };
            secprov_sim::jitsudo::run_standalone(listen, config).await
        }
    }
}

/// The faults the `--fault-*` flags describe, validated.
fn fault_config(args: &FaultArgs) -> anyhow::Result<FaultConfig> {
    let config = args.to_config();
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}
