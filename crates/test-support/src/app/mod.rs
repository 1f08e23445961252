//! The one way tests and benchmarks start the service: [`TestApp::builder`]
//! says what the run needs (a simulator, a store, variables), and the result
//! runs in this process ([`AppBuilder::spawn`]), as a fleet of replicas
//! ([`AppBuilder::spawn_fleet`]), or as the service binary
//! ([`Service::start`]) fed the very same variables.
//!
//! Decisions:
//! - Everything a run must not share is fresh: the simulator and the HTTP
//!   listener on port 0, a private `redis-server` or cluster on free ports,
//!   the embedded store in a temporary directory that the run owns.
//! - The service is configured only through its variables and
//!   `Config::from_vars`, as production is, so a test's setup reads like an
//!   operator's `.env` and the binary gets the same map the in-process app
//!   does ([`TestEnv::vars`]).
//! - Upstream pacing is quick by default (no spacing, quick retries, a
//!   3 s timeout) so that a test spends its time on what it checks; a run
//!   that measures the shipped pacing asks for it
//!   ([`AppBuilder::shipped_upstream_pace`]).
//! - A variable set to `""` is left out, so a test can take away a default
//!   (`.var("ADMIN_TOKEN", "")`), exactly as an empty line in `.env` does.

mod fleet;
mod process;
mod test_app;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tempfile::TempDir;

use zsxq_cache::config::Config;
use zsxq_sim::{SimConfig, SimData, SimHandle};

use crate::{RedisCluster, RedisServer};

pub use fleet::{Fleet, Replicas};
pub use process::Service;
pub use test_app::{Answer, TestApp};

/// The admin token of every run that does not choose its own.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The upstream pace of a test: the simulator is local and answers at once,
/// so calls are not spaced, retries come after milliseconds, and a hung call
/// still fails well within a test's patience.
const QUICK_UPSTREAM: [(&str, &str); 4] = [
    ("API_RATE_LIMIT", "6000"),
    ("API_REQUEST_DELAY", "0"),
    ("API_RETRY_BASE_MS", "5"),
    ("API_TIMEOUT_MS", "3000"),
];

/// Where the service keeps its records in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A redb file in the run's temporary directory.
    Embedded,
    /// A private `redis-server` on a free port.
    Redis,
    /// A private three-master, three-replica Redis Cluster.
    Cluster,
}

/// What a run needs; see the module documentation.
#[derive(Debug, Clone)]
pub struct AppBuilder {
    /// The simulated Zsxq; public so a test can turn one knob in place
    /// (`builder.sim.latency_ms = 15`).
    pub sim: SimConfig,
    /// A group a test has edited, served instead of the one `sim` generates.
    sim_data: Option<SimData>,
    store: StoreKind,
    /// Applied in order over the defaults; an empty value removes the
    /// variable.
    vars: Vec<(String, String)>,
    /// Whether the in-process app's store sits behind a [`crate::FaultSwitch`].
    faulty: bool,
    admin_token: String,
    quick_upstream: bool,
}

impl Default for AppBuilder {
    fn default() -> Self {
        Self {
            sim: SimConfig::for_tests(),
            sim_data: None,
            store: StoreKind::Embedded,
            vars: Vec::new(),
            faulty: false,
            admin_token: ADMIN_TOKEN.to_string(),
            quick_upstream: true,
        }
    }
}

