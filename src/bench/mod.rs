//! `zsxq-cache bench …`: benchmarks that start everything they need (the
//! simulator, the service on an embedded store in a temp dir) and print
//! figures. Speed targets live here, never in timed unit tests: the machines
//! are shared and noisy, so every figure is printed with what it is measured
//! against rather than asserted.

pub mod hot;
pub mod refund;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::sim::{SimConfig, SimHandle};
use crate::startup::Application;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Upstream budget: sync with and without the member list, priority of
    /// a person's lookup during a sync, throttle storms.
    Sync(sync::SyncBenchArgs),
    /// Refund list of the 167-participant camp: cold, warm, and cold while
    /// the simulator rejects calls.
    Refund(refund::BenchArgs),
    /// Hot lookups against nginx proxy_cache, cold stampedes over three
    /// replicas, paging at 1k/100k members, memory per member, RSS.
    Hot(hot::HotArgs),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sync(args) => sync::run(args).await,
        BenchCommand::Refund(args) => refund::run(args).await,
        BenchCommand::Hot(args) => hot::run(args).await,
    }
}

/// A simulator and a service wired to it, for one benchmark scenario.
pub struct Rig {
    pub sim: SimHandle,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub admin_token: String,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Rig {
    /// Starts the simulator with `sim` and the service with `vars` on top of
    /// the defaults (embedded store in a fresh temp dir).
    pub async fn start(sim: SimConfig, vars: &[(&str, String)]) -> anyhow::Result<Self> {
        let token = sim.token.clone();
        let sim = crate::sim::spawn(sim)
            .await
            .context("starting the simulator")?;
        let dir = tempfile::tempdir().context("temp dir")?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        let mut map: HashMap<String, String> = [
            ("ZSXQ_API_BASE", sim.base_url.clone()),
            ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
            ("ZSXQ_ACCESS_TOKEN", token),
            ("ADMIN_TOKEN", admin_token.clone()),
            (
                "EMBEDDED_PATH",
                dir.path().join("bench.redb").display().to_string(),
            ),
            ("WARMUP_INTERVAL", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in vars {
            map.insert((*k).to_string(), v.clone());
        }
        let config = Config::from_vars(&map)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let app = Application::build(config, listener).await?;
        let addr = app.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            sim,
            addr,
            http: reqwest::Client::new(),
            admin_token,
            _dir: dir,
            stop: Some(stop),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `POST /api/users/sync` and its envelope.
    pub async fn sync(&self, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .post(self.url("/api/users/sync"))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await?;
        Ok(resp.json().await?)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.http.get(self.url(path)).send().await?.json().await?)
    }
}
