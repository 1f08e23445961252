//! The service running in this process on port 0, and typed helpers per
//! endpoint that return the status and the parsed envelope.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use zsxq_cache::clock::SystemClock;
use zsxq_cache::http::AppState;
use zsxq_cache::startup::{Application, open_unguarded_store};
use zsxq_cache::store::Store;
use zsxq_sim::SimHandle;

use super::{AppBuilder, TestEnv};
use crate::{FaultSwitch, FaultyStore, RedisCluster, RedisServer};

/// A running service; dropping it shuts the service down (as SIGTERM would)
/// and then its simulator, store and directory.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub sim: SimHandle,
    /// The private Redis, when the run has one: tests stop, pause and
    /// restart it.
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub admin_token: String,
    /// Set by [`AppBuilder::faulty_store`]: turns store failures on and off.
    pub store_fault: Option<FaultSwitch>,
    /// The service's parts, for tests that drive the router or the caches
    /// directly.
    state: Arc<AppState>,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    /// The serving task, awaited by [`TestApp::shut_down`].
    running: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An answer: HTTP status and the parsed envelope.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Checks the envelope of an error: code equals the status, data null,
    /// a message that says something.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["code"], status);
        assert!(self.body["data"].is_null());
        assert!(
            self.body["message"].as_str().is_some_and(|m| m.len() > 5),
            "{}",
            self.body
        );
        assert!(self.body["timestamp"].as_i64().is_some());
    }

    /// Reads a response; panics, with the text, if it is not JSON.
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer { status, body }
    }
}

impl TestApp {
    /// What a run needs; see [`AppBuilder`].
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The checkin id of the simulator's benchmark camp (the finished camp
    /// the refund-list tests use).
    pub fn benchmark_camp(&self) -> u64 {
        self.sim
            .data
            .benchmark_camp()
            .expect("the simulator has a benchmark camp")
            .checkin_id
    }

    pub(super) async fn start(env: TestEnv) -> anyhow::Result<TestApp> {
        let config = env.config()?;
        let clock = Arc::new(SystemClock);
        let store = open_unguarded_store(&config.store, clock.clone())
            .await
            .context("opening the store")?;
        let (store, store_fault): (Box<dyn Store>, _) = if env.faulty {
            let (faulty, switch) = FaultyStore::wrap(store);
            (Box::new(faulty), Some(switch))
        } else {
            (store, None)
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let app = Application::build_with_store(config, listener, store, clock)
            .await
            .context("building the service")?;
        let addr = app.local_addr()?;
        let state = app.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Ok(TestApp {
            addr,
            http: reqwest::Client::new(),
            sim: env.sim,
            redis: env.redis,
            cluster: env.cluster,
            admin_token: env.admin_token,
            store_fault,
            state,
            _dir: env.dir,
            stop: Some(stop),
            running: Some(running),
        })
    }

    /// Asks the service to shut down, as SIGTERM does, and waits until it
    /// has: in-flight requests finished or the grace over.
    pub async fn shut_down(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.running.take() {
            Some(running) => running.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// The service's parts, as the running app holds them.
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Reads a response into an [`Answer`].
    pub async fn answer(resp: reqwest::Response) -> Answer {
        Answer::read(resp).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.get_raw(path).await).await
    }

    /// A GET that must answer 200; panics with the body otherwise.
    pub async fn get_ok(&self, path: &str) -> Answer {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
        answer
    }

    /// A GET whose answer is not necessarily JSON (exports, the page).
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// POSTs a JSON body (no admin token).
    pub async fn post_json(&self, path: &str, body: Value) -> Answer {
        let resp = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    /// `POST /api/camps/{id}/refund-list` with `body`.
    pub async fn refund_list(&self, checkin_id: u64, body: Value) -> Answer {
        self.post_json(&format!("/api/camps/{checkin_id}/refund-list"), body)
            .await
    }

    pub async fn user(&self, id: u64) -> Answer {
        self.get(&format!("/api/users/{id}")).await
    }

    pub async fn by_number(&self, n: u64) -> Answer {
        self.get(&format!("/api/users/number/{n}")).await
    }

    /// `POST /api/users/sync` with the admin token.
    pub async fn sync(&self, body: Value) -> Answer {
        let resp = self
            .http
            .post(self.url("/api/users/sync"))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    /// `POST /api/users/sync` with the admin token and `body` as it is,
    /// labelled JSON: for bodies a well-formed request cannot carry.
    pub async fn sync_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url("/api/users/sync"))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// `DELETE /api/users/cache` with the admin token.
    pub async fn clear(&self) -> Answer {
        let resp = self
            .http
            .delete(self.url("/api/users/cache"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("request");
        Answer::read(resp).await
    }

    pub async fn stats(&self) -> Answer {
        self.get("/api/users/cache/stats").await
    }

    /// The value of an unlabelled counter or gauge on `/metrics` (0 when
    /// the series is absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get_raw("/metrics").await.text().await.expect("body");
        metric_in(&text, name)
    }

    /// A connection to this run's private Redis.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        let url = self.redis.as_ref().expect("a Redis test").url();
        redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Every key in this run's Redis, via SCAN.
    pub async fn redis_keys(&self) -> Vec<String> {
        let url = self.redis.as_ref().expect("a Redis test").url();
        crate::scan_keys(&url, "*").await.expect("scan")
    }
}

/// The value of the unlabelled series `name` in a Prometheus exposition
/// (0 when absent).
pub fn metric_in(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}
