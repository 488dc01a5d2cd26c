//! Logging setup: human-readable by default, JSON when asked for.
use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global tracing subscriber. `RUST_LOG` overrides the default filter.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,hyper=warn,reqwest=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().with_current_span(false))
            .init();
    } else {
        // Colour codes only for a person at a terminal: a log file or pipe (kubectl logs, a
        // collector) would get raw escape sequences.
        let ansi = std::io::stdout().is_terminal();
        registry
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .init();
    }
}
