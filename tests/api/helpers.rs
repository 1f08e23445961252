//! `spawn_app`: a simulator, a store (a private `redis-server` or a temp redb
//! file) and the service on port 0, plus typed helpers per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use zsxq_cache::clock::SystemClock;
use zsxq_cache::config::Config;
use zsxq_cache::redis_link::RedisTarget;
use zsxq_cache::startup::{Application, open_unguarded_store};
use zsxq_sim::{SimConfig, SimHandle};
use zsxq_test_support::{FaultSwitch, FaultyStore, RedisCluster, RedisServer, Replicas};

pub const ADMIN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Redis,
}

/// Generates one `#[tokio::test]` per store for each scenario function
/// `async fn name(kind: StoreKind)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_embedded_store() {
                super::$name($crate::helpers::StoreKind::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_redis() {
                super::$name($crate::helpers::StoreKind::Redis).await
            }
        }
    )*};
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub sim: SimHandle,
    pub redis: Option<RedisServer>,
    /// Set by [`Setup::faulty_store`]: turns store failures on and off.
    pub store_fault: Option<FaultSwitch>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Knobs a test may change before the app starts.
pub struct Setup {
    pub store: StoreKind,
    pub sim: SimConfig,
    pub vars: Vec<(&'static str, String)>,
    /// Wrap the store in a [`FaultyStore`].
    pub faulty: bool,
}

impl Setup {
    pub fn new(store: StoreKind) -> Self {
        Self {
            store,
            sim: SimConfig::for_tests(),
            vars: Vec::new(),
            faulty: false,
        }
    }

    /// Puts the store behind a switch that injects I/O errors or hangs.
    pub fn faulty_store(mut self) -> Self {
        self.faulty = true;
        self
    }

    pub fn members(mut self, n: usize) -> Self {
        self.sim.members = n;
        self
    }

    pub fn var(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.vars.push((k, v.into()));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let sim = zsxq_sim::spawn(self.sim.clone())
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = match self.store {
            StoreKind::Redis => Some(
                RedisServer::start()
                    .expect("redis-server starts (apt-get install -y redis-server)"),
            ),
            StoreKind::Embedded => None,
        };
        let mut vars: HashMap<String, String> = HashMap::new();
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_string(), v);
        };
        set("ZSXQ_API_BASE", sim.base_url.clone());
        set("ZSXQ_GROUP_ID", sim.data.group_id.to_string());
        set("ZSXQ_ACCESS_TOKEN", self.sim.token.clone());
        set("ADMIN_TOKEN", ADMIN.to_string());
        set("API_RATE_LIMIT", "6000".into());
        set("API_REQUEST_DELAY", "0".into());
        set("API_RETRY_BASE_MS", "5".into());
        set("API_TIMEOUT_MS", "3000".into());
        set(
            "EMBEDDED_PATH",
            dir.path().join("cache.redb").display().to_string(),
        );
        if let Some(r) = &redis {
            set("REDIS_URL", r.url());
        }
        for (k, v) in self.vars {
            if v.is_empty() {
                vars.remove(k);
            } else {
                vars.insert(k.to_string(), v);
            }
        }
        let config = Config::from_vars(&vars).expect("valid test config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let clock = std::sync::Arc::new(SystemClock);
        let inner = open_unguarded_store(&config.store, clock.clone())
            .await
            .expect("store opens");
        let (inner, store_fault): (Box<dyn zsxq_cache::store::Store>, _) = if self.faulty {
            let (faulty, switch) = FaultyStore::wrap(inner);
            (Box::new(faulty), Some(switch))
        } else {
            (inner, None)
        };
        let app = Application::build_with_store(config, listener, inner, clock)
            .await
            .expect("app builds");
        let addr = app.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            http: reqwest::Client::new(),
            sim,
            redis,
            store_fault,
            _dir: dir,
            stop: Some(stop),
        }
    }
}

/// Several replicas of the service on one private Redis and one simulator,
/// as production runs them behind a load balancer.
pub struct Fleet {
    pub sim: SimHandle,
    /// The private Redis server, unless the fleet runs on a cluster.
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub replicas: Vec<SocketAddr>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    _running: Replicas,
}

impl Fleet {
    /// Where the fleet's Redis is, for a store of the test's own.
    pub fn store_target(&self) -> RedisTarget {
        match (&self.redis, &self.cluster) {
            (Some(redis), _) => RedisTarget::Single(redis.url()),
            (None, Some(cluster)) => RedisTarget::Cluster {
                nodes: cluster.urls(),
                read_from_replicas: false,
            },
            (None, None) => unreachable!("a fleet always has a Redis"),
        }
    }