impl AppBuilder {
    /// The store of the run (the embedded one unless said otherwise).
    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }

    /// The simulator's configuration.
    pub fn sim(mut self, sim: SimConfig) -> Self {
        self.sim = sim;
        self
    }

    /// Serves `data` instead of the group the simulator's configuration
    /// generates.
    pub fn sim_data(mut self, data: SimData) -> Self {
        self.sim_data = Some(data);
        self
    }

    /// The simulated group's size.
    pub fn members(mut self, n: usize) -> Self {
        self.sim.members = n;
        self
    }

    /// Sets a service variable over the defaults; `""` removes it.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// The admin token instead of [`ADMIN_TOKEN`].
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = token.into();
        self
    }

    /// Puts the in-process app's store behind a switch that injects I/O
    /// errors or hangs ([`TestApp::store_fault`]).
    pub fn faulty_store(mut self) -> Self {
        self.faulty = true;
        self
    }

    /// Keeps the service's own upstream pacing (rate limit, spacing,
    /// retries, timeout) instead of the quick one tests use.
    pub fn shipped_upstream_pace(mut self) -> Self {
        self.quick_upstream = false;
        self
    }

    /// Starts the simulator and the store and works out the variables that
    /// point a service at them; nothing of the service runs yet.
    pub async fn environment(self) -> anyhow::Result<TestEnv> {
        let sim = match self.sim_data {
            Some(data) => zsxq_sim::spawn_with_data(self.sim.clone(), data).await,
            None => zsxq_sim::spawn(self.sim.clone()).await,
        }
        .context("starting the simulator")?;
        let dir = tempfile::tempdir().context("a temporary directory for the run")?;
        let (redis, cluster) = match self.store {
            StoreKind::Embedded => (None, None),
            StoreKind::Redis => (
                Some(
                    tokio::task::spawn_blocking(RedisServer::start)
                        .await?
                        .context("starting redis-server (apt-get install -y redis-server)")?,
                ),
                None,
            ),
            StoreKind::Cluster => (
                None,
                Some(
                    tokio::task::spawn_blocking(RedisCluster::start)
                        .await?
                        .context("starting a Redis Cluster (redis-server and redis-cli)")?,
                ),
            ),
        };
        let mut vars = BTreeMap::new();
        let mut set = |name: &str, value: String| {
            vars.insert(name.to_string(), value);
        };
        set("ZSXQ_API_BASE", sim.base_url.clone());
        set("ZSXQ_GROUP_ID", sim.data.group_id.to_string());
        set("ZSXQ_ACCESS_TOKEN", self.sim.token.clone());
        set("ADMIN_TOKEN", self.admin_token.clone());
        set(
            "EMBEDDED_PATH",
            dir.path().join("cache.redb").display().to_string(),
        );
        if let Some(redis) = &redis {
            set("REDIS_URL", redis.url());
        }
        if let Some(cluster) = &cluster {
            set("REDIS_URL", cluster.url_list());
        }
        if self.quick_upstream {
            for (name, value) in QUICK_UPSTREAM {
                set(name, value.to_string());
            }
        }
        let vars = overlay(vars, &self.vars);
        Ok(TestEnv {
            sim,
            redis,
            cluster,
            admin_token: self.admin_token,
            vars,
            faulty: self.faulty,
            dir,
        })
    }

    /// Starts the service in this process; panics, saying why, if it cannot.
    pub async fn spawn(self) -> TestApp {
        self.try_spawn().await.expect("the app starts")
    }

    /// As [`spawn`](Self::spawn), for callers that report errors themselves.
    pub async fn try_spawn(self) -> anyhow::Result<TestApp> {
        self.environment().await?.spawn().await
    }

    /// Starts `n` replicas of the service in this process, sharing the
    /// simulator and the store, which must be Redis or a cluster.
    pub async fn spawn_fleet(self, n: usize) -> Fleet {
        async { self.environment().await?.spawn_fleet(n).await }
            .await
            .expect("the fleet starts")
    }
}

/// A simulator and a store ready for a service, and the variables that
/// point a service at them. Owns all of it: dropping it stops the simulator
/// and the store and removes the temporary directory.
pub struct TestEnv {
    pub sim: SimHandle,
    /// The private Redis server, with [`StoreKind::Redis`].
    pub redis: Option<RedisServer>,
    /// The private cluster, with [`StoreKind::Cluster`].
    pub cluster: Option<RedisCluster>,
    pub admin_token: String,
    vars: BTreeMap<String, String>,
    faulty: bool,
    dir: TempDir,
}

impl TestEnv {
    /// The service's variables for this run.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The variables with `extra` on top (`""` removes one).
    pub fn vars_with(&self, extra: &[(&str, String)]) -> BTreeMap<String, String> {
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        overlay(self.vars.clone(), &extra)
    }

    /// The service's configuration, read from [`vars`](Self::vars) as the
    /// binary reads its environment.
    pub fn config(&self) -> anyhow::Result<Config> {
        config_from(&self.vars)
    }

    /// The configuration with `extra` variables on top (`""` removes one).
    pub fn config_with(&self, extra: &[(&str, String)]) -> anyhow::Result<Config> {
        config_from(&self.vars_with(extra))
    }

    /// The run's temporary directory (the binary's working directory too, so
    /// no stray `.env` is read).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the embedded store keeps its file.
    pub fn embedded_path(&self) -> PathBuf {
        PathBuf::from(&self.vars["EMBEDDED_PATH"])
    }

    /// `program` with exactly this run's variables (plus `PATH`), in the
    /// run's directory: for one-shot commands of the binary.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        self.command_with(program, &[])
    }

    /// As [`command`](Self::command), with `extra` variables on top (`""`
    /// removes one).
    pub fn command_with(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        extra: &[(&str, String)],
    ) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .current_dir(self.dir())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.vars_with(extra));
        command
    }

    /// Starts the service in this process.
    pub async fn spawn(self) -> anyhow::Result<TestApp> {
        TestApp::start(self).await
    }

    /// Starts `n` replicas of the service in this process; the store must
    /// be shared, so Redis or a cluster.
    pub async fn spawn_fleet(self, n: usize) -> anyhow::Result<Fleet> {
        Fleet::start(self, n).await
    }
}

/// `vars` with `changes` applied in order; an empty value removes.
fn overlay(
    mut vars: BTreeMap<String, String>,
    changes: &[(String, String)],
) -> BTreeMap<String, String> {
    for (name, value) in changes {
        if value.is_empty() {
            vars.remove(name);
        } else {
            vars.insert(name.clone(), value.clone());
        }
    }
    vars
}

fn config_from(vars: &BTreeMap<String, String>) -> anyhow::Result<Config> {
    let vars: HashMap<String, String> = vars.clone().into_iter().collect();
    Config::from_vars(&vars).context("the run's variables are not a valid configuration")
}

/// The service on `store` with every default: the shortest way to a running
/// app.
pub async fn spawn_app(store: StoreKind) -> TestApp {
    TestApp::builder().store(store).spawn().await
}
