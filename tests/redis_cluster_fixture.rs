//! The Redis Cluster test fixture (`zsxq_test_support::RedisCluster`), exercised on a
//! real six-node cluster: it must come up settled, survive an operator's
//! failover and a killed master while a client keeps reading, take the
//! killed node back as a replica, and flush clean.
//!
//! Keys are written and read with the `redis` crate's async cluster client,
//! the one the store uses, so this also shows that the client sees no wrong
//! answer during either failover and recovers on the same connection without
//! being rebuilt. The fixture itself is synchronous: the test drives it from
//! the test thread while the client runs on a Tokio runtime beside it.
//!
//! One test, because building a cluster costs seconds; the phases run in
//! order on the same cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use zsxq_test_support::RedisCluster;

/// Enough keys to land in hundreds of slots, so every master holds some.
const KEY_COUNT: usize = 300;

/// How long the client may take to find its way after a fault, on the same
/// connection, before the test calls it a failure to recover.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

fn key(i: usize) -> String {
    format!("fixture:member:{i}")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

/// One command on one node, for looking behind the cluster client.
fn on_node<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("valid url");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("127.0.0.1:{port}: {e}"))
}

/// What a reader saw while the cluster changed under it.
#[derive(Debug, Default)]
struct ReadLog {
    reads: usize,
    /// Errors are allowed while a master is down; they must not be lies.
    errors: usize,
    /// A value that is not the one written, or a missing key: never allowed.
    wrong: Vec<String>,
}

/// Reads a spread of keys in a loop until `stop` is set.
async fn read_until_stopped(mut conn: ClusterConnection, stop: Arc<AtomicBool>) -> ReadLog {
    let mut log = ReadLog::default();
    while !stop.load(Ordering::Relaxed) {
        for i in (0..KEY_COUNT).step_by(7) {
            match conn.get::<_, Option<String>>(key(i)).await {
                Ok(Some(got)) if got == value(i) => {}
                Ok(other) => log.wrong.push(format!("{}: read {other:?}", key(i))),
                Err(_) => log.errors += 1,
            }
            log.reads += 1;
        }
    }
    log
}

/// Every key reads back right on `conn`, retrying each for a while so the
/// client can refresh its slot map after a fault.
async fn assert_every_key_readable(conn: &mut ClusterConnection) {
    for i in 0..KEY_COUNT {
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        loop {
            match conn.get::<_, Option<String>>(key(i)).await {
                Ok(got) => {
                    assert_eq!(got, Some(value(i)), "{}", key(i));
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{}: {e}; retrying", key(i));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{}: not readable within {RECOVERY_DEADLINE:?}: {e}", key(i)),
            }
        }
    }
}

#[test]
fn a_cluster_serves_every_key_through_a_failover_a_killed_master_and_a_rejoin() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

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

    let client = ClusterClient::builder(cluster.urls())
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .retries(5)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .overall_response_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("cluster client");
    let mut conn = runtime
        .block_on(client.get_async_connection())
        .expect("connect to the cluster");

    // Keys spread over many slots, hence over every master, and replicated
    // before any fault so that a promoted replica has all of them.
    runtime.block_on(async {
        for i in 0..KEY_COUNT {
            let () = conn.set(key(i), value(i)).await.expect("write a key");
        }
    });
    let mut total = 0;
    for master in cluster.masters() {
        let keys: usize = on_node(master, &redis::cmd("DBSIZE"));
        assert!(keys > 0, "master 127.0.0.1:{master} holds no key");
        total += keys;
    }
    assert_eq!(total, KEY_COUNT);
    cluster.wait_for_replication().expect("replicas catch up");

    // Faults happen while a task keeps reading on a clone of the connection.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = runtime.spawn(read_until_stopped(conn.clone(), Arc::clone(&stop)));

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

    // Let the reader run on the settled cluster for a moment too.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let log = runtime.block_on(reader).expect("reader task");
    eprintln!("reads during the faults: {log:?}");
    assert!(log.reads > 0);
    assert!(
        log.wrong.is_empty(),
        "{} of {} reads were wrong: {:?}",
        log.wrong.len(),
        log.reads,
        log.wrong
    );
    runtime.block_on(assert_every_key_readable(&mut conn));

    let timer = Instant::now();
    cluster
        .restart_node(victim)
        .expect("restart the killed master");
    eprintln!("restart_node: {:?}", timer.elapsed());
    assert!(cluster.replicas().contains(&victim), "rejoins as a replica");
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    runtime.block_on(assert_every_key_readable(&mut conn));

    cluster.flushall().expect("flushall");
    for port in cluster.ports() {
        let keys: usize = on_node(port, &redis::cmd("DBSIZE"));
        assert_eq!(keys, 0, "127.0.0.1:{port} after flushall");
    }
    eprintln!("total: {:?}", started.elapsed());
}
