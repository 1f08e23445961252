//! `kill -9` mid-write: the embedded store survives a
//! SIGKILL while it is being written hard — forced syncs rewriting every
//! member, cache clears, lookups — with no corruption: the file reopens,
//! every record in it is intact and consistent with its indexes, and it
//! takes writes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::{CachedMember, Member, MemberNumber, UserId};
use zsxq_cache::store::embedded::EmbeddedStore;
use zsxq_cache::store::{PageRequest, SortBy, SortOrder, Store};
use zsxq_sim::SimHandle;

use zsxq_test_support::{Service, TestApp};

const ADMIN: &str = "crash-test-admin-token-0123";
const ITERATIONS: usize = 5;

/// Hammers the service with writes until `stop`: forced syncs, clears and
/// lookups, on three tasks, each returning how many requests succeeded.
fn hammer(
    service: &Service,
    sim: &SimHandle,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    let sync_url = service.url("/api/users/sync");
    {
        let (http, stop) = (http.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http
                    .post(&sync_url)
                    .bearer_auth(ADMIN)
                    .json(&json!({"force": true}))
                    .send()
                    .await
                    && r.status() == 200
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let clear_url = service.url("/api/users/cache");
    {
        let (http, stop) = (http.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Rarely enough that most kills find a full store to check.
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(r) = http.delete(&clear_url).bearer_auth(ADMIN).send().await
                    && r.status() == 200
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let ids: Vec<u64> = sim.data.members.iter().map(|m| m.user_id).collect();
    let base = service.url("/api/users/");
    tasks.push(tokio::spawn(async move {
        let mut n = 0;
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            i = i.wrapping_add(7);
            // Paced: lookups go before sync in the upstream budget, and a
            // sync rewriting every member is the heaviest write there is.
            tokio::time::sleep(Duration::from_millis(15)).await;
            let url = format!("{base}{}", ids[i % ids.len()]);
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                n += 1;
            }
        }
        n
    }));
    tasks
}

/// SIGKILLs the service and waits for it to be gone: no graceful shutdown,
/// whatever was not committed is lost.
async fn kill_9(service: &mut Service) {
    service.signal("KILL");
    let status = service
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits after SIGKILL");
    assert!(!status.success(), "killed, not exited");
}

/// Checks the reopened store: every record matches the group's member of
/// that id, indexes agree with the records, and it takes writes.
async fn check_intact(store: &EmbeddedStore, sim: &SimHandle) -> u64 {
    let count = store.count().await.expect("count after a crash");
    let page = store
        .page(PageRequest {
            sort: SortBy::Number,
            order: SortOrder::Asc,
            offset: 0,
            limit: 10_000,
        })
        .await
        .expect("page after a crash");
    assert_eq!(page.total, count);
    assert_eq!(page.members.len() as u64, count);
    let ids: Vec<UserId> = page.members.iter().map(|m| m.member.user_id).collect();
    let read = store.get_members(&ids).await.expect("read after a crash");
    for (listed, read) in page.members.iter().zip(read) {
        let read = read.expect("a listed member can be read");
        assert_eq!(&read, listed, "record and index agree");
        let original = sim
            .data
            .member_by_id(read.member.user_id.get())
            .expect("a member of the group");
        assert_eq!(read.member.number.unwrap().get(), original.number);
        assert_eq!(read.member.name, original.name);
        assert_eq!(read.member.join_time, original.join_time);
        let by_number = store
            .user_id_by_number(read.member.number.unwrap())
            .await
            .expect("number index readable");
        assert_eq!(by_number, Some(read.member.user_id));
    }
    let numbers: Vec<u64> = page
        .members
        .iter()
        .map(|m| m.member.number.unwrap().get())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "index in order");
    store.stats().await.expect("stats readable");
    // And it still takes writes.
    let probe = &sim.data.members[0];
    let record = CachedMember {
        member: Member {
            user_id: UserId::new(probe.user_id).expect("id"),
            number: MemberNumber::new(probe.number),
            name: probe.name.clone(),
            unique_id: String::new(),
            avatar_url: String::new(),
            join_time: probe.join_time.clone(),
            status: String::new(),
            expired_time: String::new(),
            introduction: String::new(),
        },
        cached_at: 1,
        updated_at: 1,
    };
    store
        .put_members(&[record], Duration::from_secs(60))
        .await
        .expect("writes after a crash");
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_survives_kill_9_mid_write() {
    let env = TestApp::builder()
        .members(1000)
        .admin_token(ADMIN)
        .var("RUST_LOG", "warn")
        .environment()
        .await
        .expect("environment");
    let (sim, path) = (&env.sim, env.embedded_path());
    let mut rng = rand::rng();
    for iteration in 0..ITERATIONS {
        let mut service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = hammer(&service, sim, stop.clone());
        let wait = Duration::from_millis(rng.random_range(300..900));
        tokio::time::sleep(wait).await;
        kill_9(&mut service).await;
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = 0;
        for t in tasks {
            acknowledged += t.await.unwrap_or(0);
        }

        let started = Instant::now();
        let store = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, Arc::new(SystemClock)))
                .await
                .expect("open task")
                .expect("the file opens after kill -9")
        };
        let reopened = started.elapsed();
        let records = check_intact(&store, sim).await;
        println!(
            "[kill -9 #{iteration}] killed after {wait:?} and {acknowledged} acknowledged requests; \
             reopened in {reopened:?}; {records} records intact"
        );
        drop(store);
    }
}

