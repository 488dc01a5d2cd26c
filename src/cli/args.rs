//! The `secprov-operator` command line, in the library so that tests can parse the commands
//! the documentation shows with the very definition the binary uses (tests/docs.rs).
use clap::{Parser, Subcommand};

/// The `secprov-operator` binary's arguments.
#[derive(Parser, Debug)]
#[command(
    name = "secprov-operator",
    version,
    about = "Declare SaaS security identity providers as Kubernetes resources"
)]
pub struct Cli {
    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG, ~/.kube/config or the in-cluster service account).
    // Boxed: its many flags would make every variant as large (clippy::large_enum_variant).
    Run(Box<crate::app::RunArgs>),
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
        /// Terraform's convention for CI: exit 0 when nothing would change, 2 when changes are
        /// pending, 1 on an error or when a manifest cannot be applied (`!` lines). Without it,
        /// 0 unless the plan itself fails.
        #[arg(long)]
        detailed_exitcode: bool,
    },
}
