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
        service.signal("KILL");
        let status = service
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits after SIGKILL");
        assert!(!status.success(), "killed, not exited");
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
