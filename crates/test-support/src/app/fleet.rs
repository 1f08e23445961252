//! Several replicas of the service in this process, each on its own port,
//! sharing one simulator and one Redis (a server or a cluster), as a load
//! balancer would see them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use zsxq_cache::config::Config;
use zsxq_cache::redis_link::RedisTarget;
use zsxq_cache::startup::Application;
use zsxq_sim::SimHandle;

use super::TestEnv;
use super::test_app::{Answer, metric_in};
use crate::{RedisCluster, RedisServer};

/// Running replicas; dropping this stops them (gracefully, as SIGTERM would).
#[derive(Debug, Default)]
pub struct Replicas {
    stops: Vec<oneshot::Sender<()>>,
}

impl Replicas {
    /// Starts `n` replicas of `config` on free loopback ports; returns their
    /// addresses, in start order, and the handle that stops them.
    pub async fn start(config: &Config, n: usize) -> anyhow::Result<(Vec<SocketAddr>, Replicas)> {
        let mut addrs = Vec::with_capacity(n);
        let mut running = Replicas::default();
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let app = Application::build(config.clone(), listener).await?;
            addrs.push(app.local_addr()?);
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(app.run(async {
                let _ = stopped.await;
            }));
            running.stops.push(stop);
        }
        Ok((addrs, running))
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Replicas of the service on one simulator and one Redis.
pub struct Fleet {
    pub sim: SimHandle,
    /// The private Redis server, unless the fleet runs on a cluster.
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub replicas: Vec<SocketAddr>,
    pub http: reqwest::Client,
    /// Declared before the environment's directory, so the replicas stop
    /// before their files go.
    _running: Replicas,
    _dir: tempfile::TempDir,
}

impl Fleet {
    pub(super) async fn start(env: TestEnv, n: usize) -> anyhow::Result<Fleet> {
        anyhow::ensure!(
            env.redis.is_some() || env.cluster.is_some(),
            "a fleet shares its store: build it with StoreKind::Redis or StoreKind::Cluster"
        );
        let config = env.config()?;
        let (replicas, running) = Replicas::start(&config, n).await?;
        Ok(Fleet {
            sim: env.sim,
            redis: env.redis,
            cluster: env.cluster,
            replicas,
            http: reqwest::Client::new(),
            _running: running,
            _dir: env.dir,
        })
    }

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
        Answer::read(resp).await
    }

    /// The Prometheus exposition of one replica's `/metrics`.
    pub async fn exposition(&self, replica: usize) -> String {
        let resp = self
            .http
            .get(self.url(replica, "/metrics"))
            .send()
            .await
            .expect("scrape");
        resp.text().await.expect("body")
    }

    /// An unlabelled series of `/metrics`, summed over the replicas.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for replica in 0..self.replicas.len() {
            sum += metric_in(&self.exposition(replica).await, name);
        }
        sum
    }

    /// Waits until every replica listens on the events channel, so a test
    /// never changes something before the others can hear of it.
    pub async fn wait_until_listening(&self) {
        for replica in 0..self.replicas.len() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ready = self.get(replica, "/readyz").await;
                if ready.data()["near_cache"]["invalidation"]["subscribed"] == true {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {replica} never subscribed: {}",
                    ready.body
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
