//! The `secprov-operator` binary: `run` (the controller), `crd` (the CRDs as YAML), `export`
//! and `plan`. Only parses arguments and dispatches: the work lives in the library
//! (`secprov::app`, `secprov::cli`). The remote API simulators are a separate binary,
//! `secprov-sim` (sim/).
use clap::Parser;
use secprov::cli::args::{Cli, Command};
use std::process::ExitCode;

// jemalloc by default (feature `jemalloc`); BENCHMARKS.md ("Allocators") compares it with the
// system allocator (`--no-default-features`) and mimalloc (feature `mimalloc` without jemalloc).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc tuned for a long-running controller with bursts: freed pages go back to the system
/// after a second (a background thread purges them, not the next allocating call), and two
/// arenas are enough for the few worker threads. Read by jemalloc at start (prefixed symbol
/// of tikv-jemalloc-sys); `_RJEM_MALLOC_CONF` overrides it.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf =
    JemallocConf(c"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// jemalloc's `const char *malloc_conf`.
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: a pointer to a static string, never written.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for JemallocConf {}

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", secprov::api::crds_yaml()?),
        Command::Run(args) => secprov::app::run(*args).await?,
        Command::Export {
            connection,
            namespace,
        } => secprov::cli::export_command(&connection, namespace).await?,
        Command::Plan {
            file,
            namespace,
            detailed_exitcode,
        } => {
            let code = secprov::cli::plan_command(&file, namespace).await?;
            return Ok(if detailed_exitcode {
                ExitCode::from(code as u8)
            } else {
                ExitCode::SUCCESS
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