/// Refund marks are records, not cache entries: a mark the service has
/// answered 200 for is in the embedded file even when the process is killed
/// the moment after, and a restarted service lists it, logs it and keeps it
/// through a cache clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_marks_answered_before_a_kill_9_are_there_after_the_restart() {
    let env = TestApp::builder()
        .admin_token(ADMIN)
        .var("RUST_LOG", "warn")
        .environment()
        .await
        .expect("environment");
    let camp = env.sim.data.benchmark_camp().expect("benchmark camp");
    let checkin = camp.checkin_id;
    let ranking = env
        .sim
        .data
        .expected_ranking(checkin)
        .expect("a simulated camp");
    let (one, batch) = (ranking[0].0, [ranking[1].0, ranking[2].0]);
    let http = reqwest::Client::new();

    let mut service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let marked = http
        .put(service.url(&format!("/api/camps/{checkin}/refunds/{one}")))
        .bearer_auth(ADMIN)
        .json(&json!({"status": "refunded", "note": "微信转账 #1"}))
        .send()
        .await
        .expect("PUT answered");
    assert_eq!(
        marked.status(),
        200,
        "{}",
        marked.text().await.unwrap_or_default()
    );
    let ids: Vec<String> = batch.iter().map(u64::to_string).collect();
    let marked = http
        .post(service.url(&format!("/api/camps/{checkin}/refunds")))
        .bearer_auth(ADMIN)
        .json(&json!({"user_ids": ids, "status": "rejected"}))
        .send()
        .await
        .expect("POST answered");
    assert_eq!(
        marked.status(),
        200,
        "{}",
        marked.text().await.unwrap_or_default()
    );
    kill_9(&mut service).await;

    let service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let cleared = http
        .delete(service.url("/api/users/cache"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("clear answered");
    assert_eq!(cleared.status(), 200);
    let list: serde_json::Value = http
        .post(service.url(&format!("/api/camps/{checkin}/refund-list")))
        .json(&json!({"required_days": 1}))
        .send()
        .await
        .expect("list answered")
        .json()
        .await
        .expect("JSON");
    let rows = list["data"]["refund_list"].as_array().expect("rows");
    let status_of = |id: u64| {
        // Ids travel as strings (they go beyond what JSON numbers hold).
        let id = id.to_string();
        rows.iter()
            .find(|r| r["planet_user_id"].as_str() == Some(id.as_str()))
            .map(|r| (r["refund_status"].clone(), r["refund_note"].clone()))
            .expect("a participant's row")
    };
    assert_eq!(status_of(one), (json!("refunded"), json!("微信转账 #1")));
    for id in batch {
        assert_eq!(status_of(id).0, json!("rejected"));
    }
    let unmarked = rows
        .iter()
        .filter(|r| r["refund_status"] == "pending")
        .count();
    assert_eq!(unmarked, rows.len() - 3, "nobody else is marked");
    let log: serde_json::Value = http
        .get(service.url(&format!("/api/camps/{checkin}/refunds/log")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("log answered")
        .json()
        .await
        .expect("JSON");
    let entries = log["data"]["entries"].as_array().expect("log entries");
    assert_eq!(entries.len(), 3, "{log}");
}
