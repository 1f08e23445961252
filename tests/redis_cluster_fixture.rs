//! The Redis Cluster test fixture (`testkit::RedisCluster`), exercised on a
//! real six-node cluster: it must come up settled, survive an operator's
//! failover and a killed master with every key still readable, take the
//! killed node back as a replica, and flush clean.
//!
//! Keys are written and read through a small synchronous client below that
//! follows `MOVED` redirects itself. The crate does not enable the `redis`
//! cluster feature yet (the cluster-capable store is being written
//! separately), and the point here is the fixture, not a client: this one
//! only has to reach the node that owns a key, whatever the cluster's current
//! layout, and report exactly what that node answered.
//!
//! One test, because building a cluster costs seconds; the phases run in
//! order on the same cluster.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use zsxq_cache::testkit::RedisCluster;

/// Enough keys to land in hundreds of slots, so every master holds some.
const KEY_COUNT: usize = 300;

/// How long one read may keep failing (node down, cluster down during an
/// election) before the reader calls it an outage.
const READ_DEADLINE: Duration = Duration::from_secs(10);

fn key(i: usize) -> String {
    format!("fixture:member:{i}")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

/// Reaches the owner of a key by following `MOVED`; retries while a node is
/// unreachable or the cluster is between layouts.
struct RedirectingClient {
    /// Every node's port: where to look when the last known owner is gone.
    seeds: Vec<u16>,
    /// Open connections by port, dropped on any connection error.
    connections: HashMap<u16, redis::Connection>,
    /// Last node that answered for each key, to skip most redirects.
    owners: HashMap<String, u16>,
    /// Round-robin position in `seeds` for the next fallback.
    next_seed: usize,
}

impl RedirectingClient {
    fn new(seeds: Vec<u16>) -> Self {
        RedirectingClient {
            seeds,
            connections: HashMap::new(),
            owners: HashMap::new(),
            next_seed: 0,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.run(key, redis::cmd("SET").arg(key).arg(value))
            .map(|_: String| ())
    }

    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        self.run(key, redis::cmd("GET").arg(key))
    }

    fn run<T: redis::FromRedisValue>(&mut self, key: &str, cmd: &redis::Cmd) -> Result<T, String> {
        let deadline = Instant::now() + READ_DEADLINE;
        let mut port = self.owners.get(key).copied().unwrap_or(self.seeds[0]);
        loop {
            let error = match self.query(port, cmd) {
                Ok(answer) => {
                    self.owners.insert(key.to_string(), port);
                    return Ok(answer);
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{key}: still failing after {READ_DEADLINE:?}: {error}"
                ));
            }
            if let Some((address, _slot)) = error.redirect_node() {
                port = address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .ok_or_else(|| format!("{key}: unreadable redirect {error}"))?;
                continue;
            }
            let transient = error.is_io_error()
                || error.is_connection_refusal()
                || error.is_connection_dropped()
                || error.is_timeout()
                || error
                    .code()
                    .is_some_and(|code| ["CLUSTERDOWN", "TRYAGAIN", "LOADING"].contains(&code));
            if !transient {
                return Err(format!("{key}: 127.0.0.1:{port}: {error}"));
            }
            self.connections.remove(&port);
            self.next_seed = (self.next_seed + 1) % self.seeds.len();
            port = self.seeds[self.next_seed];
            if !error.is_connection_refusal() {
                // Down or between layouts: give the cluster a moment. A
                // refused connection just means "try another node".
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn query<T: redis::FromRedisValue>(
        &mut self,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let conn = match self.connections.entry(port) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
                let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
                conn.set_read_timeout(Some(Duration::from_secs(1)))?;
                conn.set_write_timeout(Some(Duration::from_secs(1)))?;
                entry.insert(conn)
            }
        };
        let result = cmd.query(conn);
        if result.as_ref().is_err_and(|e| e.is_unrecoverable_error()) {
            self.connections.remove(&port);
        }
        result
    }
}

/// One command on one node, for looking behind the cluster.
fn on_node<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid url");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("127.0.0.1:{port}: {e}"))
}

