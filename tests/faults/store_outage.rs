//! Store faults: Redis killed and restarted under load,
//! Redis hung (SIGSTOP), the embedded store failing with I/O errors or
//! hanging. Cached members keep being served from the near cache, misses go
//! to the upstream, and what was fetched meanwhile is written back once the
//! store returns — without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use zsxq_sim::SimMember;
use zsxq_test_support::Fault;

use zsxq_test_support::{StoreKind, TestApp};

/// What a load loop saw.
#[derive(Debug, Default)]
struct LoadReport {
    requests: AtomicU64,
    failures: AtomicU64,
    /// Cached members answered as a miss (not served from a cache).
    cached_misses: AtomicU64,
    max_latency_us: AtomicU64,
}

impl LoadReport {
    fn record(&self, started: Instant, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = started.elapsed().as_micros() as u64;
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// Whether Redis at `url` holds the hash of `user_id`.
async fn redis_has(conn: &mut redis::aio::MultiplexedConnection, user_id: u64) -> bool {
    redis::cmd("EXISTS")
        .arg(format!("zsxq:user:{user_id}"))
        .query_async::<u64>(conn)
        .await
        .is_ok_and(|n| n == 1)
}

/// Polls until every member of `ids` is in Redis; the time it took.
async fn until_in_redis(url: &str, ids: &[u64], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(client) = redis::Client::open(url)
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let mut all = true;
            for &id in ids {
                if !redis_has(&mut conn, id).await {
                    all = false;
                    break;
                }
            }
            if all {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

async fn readyz(app: &TestApp) -> Value {
    app.get("/readyz").await.body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_keeps_answering_and_writes_back() {
    let mut app = TestApp::builder()
        .store(StoreKind::Redis)
        .members(300)
        .spawn()
        .await;
    let mut redis = app.redis.take().expect("a Redis test");
    let url = redis.url();
    let members = app.sim.data.members.clone();
    let (cached, fresh): (Vec<SimMember>, Vec<SimMember>) =
        (members[..20].to_vec(), members[20..120].to_vec());
    for m in &cached {
        assert_eq!(app.user(m.user_id).await.status, 200);
    }

    let app = Arc::new(app);
    let report = Arc::new(LoadReport::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_fresh = Arc::new(AtomicU64::new(0));
    let fetched_while_down = Arc::new(std::sync::Mutex::new(Vec::new()));
    let down = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (app, report, stop) = (app.clone(), report.clone(), stop.clone());
        let (cached, fresh) = (cached.clone(), fresh.clone());
        let (next_fresh, fetched, down) =
            (next_fresh.clone(), fetched_while_down.clone(), down.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Mostly cached members, now and then a new one.
                let (member, is_cached) = if i % 5 == 0 {
                    let n = next_fresh.fetch_add(1, Ordering::Relaxed) as usize;
                    (&fresh[n % fresh.len()], false)
                } else {
                    (&cached[i % cached.len()], true)
                };
                let started = Instant::now();
                let down_at_start = down.load(Ordering::Relaxed);
                let a = app.user(member.user_id).await;
                let ok = a.status == 200 && a.data()["number"] == member.number;
                report.record(started, ok);
                if is_cached && a.data()["cache_status"] != "hit" {
                    report.cached_misses.fetch_add(1, Ordering::Relaxed);
                }
                if !is_cached
                    && ok
                    && a.data()["cache_status"] == "miss"
                    && down_at_start
                    && down.load(Ordering::Relaxed)
                    && let Ok(mut f) = fetched.lock()
                {
                    f.push(member.user_id);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| redis.stop()).expect("kill redis");
    // Only lookups that start and end while Redis is dead count as fetched
    // during the outage (one answered just before the kill was written then,
    // and lost with the restart's empty Redis).
    down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = readyz(&app).await;
    assert_eq!(during["mode"], "degraded", "{during}");
    down.store(false, Ordering::Relaxed);
    tokio::task::block_in_place(|| redis.restart()).expect("restart redis");
    let restarted_at = Instant::now();
    let outage = restarted_at - killed_at;

    // Caching resumes: a member looked up now is in Redis shortly after.
    let probe = members[200].user_id;
    let resumed = {
        let started = Instant::now();
        loop {
            app.user(probe).await;
            if until_in_redis(&url, &[probe], Duration::from_millis(100))
                .await
                .is_some()
            {
                break Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(10) {
                break None;
            }
        }
    };
    // Everything fetched while Redis was down is written back.
    let fetched: Vec<u64> = fetched_while_down.lock().unwrap().clone();
    let written_back = until_in_redis(&url, &fetched, Duration::from_secs(10)).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    // The store watch may notice the restart late (it looks once a second)
    // and queue the whole near cache for write-back then: wait, bounded,
    // for the queue to drain rather than catch it mid-way.
    let drain_started = std::time::Instant::now();
    let mut after = readyz(&app).await;
    while after["write_back"]["pending"] != 0 && drain_started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = readyz(&app).await;
    }
    println!(
        "[redis kill/restart] requests={} failures={} cached-member misses={} max latency={:.1} ms; outage {:?}; \
         caching resumed {:?} after restart; {} members fetched during the outage written back {:?} after restart; readyz after: {}",
        report.requests.load(Ordering::Relaxed),
        report.failures.load(Ordering::Relaxed),
        report.cached_misses.load(Ordering::Relaxed),
        report.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        outage,
        resumed,
        fetched.len(),
        written_back,
        after
    );
    assert_eq!(
        report.failures.load(Ordering::Relaxed),
        0,
        "every request answered"
    );
    assert_eq!(
        report.cached_misses.load(Ordering::Relaxed),
        0,
        "cached members stayed cache hits through the outage"
    );
    assert!(
        report.max_latency_us.load(Ordering::Relaxed) < 2_000_000,
        "no request waited on the dead Redis"
    );
    assert!(resumed.is_some(), "caching resumed after Redis came back");
    assert!(
        !fetched.is_empty(),
        "some members were fetched during the outage"
    );
    assert!(
        written_back.is_some(),
        "members fetched during the outage were written back"
    );
    assert_eq!(after["mode"], "normal", "{after}");
    assert_eq!(after["write_back"]["pending"], 0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_request_at_most_one_store_timeout() {
    // No near cache, so every lookup reaches the store and its timeout.
    let mut app = TestApp::builder()
        .store(StoreKind::Redis)
        .var("NEAR_CACHE_SIZE", "0")
        .spawn()
        .await;
    let mut redis = app.redis.take().expect("a Redis test");
    let url = redis.url();
    let members = app.sim.data.members.clone();
    // Upstream time alone, for comparison.
    let started = Instant::now();
    assert_eq!(app.user(members[0].user_id).await.status, 200);
    let upstream_only = started.elapsed();

    tokio::task::block_in_place(|| redis.pause()).expect("SIGSTOP redis");
    let mut latencies = Vec::new();
    let mut fetched = Vec::new();
    for m in &members[1..8] {
        let started = Instant::now();
        let a = app.user(m.user_id).await;
        latencies.push(started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.data()["number"], m.number);
        fetched.push(m.user_id);
    }
    // A member cached before the hang, without a near cache, is fetched
    // again rather than waited for.
    let started = Instant::now();
    assert_eq!(app.user(members[0].user_id).await.status, 200);
    let cached_during_hang = started.elapsed();

    tokio::task::block_in_place(|| redis.resume()).expect("SIGCONT redis");
    let written_back = until_in_redis(&url, &fetched, Duration::from_secs(10)).await;
    println!(
        "[redis SIGSTOP] upstream-only lookup {:?}; lookups during the hang {:?} (first pays the 50 ms store timeout, \
         then the breaker is open); previously cached member {:?}; {} members written back {:?} after SIGCONT",
        upstream_only,
        latencies,
        cached_during_hang,
        fetched.len(),
        written_back
    );
    for l in &latencies {
        assert!(*l < Duration::from_secs(2), "{latencies:?}");
    }
    assert!(written_back.is_some(), "written back after the hang ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_io_errors_degrade_to_the_near_cache_and_upstream_then_recover() {
    let app = TestApp::builder().faulty_store().spawn().await;
    let switch = app.store_fault.clone().expect("a faulty store");
    let members = app.sim.data.members.clone();
    for m in &members[..5] {
        assert_eq!(app.user(m.user_id).await.data()["cache_status"], "miss");
    }

    switch.set(Fault::Failing);
    for m in &members[..5] {
        let a = app.user(m.user_id).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(
            a.data()["cache_status"],
            "hit",
            "served from the near cache"
        );
    }
    let mut fetched = Vec::new();
    for m in &members[5..15] {
        let a = app.user(m.user_id).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.data()["cache_status"], "miss");
        fetched.push(m.user_id.to_string());
    }
    // By number too: cached numbers from the near cache, others upstream.
    assert_eq!(app.by_number(members[2].number).await.status, 200);
    assert_eq!(app.by_number(members[20].number).await.status, 200);
    let ready = readyz(&app).await;
    assert_eq!(ready["mode"], "degraded", "{ready}");
    assert!(
        ready["write_back"]["pending"].as_u64().unwrap() >= 10,
        "{ready}"
    );
    assert_eq!(app.stats().await.status, 200, "stats answer from memory");
    app.get("/api/users").await.assert_error(503);

    switch.set(Fault::None);
    let started = Instant::now();
    let recovered = loop {
        let ready = readyz(&app).await;
        if ready["mode"] == "normal"
            && ready["write_back"]["pending"] == 0
            && ready["write_back"]["written"].as_u64() >= Some(10)
        {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let listed = app.get("/api/users?page_size=200").await;
    let ids: Vec<String> = listed.data()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_string())
        .collect();
    println!(
        "[embedded I/O errors] write-back of {} members done {:?} after the errors stopped; {} members listed",
        fetched.len(),
        recovered,
        ids.len()
    );
    assert!(
        recovered.is_some(),
        "the breaker closed and the queue drained"
    );
    for id in &fetched {
        assert!(ids.contains(id), "{id} written back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_embedded_store_does_not_hang_lookups() {
    let app = TestApp::builder()
        .faulty_store()
        .var("NEAR_CACHE_SIZE", "0")
        .spawn()
        .await;
    let switch = app.store_fault.clone().expect("a faulty store");
    switch.set(Fault::Hanging);
    let mut latencies = Vec::new();
    for m in app.sim.data.members.iter().take(5) {
        let started = Instant::now();
        let a = app.user(m.user_id).await;
        latencies.push(started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let started = Instant::now();
    let ready = app.get("/readyz").await;
    let readyz_latency = started.elapsed();
    println!("[embedded hang] lookups {latencies:?}; /readyz {readyz_latency:?}");
    assert_eq!(ready.data()["mode"], "degraded");
    for l in latencies {
        assert!(l < Duration::from_secs(2));
    }
}
