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
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve().await,
        Command::Sim(cfg) => sim(cfg).await,
        Command::Demo(args) => crate::demo::run(args).await,
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
