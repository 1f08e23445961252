//! Logging setup. `RUST_LOG` filters (default `info`); secrets never reach a
//! log line because they only exist as [`crate::config::Secret`], whose
//! `Debug`/`Display` print a placeholder. Logs go to standard error, so
//! commands that print data (`refund-list --format csv`) keep standard
//! output clean for a pipe or a file.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only for a person at a terminal; log files and collectors
        // get plain text they can search.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
