//! Redis restarted empty or flushed under load costs no refetch: the near
//! cache writes its members back, and lookups never wait on the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use zsxq_test_support::{StoreKind, TestApp};

const HOT: usize = 150;
const READERS: usize = 8;

/// What the readers saw.
#[derive(Default)]
struct Seen {
    lookups: AtomicU64,
    failures: AtomicU64,
}

/// The service at the real upstream's pace on a private Redis, with the
/// near cache trusted for 1 s only, so lookups keep reaching Redis.
async fn app() -> TestApp {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .members(200)
        .var("API_RATE_LIMIT", "50")
        .var("API_REQUEST_DELAY", "200")
        .var("NEAR_CACHE_TTL", "1")
        .spawn()
        .await;
    // One member-list call caches everyone.
    let synced = app.sync(json!({})).await;
    assert_eq!(synced.status, 200, "{}", synced.body);
    app
}

/// Members of the hot set now in the Redis at `url`.
async fn in_redis(url: &str, ids: &[u64]) -> usize {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut n = 0;
    for id in ids {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(format!("zsxq:user:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap_or(0);
        n += exists as usize;
    }
    n
}

/// `READERS` loops over the hot members, each lookup with a 10 s client
/// timeout, until stopped (or for a minute at most).
struct Readers {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// The hot members' ids.
    ids: Vec<u64>,
    /// Upstream calls when the readers had read every hot member once.
    calls_before: u64,
}

impl Readers {
    /// Starts the readers and returns once every hot member was read at
    /// least once, so the near cache holds it.
    async fn start(app: &Arc<TestApp>) -> Readers {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Seen::default()));
        let workers = reading(app, &stop, &seen);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Readers {
            stop,
            seen,
            workers,
            ids: app.sim.data.members[..HOT]
                .iter()
                .map(|m| m.user_id)
                .collect(),
            calls_before: app.sim.stats().calls,
        }
    }

    /// Stops the readers: how many lookups they made, and how many failed.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        (
            self.seen.lookups.load(Ordering::Relaxed),
            self.seen.failures.load(Ordering::Relaxed),
        )
    }
}

fn reading(
    app: &Arc<TestApp>,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let hot: Vec<(u64, u64)> = app.sim.data.members[..HOT]
        .iter()
        .map(|m| (m.user_id, m.number))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    (0..READERS)
        .map(|r| {
            let (app, stop, seen, hot, client) = (
                app.clone(),
                stop.clone(),
                seen.clone(),
                hot.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut i = r * 17;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let (id, number) = hot[i % hot.len()];
                    i += 1;
                    let ok = match client
                        .get(app.url(&format!("/api/users/{id}")))
                        .send()
                        .await
                    {
                        Ok(resp) if resp.status() == 200 => resp
                            .json::<serde_json::Value>()
                            .await
                            .is_ok_and(|b| b["data"]["number"] == number),
                        _ => false,
                    };
                    seen.lookups.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        seen.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_readers_and_restarted_empty_costs_no_failed_lookup_and_no_refetch() {
    let mut app = app().await;
    let mut redis = app.redis.take().expect("a Redis test");
    let url = redis.url();
    let app = Arc::new(app);
    let readers = Readers::start(&app).await;

    tokio::task::block_in_place(|| redis.stop()).expect("kill redis");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| redis.restart()).expect("restart redis empty");
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let back = in_redis(&url, &readers.ids).await;
    let calls = app.sim.stats().calls - readers.calls_before;
    let (lookups, failures) = readers.finish().await;
    let ready = app.get("/readyz").await;
    println!(
        "[redis restarted empty] {lookups} lookups by {READERS} readers, {failures} failed; {:?} after the restart {back} of {HOT} hot \
         members are back in Redis, with {calls} upstream calls since the kill; readyz store_watch {} write_back {}",
        restarted.elapsed(),
        ready.data()["store_watch"],
        ready.data()["write_back"],
    );
    assert_eq!(failures, 0, "0 failed lookups");
    assert!(back >= 140, "{back} of {HOT} back in Redis");
    assert!(calls <= 10, "{calls} upstream calls");
    assert!(ready.data()["store_watch"]["losses"].as_u64() >= Some(1));
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_is_refilled_from_memory_but_a_cache_clear_is_not_undone() {
    let app = Arc::new(app().await);
    let url = app.redis.as_ref().expect("a Redis test").url();
    let readers = Readers::start(&app).await;
    let ids = readers.ids.clone();
    let mut conn = app.redis_conn().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let flushed = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let back = in_redis(&url, &ids).await;
    let calls = app.sim.stats().calls - readers.calls_before;
    let (lookups, failures) = readers.finish().await;
    println!(
        "[redis flushed] {lookups} lookups, {failures} failed; {:?} after FLUSHALL {back} of {HOT} hot members are back, {calls} upstream calls",
        flushed.elapsed(),
    );
    assert_eq!(failures, 0);
    assert!(back >= 140, "{back} of {HOT} back in Redis");
    assert!(calls <= 10, "{calls} upstream calls");

    // A clear is what the operator asked for: nothing comes back.
    let cleared = app.clear().await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(in_redis(&url, &ids).await, 0, "the clear stays done");
}
