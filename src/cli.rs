//! The command line: `serve`, `sim`, `demo`, `sync`, `refund-list`,
//! `doctor` (the benchmarks are the `zsxq-bench` binary, `crates/bench`).
//!
//! `refund-list` builds the service's parts in-process from the same
//! configuration as `serve` (environment and `.env`), so it shares the
//! store — cached numbers and rankings — with a running service, and prints
//! or writes the list. An incomplete list is still written, then reported as
//! an error (exit status 1), so a script cannot mistake it for a complete one.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::{CheckinId, RankingType};
use crate::refund::{GraceDays, RefundList, RequiredDays, Rule, export};
use crate::startup::{Application, build_state, shutdown_signal};
use zsxq_sim::SimConfig;

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
    /// Build a camp's refund list and print it (configuration as for serve).
    RefundList(RefundListArgs),
    /// Check the configuration against the upstream in a handful of calls:
    /// exit 0 when the product will work, 1 when it will not, 2 when the
    /// configuration is unusable.
    Doctor,
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

/// `zsxq-cache refund-list <checkin_id> [--required-days N] [--grace-days N]
/// [--ranking-type T] [--format F] [--output FILE]`
#[derive(Debug, Clone, clap::Args)]
pub struct RefundListArgs {
    /// The camp's checkin_id (digits; `GET /api/camps` lists them).
    pub checkin_id: String,
    /// Days a participant must have checked in to qualify (1..=365).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub required_days: u32,
    /// Days a participant may fall short of --required-days and still
    /// qualify (0..=364, below --required-days).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=364))]
    pub grace_days: u32,
    /// The ranking the days are counted on.
    #[arg(long, value_enum, default_value_t = RankingChoice::Accumulated)]
    pub ranking_type: RankingChoice,
    /// What to print or write.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Write to this file instead of standard output (required for xlsx).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `--ranking-type`: the words of [`RankingType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RankingChoice {
    /// Days checked in altogether.
    Accumulated,
    /// Consecutive days checked in.
    Continuous,
}

impl From<RankingChoice> for RankingType {
    fn from(choice: RankingChoice) -> Self {
        match choice {
            RankingChoice::Accumulated => RankingType::Accumulated,
            RankingChoice::Continuous => RankingType::Continuous,
        }
    }
}

/// Output formats of `refund-list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// An aligned table for the terminal.
    Table,
    /// CSV with a UTF-8 BOM, as the HTTP export.
    Csv,
    /// An Excel workbook (needs --output).
    Xlsx,
    /// The plain-text report.
    Text,
}

impl RefundListArgs {
    /// Checks the arguments clap cannot: the id's digits, the grace against
    /// the requirement, xlsx's file.
    pub fn validate(&self) -> anyhow::Result<(CheckinId, Rule)> {
        let id = CheckinId::parse(&self.checkin_id)
            .map_err(|e| anyhow::anyhow!("checkin_id {:?}: {e}", self.checkin_id))?;
        let days = RequiredDays::new(self.required_days)
            .context("--required-days must be from 1 to 365")?;
        let grace =
            GraceDays::new(self.grace_days).context("--grace-days must be from 0 to 364")?;
        let rule = Rule::new(days, grace, self.ranking_type.into()).map_err(|e| {
            anyhow::anyhow!(
                "--grace-days ({}) must be less than --required-days ({})",
                e.grace,
                e.required
            )
        })?;
        if self.format == ListFormat::Xlsx && self.output.is_none() {
            anyhow::bail!("--format xlsx writes a binary file: give --output FILE.xlsx");
        }
        Ok((id, rule))
    }
}

/// Builds the list with the service's parts and renders it in `args.format`.
/// Exposed for tests; [`run`] adds the writing and the exit status.
pub async fn refund_list_output(
    config: &Config,
    args: &RefundListArgs,
) -> anyhow::Result<(RefundList, Vec<u8>)> {
    let (id, rule) = args.validate()?;
    let services = build_state(config).await?;
    let built = services.refunds.refund_list(id, rule).await;
    services.cache.flush_stats().await;
    let list = built.map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = match args.format {
        ListFormat::Table => export::table(&list).into_bytes(),
        ListFormat::Csv => export::csv(&list),
        ListFormat::Text => export::text(&list).into_bytes(),
        ListFormat::Xlsx => export::xlsx(&list)?,
    };
    Ok((list, bytes))
}

async fn refund_list(args: RefundListArgs) -> anyhow::Result<()> {
    args.validate()?;
    let config = Config::from_env()?;
    let (list, bytes) = refund_list_output(&config, &args).await?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} ({} participants, {} qualified)",
                path.display(),
                list.statistics.total_count,
                list.statistics.qualified_count
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .context("writing to standard output")?;
            stdout.flush().context("writing to standard output")?;
        }
    }
    if !list.complete {
        anyhow::bail!(
            "the list is incomplete: {} participants have no member number (reasons are in the list)",
            list.missing_count
        );
    }
    Ok(())
}

/// Runs a command; the exit status is success unless the command says
/// otherwise (`doctor`) or fails.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let done = match cli.command {
        Command::Serve => serve().await,
        Command::Sim(cfg) => sim(cfg).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Sync(args) => sync(args).await,
        Command::RefundList(args) => refund_list(args).await,
        Command::Doctor => return Ok(doctor().await),
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}

async fn doctor() -> std::process::ExitCode {
    crate::config::load_dotenv();
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let (report, status) = crate::doctor::run(&vars).await;
    print!("{report}");
    let _ = std::io::stdout().flush();
    std::process::ExitCode::from(status)
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
    let data = std::sync::Arc::new(zsxq_sim::generate_for(&cfg));
    tracing::info!(%addr, members = data.members.len(), group_id = data.group_id, "simulated Zsxq API listening");
    zsxq_sim::serve(listener, cfg, data, shutdown_signal()).await?;
    Ok(())
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let config = Config::from_env()?;
    let state = build_state(&config).await?;
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