    pub fn url(&self, replica: usize, path: &str) -> String {
        format!("http://{}{}", self.replicas[replica], path)
    }

    pub async fn get(&self, replica: usize, path: &str) -> Answer {
        let resp = self
            .http
            .get(self.url(replica, path))
            .send()
            .await
            .expect("request");
        TestApp::answer(resp).await
    }

    /// Waits until every replica listens on the events channel, so a test
    /// never changes something before the others can hear of it.
    pub async fn wait_until_listening(&self) {
        for replica in 0..self.replicas.len() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let ready = self.get(replica, "/readyz").await;
                if ready.data()["near_cache"]["invalidation"]["subscribed"] == true {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica {replica} never subscribed: {}",
                    ready.body
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

impl Setup {
    /// Starts `n` replicas of the service sharing one simulator and one
    /// private Redis (the store is always Redis here).
    pub async fn spawn_fleet(self, n: usize) -> Fleet {
        let redis = RedisServer::start().expect("redis-server starts");
        let url = redis.url();
        self.spawn_fleet_on(n, url, Some(redis), None).await
    }

    /// As [`Setup::spawn_fleet`], on a 3-master/3-replica Redis Cluster.
    pub async fn spawn_fleet_on_cluster(self, n: usize) -> Fleet {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("join")
            .expect("a redis cluster starts");
        let url = cluster.url_list();
        self.spawn_fleet_on(n, url, None, Some(cluster)).await
    }

    async fn spawn_fleet_on(
        self,
        n: usize,
        redis_url: String,
        redis: Option<RedisServer>,
        cluster: Option<RedisCluster>,
    ) -> Fleet {
        let sim = zsxq_sim::spawn(self.sim.clone())
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::new();
        for (k, v) in [
            ("ZSXQ_API_BASE", sim.base_url.clone()),
            ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
            ("ZSXQ_ACCESS_TOKEN", self.sim.token.clone()),
            ("ADMIN_TOKEN", ADMIN.to_string()),
            ("API_RATE_LIMIT", "6000".into()),
            ("API_REQUEST_DELAY", "0".into()),
            ("API_RETRY_BASE_MS", "5".into()),
            ("API_TIMEOUT_MS", "3000".into()),
            ("REDIS_URL", redis_url),
        ] {
            vars.insert(k.to_string(), v);
        }
        for (k, v) in self.vars {
            vars.insert(k.to_string(), v);
        }
        let config = Config::from_vars(&vars).expect("valid test config");
        let (replicas, running) = Replicas::start(&config, n).await.expect("replicas start");
        Fleet {
            sim,
            redis,
            cluster,
            replicas,
            http: reqwest::Client::new(),
            _dir: dir,
            _running: running,
        }
    }
}

pub async fn spawn_app(store: StoreKind) -> TestApp {
    Setup::new(store).spawn().await
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
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer { status, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(self.http.get(self.url(path)).send().await.expect("request")).await
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
        Self::answer(resp).await
    }

    /// `POST /api/camps/{id}/refund-list` with `body`.
    pub async fn refund_list(&self, checkin_id: u64, body: Value) -> Answer {
        self.post_json(&format!("/api/camps/{checkin_id}/refund-list"), body)
            .await
    }

    /// A GET whose answer is not necessarily JSON (exports).
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn user(&self, id: u64) -> Answer {
        self.get(&format!("/api/users/{id}")).await
    }

    pub async fn by_number(&self, n: u64) -> Answer {
        self.get(&format!("/api/users/number/{n}")).await
    }

    pub async fn sync(&self, body: Value) -> Answer {
        let resp = self
            .http
            .post(self.url("/api/users/sync"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("request");
        Self::answer(resp).await
    }

    pub async fn clear(&self) -> Answer {
        let resp = self
            .http
            .delete(self.url("/api/users/cache"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        Self::answer(resp).await
    }

    pub async fn stats(&self) -> Answer {
        self.get("/api/users/cache/stats").await
    }

    /// A connection to this test's private Redis.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        let url = self.redis.as_ref().expect("a Redis test").url();
        redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Every key in this test's Redis, via SCAN.
    pub async fn redis_keys(&self) -> Vec<String> {
        let url = self.redis.as_ref().expect("a Redis test").url();
        zsxq_test_support::scan_keys(&url, "*").await.expect("scan")
    }
}
