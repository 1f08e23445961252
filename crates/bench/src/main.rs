//! `zsxq-bench …` (`cargo run --release -p zsxq-bench -- <what>`):
//! benchmarks that start everything they need through the tests' app builder
//! (the simulator, the service on an embedded store or a private Redis) and
//! print figures. Speed targets live here, never in timed unit tests: the machines
//! are shared and noisy, so every figure is printed with what it is measured
//! against rather than asserted.

mod hot;
mod memory;
mod refund;
mod sync;

use std::process::ExitCode;

/// The benchmarks; each prints its figures and what they are measured
/// against.
#[derive(Debug, clap::Parser)]
#[command(name = "zsxq-bench", version, about)]
enum BenchCommand {
    /// Upstream budget: sync with and without the member list, priority of
    /// a person's lookup during a sync, throttle storms.
    Sync(sync::SyncBenchArgs),
    /// Refund list of the 167-participant camp: cold, warm, and cold while
    /// the simulator rejects calls.
    Refund(refund::BenchArgs),
    /// Hot lookups against nginx proxy_cache, cold stampedes over three
    /// replicas, paging at 1k/100k members, memory per member, RSS.
    Hot(hot::HotArgs),
    /// The service's RSS at idle and after syncing 100 000 and 300 000
    /// members, on the embedded store and on Redis.
    Memory(memory::MemoryArgs),
    /// The service itself, exactly as `zsxq-cache serve` runs it: `hot`
    /// starts its replicas as processes of this binary, so that the load
    /// tool, the harness and the service share no runtime and each
    /// replica's RSS is its own, without needing the service binary built
    /// beside this one.
    #[command(hide = true)]
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    use clap::Parser as _;
    let command = BenchCommand::parse();
    // The service's logs, as `zsxq-cache` sets them up (RUST_LOG, LOG_FORMAT).
    zsxq_cache::config::load_dotenv();
    zsxq_cache::telemetry::init().map_err(anyhow::Error::msg)?;
    match command {
        BenchCommand::Sync(args) => sync::run(args).await?,
        BenchCommand::Refund(args) => refund::run(args).await?,
        BenchCommand::Hot(args) => hot::run(args).await?,
        BenchCommand::Memory(args) => memory::run(args).await?,
        BenchCommand::Serve => {
            let serve = zsxq_cache::cli::Cli {
                command: zsxq_cache::cli::Command::Serve,
            };
            return zsxq_cache::cli::run(serve).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
