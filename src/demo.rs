//! `zsxq-cache demo`: the whole product in one command, no Redis needed.
//!
//! Starts the simulated Zsxq API on a free port, then the service on the
//! embedded store (a fresh file in the temp directory) pointed at it, prints
//! the addresses and a one-off admin token, and warms the cache in the
//! background so the first page a newcomer opens already has members.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cache::sync::SyncOptions;
use crate::config::Config;
use crate::startup::{Application, shutdown_signal};
use zsxq_sim::SimConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Port of the service and web page.
    #[arg(long, default_value_t = 3013)]
    pub port: u16,
    /// Members in the simulated group.
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Simulated upstream latency per call, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Share of upstream calls the simulator rejects with 1059 at random.
    #[arg(long, default_value_t = 0.05)]
    pub reject_ratio: f64,
    /// Upstream calls per minute the service allows itself.
    #[arg(long, default_value_t = 120)]
    pub rate_per_min: u32,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut sim_cfg = SimConfig::for_tests();
    sim_cfg.members = args.members;
    sim_cfg.latency_ms = args.latency_ms;
    sim_cfg.reject_ratio = args.reject_ratio;
    sim_cfg.token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let sim = zsxq_sim::spawn(sim_cfg.clone())
        .await
        .context("starting the simulator")?;

    let store_path =
        std::env::temp_dir().join(format!("zsxq-cache-demo-{}.redb", std::process::id()));
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let vars: HashMap<String, String> = [
        ("ZSXQ_API_BASE", sim.base_url.clone()),
        ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
        ("ZSXQ_ACCESS_TOKEN", sim_cfg.token.clone()),
        ("ADMIN_TOKEN", admin_token.clone()),
        ("EMBEDDED_PATH", store_path.display().to_string()),
        ("API_RATE_LIMIT", args.rate_per_min.to_string()),
        ("PORT", args.port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::from_vars(&vars)?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding {addr} (is something else on port {}? try --port)",
            args.port
        )
    })?;
    let app = Application::build(config, listener).await?;
    let state = app.state();

    println!();
    println!("  zsxq-cache demo");
    println!("  web page        http://{addr}/");
    println!("  API             http://{addr}/api/users");
    println!(
        "  simulated Zsxq  {} ({} members, group {})",
        sim.base_url,
        sim.data.members.len(),
        sim.data.group_id
    );
    println!("  admin token     {admin_token}");
    println!("  try             curl -s http://{addr}/api/users/number/1");
    println!(
        "                  curl -s -X POST -H 'Authorization: Bearer {admin_token}' http://{addr}/api/users/sync"
    );
    println!(
        "  store           {} (embedded, removed at exit)",
        store_path.display()
    );
    println!();

    // Warm the cache in the background, as an operator would after setup.
    let opts = SyncOptions {
        force: false,
        concurrency: 5,
    };
    match state.cache.jobs().start(&state.cache, opts) {
        Ok(job) => {
            tokio::spawn(async move {
                match job.wait().await {
                    Ok(r) => tracing::info!(cached = r.success_count, "demo warm-up done"),
                    Err(e) => tracing::warn!(error = %e, "demo warm-up failed"),
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "demo warm-up not started"),
    }

    let result = app.run(shutdown_signal()).await;
    drop(state);
    let _ = std::fs::remove_file(&store_path);
    result.context("serving")
}