/// Reads every key in a loop on its own thread until stopped; returns how
/// many reads it made and every wrong answer or outage it saw.
fn spawn_reader(
    seeds: Vec<u16>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let mut client = RedirectingClient::new(seeds);
        let mut reads = 0;
        let mut problems = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for i in (0..KEY_COUNT).step_by(7) {
                match client.get(&key(i)) {
                    Ok(Some(got)) if got == value(i) => {}
                    Ok(other) => problems.push(format!("{}: read {other:?}", key(i))),
                    Err(e) => problems.push(e),
                }
                reads += 1;
            }
        }
        (reads, problems)
    })
}

fn assert_every_key_readable(client: &mut RedirectingClient) {
    for i in 0..KEY_COUNT {
        assert_eq!(
            client.get(&key(i)).expect("read after the fault"),
            Some(value(i)),
            "{}",
            key(i)
        );
    }
}

#[test]
fn a_cluster_serves_every_key_through_a_failover_a_killed_master_and_a_rejoin() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start().expect("start a redis cluster");
    eprintln!("start: {:?}", started.elapsed());

    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert!(!ports.contains(&6379), "never the shared Redis");
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(
        cluster.url_list(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );

    // Keys spread over many slots, hence over every master, and replicated
    // before any fault so that a promoted replica has all of them.
    let mut client = RedirectingClient::new(ports.clone());
    for i in 0..KEY_COUNT {
        client.set(&key(i), &value(i)).expect("write a key");
    }
    let mut total = 0;
    for master in cluster.masters() {
        let keys: usize = on_node(master, &redis::cmd("DBSIZE"));
        assert!(keys > 0, "master 127.0.0.1:{master} holds no key");
        total += keys;
        // WAIT counts replicas that have what this connection wrote, so it
        // goes over the connection that wrote the master's keys.
        let acked: usize = client
            .query(master, redis::cmd("WAIT").arg(1).arg(1000))
            .expect("WAIT");
        assert_eq!(acked, 1, "master 127.0.0.1:{master} replicated");
    }
    assert_eq!(total, KEY_COUNT);

    // Faults happen while another thread keeps reading.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(ports.clone(), Arc::clone(&stop));

    let old_master = cluster.masters()[0];
    let timer = Instant::now();
    let new_master = cluster.failover(old_master).expect("manual failover");
    eprintln!("failover: {:?}", timer.elapsed());
    assert_ne!(new_master, old_master);
    assert!(cluster.masters().contains(&new_master));
    assert!(cluster.replicas().contains(&old_master));
    assert_eq!(cluster.masters().len(), 3);

    let victim = cluster.masters()[1];
    let timer = Instant::now();
    let promoted = cluster.kill_master(victim).expect("automatic failover");
    eprintln!("kill_master: {:?}", timer.elapsed());
    assert_ne!(promoted, victim);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters after the kill: {masters:?}");
    assert!(masters.contains(&promoted));
    assert!(!masters.contains(&victim) && !cluster.replicas().contains(&victim));

    stop.store(true, Ordering::Relaxed);
    let (reads, problems) = reader.join().expect("reader thread");
    eprintln!("reads during the faults: {reads}");
    assert!(reads > 0);
    assert!(
        problems.is_empty(),
        "{} of {reads} reads went wrong: {problems:?}",
        problems.len()
    );
    assert_every_key_readable(&mut client);

    let timer = Instant::now();
    cluster
        .restart_node(victim)
        .expect("restart the killed master");
    eprintln!("restart_node: {:?}", timer.elapsed());
    assert!(cluster.replicas().contains(&victim), "rejoins as a replica");
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    assert_every_key_readable(&mut client);

    cluster.flushall().expect("flushall");
    for port in cluster.ports() {
        let keys: usize = on_node(port, &redis::cmd("DBSIZE"));
        assert_eq!(keys, 0, "127.0.0.1:{port} after flushall");
    }
    eprintln!("total: {:?}", started.elapsed());
}
