//! The `zsxq-cache` binary: parse the command line, set up logging, run.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = zsxq_cache::cli::Cli::parse();
    // `.env` first, so RUST_LOG and LOG_FORMAT may live there too.
    zsxq_cache::config::load_dotenv();
    if let Err(e) = zsxq_cache::telemetry::init() {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    match zsxq_cache::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
