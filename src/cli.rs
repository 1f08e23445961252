//! The command line: `serve`, `sim`, `demo`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::sim::SimConfig;
use crate::startup::{Application, shutdown_signal};

#[derive(Debug, Parser)]
#[command(
    name = "zsxq-cache",
    version,
    about = "Member-number cache and refund lists for Zsxq (知识星球) check-in camps"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (configuration from the environment and .env).
    Serve,
    /// Run the simulated Zsxq API.
    Sim(SimConfig),
    /// Simulator + service + web page in one process, on the embedded store.
    Demo(crate::demo::DemoArgs),
    /// Warm the cache now, with a progress bar (same configuration as serve;
    /// with the embedded store, stop the service first: the file is locked).
    Sync(SyncArgs),
    /// Benchmarks against the simulator; they print figures.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Refresh members that are already cached too.
    #[arg(long)]
    pub force: bool,
    /// Per-member upstream calls in flight (1..=10); default API_CONCURRENCY.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub concurrency: Option<u8>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve().await,
        Command::Sim(cfg) => sim(cfg).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Sync(args) => sync(args).await,
        Command::Bench { command } => crate::bench::run(command).await,
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let app = Application::build(config, listener).await?;
    tracing::info!(addr = %app.local_addr()?, "zsxq-cache listening");
    app.run(shutdown_signal()).await?;
    Ok(())
}

async fn sim(cfg: SimConfig) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], cfg.port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let data = std::sync::Arc::new(crate::sim::generate(cfg.seed, cfg.members, cfg.group_id));
    tracing::info!(%addr, members = data.members.len(), group_id = data.group_id, "simulated Zsxq API listening");
    crate::sim::serve(listener, cfg, data, shutdown_signal()).await?;
    Ok(())
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let config = Config::from_env()?;
    let state = crate::startup::build_state(&config).await?;
    let opts = crate::cache::sync::SyncOptions {
        force: args.force,
        concurrency: args
            .concurrency
            .map_or(state.default_concurrency, usize::from),
    };
    let job = state
        .cache
        .jobs()
        .start(&state.cache, opts)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} 同步 [{bar:40}] {pos}/{len} ({percent}%) 失败 {msg} · 剩余 {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message("0");
    let progress = job.progress.clone();
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_length(progress.total.load(Ordering::Relaxed));
                let failed = progress.failed.load(Ordering::Relaxed);
                bar.set_position(progress.done.load(Ordering::Relaxed) + failed);
                bar.set_message(failed.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let outcome = job.wait().await;
    ticker.abort();
    bar.finish_and_clear();
    let report = outcome?;
    state.cache.flush_stats().await;
    println!(
        "同步完成 (sync done): {} synced, {} ok, {} failed, {} skipped, {} ms, source {}",
        report.sync_count,
        report.success_count,
        report.failed_count,
        report.skipped_count,
        report.duration_ms,
        report.source
    );
    for f in &report.failed_users {
        println!("  failed {}: {}", f.user_id, f.error);
    }
    Ok(())
}
