//! The storage contract, run against both stores.
//!
//! Every scenario is written once against `dyn Store` and instantiated twice
//! by `contract!`: once on a fresh real `redis-server` (started by
//! `testkit::RedisServer` on a free port) and once on a fresh redb file in a
//! temporary directory. Where Redis adds a promise of its own (the original
//! design's `redis-cli` recipes, TTLs on every key, no leftovers after
//! `clear`), the scenario also inspects Redis directly through a plain
//! connection.
//!
//! A third instantiation runs every scenario on a real Redis Cluster (three
//! masters, three replicas, built by `testkit::RedisCluster`), so that the
//! cluster and a single server are held to the very same answers.
//! Looking behind the store there goes through the cluster client.
//!
//! Time: the Redis store runs on the wall clock and real TTLs (a 1 s TTL and
//! a 2 s wait); the embedded store runs on a `ManualClock` moved forward.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::slice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zsxq_cache::clock::{Clock, ManualClock, SystemClock};
use zsxq_cache::domain::{CachedMember, CheckinId, Member, MemberNumber, RankingType, UserId};
use zsxq_cache::redis_link::{Link, RedisTarget};
use zsxq_cache::store::embedded::EmbeddedStore;
use zsxq_cache::store::redis::RedisStore;
use zsxq_cache::store::{
    ClearReport, PageRequest, SortBy, SortOrder, StatCounters, Store, StoreError, StoredStats,
};
use zsxq_test_support::{RedisCluster, RedisServer};

/// The TTL of ordinary writes in these tests.
const TTL: Duration = Duration::from_secs(3_600);

/// The TTL of writes that a test lets expire.
const SHORT_TTL: Duration = Duration::from_secs(1);

/// Where the embedded store's clock starts (2024-10-28).
const START_MS: i64 = 1_730_080_000_000;

/// One store under test, with what the scenario needs to inspect it.
struct Harness {
    store: Box<dyn Store>,
    /// Set for the embedded store: time moves only when a scenario says so.
    manual_clock: Option<Arc<ManualClock>>,
    /// Set for the Redis store; killed when the harness drops.
    redis: Option<RedisServer>,
    /// Set for the store on a Redis Cluster; killed when the harness drops.
    cluster: Option<RedisCluster>,
    /// Keeps the redb file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// The redb file, for reopening.
    path: Option<PathBuf>,
}

impl Harness {
    async fn redis() -> Self {
        let server = RedisServer::start().expect("start redis-server");
        let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).expect("connect");
        Harness {
            store: Box::new(store),
            manual_clock: None,
            redis: Some(server),
            cluster: None,
            _dir: None,
            path: None,
        }
    }

    async fn redis_cluster() -> Self {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .unwrap()
            .expect("start a redis cluster");
        let target = RedisTarget::Cluster {
            nodes: cluster.urls(),
            read_from_replicas: false,
        };
        let store = RedisStore::connect_target(&target, Arc::new(SystemClock)).expect("connect");
        Harness {
            store: Box::new(store),
            manual_clock: None,
            redis: None,
            cluster: Some(cluster),
            _dir: None,
            path: None,
        }
    }

    async fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.redb");
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = EmbeddedStore::open(&path, clock.clone()).expect("open redb");
        Harness {
            store: Box::new(store),
            manual_clock: Some(clock),
            redis: None,
            cluster: None,
            _dir: Some(dir),
            path: Some(path),
        }
    }

    /// Lets `d` pass for the store: really for Redis, on the clock otherwise.
    async fn let_time_pass(&self, d: Duration) {
        match &self.manual_clock {
            Some(clock) => clock.advance_ms(i64::try_from(d.as_millis()).unwrap()),
            None => tokio::time::sleep(d).await,
        }
    }

    /// A plain connection to the test's Redis, for looking behind the store:
    /// the server, or a cluster client (which routes each key to its node).
    async fn raw_redis(&self) -> Option<Raw> {
        let (target, nodes) = if let Some(server) = &self.redis {
            (RedisTarget::Single(server.url()), vec![server.url()])
        } else {
            let cluster = self.cluster.as_ref()?;
            let target = RedisTarget::Cluster {
                nodes: cluster.urls(),
                read_from_replicas: false,
            };
            let masters = cluster
                .masters()
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect();
            (target, masters)
        };
        let conn = Link::new(&target, Duration::from_secs(2)).unwrap();
        Some(Raw { conn, nodes })
    }
}

/// A connection behind the store's back, with the nodes that hold data
/// (for SCAN, which sees one node's keys).
struct Raw {
    conn: Link,
    nodes: Vec<String>,
}

impl redis::aio::ConnectionLike for Raw {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

fn uid(id: u64) -> UserId {
    UserId::new(id).unwrap()
}

fn num(n: u64) -> MemberNumber {
    MemberNumber::new(n).unwrap()
}

fn member(id: u64, number: u64, name: &str, join_time: &str) -> CachedMember {
    CachedMember {
        member: Member {
            user_id: uid(id),
            number: Some(num(number)),
            name: name.to_owned(),
            unique_id: format!("u{id}"),
            avatar_url: format!("https://images.zsxq.com/{id}.jpg"),
            join_time: join_time.to_owned(),
            status: "joined".to_owned(),
            expired_time: "2026-09-04T22:39:05.287+0800".to_owned(),
            introduction: "高级前端开发工程师".to_owned(),
        },
        cached_at: START_MS,
        updated_at: START_MS,
    }
}

fn numbers_of(members: &[CachedMember]) -> Vec<u64> {
    members
        .iter()
        .map(|m| m.member.number.unwrap().get())
        .collect()
}

fn ids_of(members: &[CachedMember]) -> Vec<u64> {
    members.iter().map(|m| m.member.user_id.get()).collect()
}

/// Every `zsxq:*` key in the test's Redis (every master of a cluster),
/// found with SCAN (never KEYS).
async fn namespace_keys(raw: &mut Raw) -> Vec<String> {
    let mut keys = Vec::new();
    for node in &raw.nodes {
        let mut conn = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("zsxq:*")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

// ---------------------------------------------------------------------------
// Scenarios shared by both stores.
// ---------------------------------------------------------------------------

async fn members_read_back_exactly_as_written_including_chinese_emoji_and_empty_unique_id(
    h: &Harness,
) {
    let mut plain = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    plain.cached_at = START_MS - 5_000;
    plain.updated_at = START_MS;
    let mut emoji = member(
        412_451_285_841_818,
        2,
        "🐱 小猫咪 ✨",
        "2023-01-01T08:00:00.000+0800",
    );
    emoji.member.unique_id = String::new();
    emoji.member.introduction = String::new();
    h.store
        .put_members(&[plain.clone(), emoji.clone()], TTL)
        .await
        .unwrap();

    let got = h
        .store
        .get_members(&[plain.member.user_id, emoji.member.user_id])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(plain), Some(emoji)]);
}

async fn unknown_ids_read_as_none_and_batches_keep_their_order(h: &Harness) {
    let a = member(11, 1, "甲", "2024-01-01T00:00:00.000+0800");
    let b = member(22, 2, "乙", "2024-01-02T00:00:00.000+0800");
    h.store
        .put_members(&[a.clone(), b.clone()], TTL)
        .await
        .unwrap();

    let got = h
        .store
        .get_members(&[uid(22), uid(999), uid(11), uid(22)])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(b.clone()), None, Some(a), Some(b)]);
    assert_eq!(h.store.get_members(&[]).await.unwrap(), vec![]);
    assert_eq!(h.store.get_members(&[uid(5)]).await.unwrap(), vec![None]);
}

async fn a_number_resolves_to_its_member_and_an_unknown_number_to_nothing(h: &Harness) {
    let a = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    h.store.put_members(&[a], TTL).await.unwrap();

    assert_eq!(
        h.store.user_id_by_number(num(177)).await.unwrap(),
        Some(uid(454_881_884_228))
    );
    assert_eq!(h.store.user_id_by_number(num(178)).await.unwrap(), None);
}

async fn a_members_old_number_stops_resolving_once_its_number_changed(h: &Harness) {
    let before = member(31, 5, "换号的人", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(slice::from_ref(&before), TTL)
        .await
        .unwrap();
    let mut after = before.clone();
    after.member.number = Some(num(6));
    h.store
        .put_members(slice::from_ref(&after), TTL)
        .await
        .unwrap();

    assert_eq!(h.store.user_id_by_number(num(5)).await.unwrap(), None);
    assert_eq!(
        h.store.user_id_by_number(num(6)).await.unwrap(),
        Some(uid(31))
    );
    let page = h
        .store
        .page(PageRequest {
            sort: SortBy::Number,
            order: SortOrder::Asc,
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1, "the old number leaves no index entry behind");
    assert_eq!(numbers_of(&page.members), vec![6]);
    if let Some(mut conn) = h.raw_redis().await {
        let old_key: Option<String> = redis::cmd("GET")
            .arg("zsxq:number:5")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            old_key, None,
            "the old number key is deleted, not left stale"
        );
    }

    // The number now goes to someone else: it resolves to them.
    let newcomer = member(32, 5, "新人", "2024-02-01T00:00:00.000+0800");
    h.store.put_members(&[newcomer], TTL).await.unwrap();
    assert_eq!(
        h.store.user_id_by_number(num(5)).await.unwrap(),
        Some(uid(32))
    );

    if let Some(mut conn) = h.raw_redis().await {
        // A stale number key (as an older writer, or a clear that forgets the
        // number index, leaves them) must not be trusted: the member's hash
        // says 6.
        let _: () = redis::cmd("SET")
            .arg("zsxq:number:7")
            .arg("31")
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(h.store.user_id_by_number(num(7)).await.unwrap(), None);
    }
}

async fn overwriting_a_member_keeps_the_cached_at_the_caller_gives(h: &Harness) {
    let first = member(41, 9, "旧名字", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(slice::from_ref(&first), TTL)
        .await
        .unwrap();
    let mut second = first.clone();
    second.member.name = "新名字".to_owned();
    second.updated_at = START_MS + 60_000;
    h.store
        .put_members(slice::from_ref(&second), TTL)
        .await
        .unwrap();

    let got = h.store.get_members(&[uid(41)]).await.unwrap();
    let got = got[0].clone().expect("cached");
    assert_eq!(got.member.name, "新名字");
    assert_eq!(got.cached_at, first.cached_at);
    assert_eq!(got.updated_at, START_MS + 60_000);
    assert_eq!(h.store.count().await.unwrap(), 1);
}

async fn cached_ids_say_which_members_are_cached(h: &Harness) {
    let a = member(51, 1, "a", "2024-01-01T00:00:00.000+0800");
    let c = member(53, 3, "c", "2024-01-03T00:00:00.000+0800");
    h.store.put_members(&[a, c], TTL).await.unwrap();
    assert_eq!(
        h.store
            .cached_ids(&[uid(51), uid(52), uid(53)])
            .await
            .unwrap(),
        vec![true, false, true]
    );
    assert_eq!(h.store.cached_ids(&[]).await.unwrap(), Vec::<bool>::new());
}

async fn pages_by_number_follow_order_offset_and_limit_with_exact_totals(h: &Harness) {
    // Written in shuffled order, in two batches.
    let numbers = [40u64, 3, 17, 1, 250, 8, 99];
    let members: Vec<CachedMember> = numbers
        .iter()
        .map(|&n| {
            member(
                1_000 + n,
                n,
                &format!("成员{n}"),
                "2024-01-01T00:00:00.000+0800",
            )
        })
        .collect();
    h.store.put_members(&members[..3], TTL).await.unwrap();
    h.store.put_members(&members[3..], TTL).await.unwrap();

    let page = |order, offset, limit| {
        h.store.page(PageRequest {
            sort: SortBy::Number,
            order,
            offset,
            limit,
        })
    };
    let p = page(SortOrder::Asc, 0, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![1, 3, 8], 7));
    let p = page(SortOrder::Asc, 3, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![17, 40, 99], 7));
    let p = page(SortOrder::Asc, 6, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![250], 7));
    let p = page(SortOrder::Asc, 7, 3).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    let p = page(SortOrder::Desc, 0, 4).await.unwrap();
    assert_eq!(
        (numbers_of(&p.members), p.total),
        (vec![250, 99, 40, 17], 7)
    );
    let p = page(SortOrder::Desc, 5, 10).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![3, 1], 7));
    for offset in [0, 2] {
        let p = page(SortOrder::Asc, offset, 0).await.unwrap();
        assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    }
    let p = page(SortOrder::Desc, u64::MAX, 5).await.unwrap();
    assert_eq!((numbers_of(&p.members), p.total), (vec![], 7));
    // Pages carry whole records, not just ids.
    let p = page(SortOrder::Asc, 0, 1).await.unwrap();
    assert_eq!(p.members, vec![members[3].clone()]);
}

async fn pages_by_join_time_follow_order_with_ties_and_bad_times_placed_alike(h: &Harness) {
    let members = vec![
        member(61, 1, "b", "2024-03-01T10:00:00.000+0800"),
        member(62, 2, "a", "2023-12-31T23:59:59.999+0800"),
        // Equal join times: both stores order ties by the id's text, as a
        // Redis sorted set does ("10" < "9").
        member(9, 3, "tie-9", "2024-05-05T05:05:05.000+0800"),
        member(10, 4, "tie-10", "2024-05-05T05:05:05.000+0800"),
        // Unparseable time sorts first rather than failing the page.
        member(63, 5, "bad", "not a time"),
        // Same instant as 61, written with a different offset notation.
        member(64, 6, "c", "2024-03-01T02:00:00.001+00:00"),
    ];
    h.store.put_members(&members, TTL).await.unwrap();

    let asc = h
        .store
        .page(PageRequest {
            sort: SortBy::JoinTime,
            order: SortOrder::Asc,
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(asc.total, 6);
    assert_eq!(ids_of(&asc.members), vec![63, 62, 61, 64, 10, 9]);
    let desc = h
        .store
        .page(PageRequest {
            sort: SortBy::JoinTime,
            order: SortOrder::Desc,
            offset: 1,
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(desc.total, 6);
    assert_eq!(ids_of(&desc.members), vec![10, 64, 61]);
}

async fn expired_members_vanish_from_reads_counts_pages_and_the_id_set(h: &Harness) {
    let keeper = member(71, 1, "留下", "2024-01-01T00:00:00.000+0800");
    let goners = vec![
        member(72, 2, "过期一", "2024-01-02T00:00:00.000+0800"),
        member(73, 3, "过期二", "2024-01-03T00:00:00.000+0800"),
    ];
    h.store
        .put_members(slice::from_ref(&keeper), TTL)
        .await
        .unwrap();
    h.store.put_members(&goners, SHORT_TTL).await.unwrap();
    assert_eq!(h.store.count().await.unwrap(), 3);

    h.let_time_pass(SHORT_TTL + Duration::from_secs(1)).await;

    assert_eq!(
        h.store
            .get_members(&[uid(72), uid(71), uid(73)])
            .await
            .unwrap(),
        vec![None, Some(keeper.clone()), None]
    );
    assert_eq!(
        h.store.cached_ids(&[uid(72), uid(71)]).await.unwrap(),
        vec![false, true]
    );
    assert_eq!(h.store.user_id_by_number(num(2)).await.unwrap(), None);
    assert_eq!(h.store.count().await.unwrap(), 1);
    for sort in [SortBy::Number, SortBy::JoinTime] {
        let p = h
            .store
            .page(PageRequest {
                sort,
                order: SortOrder::Asc,
                offset: 0,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!((ids_of(&p.members), p.total), (vec![71], 1));
    }

    if let Some(mut conn) = h.raw_redis().await {
        let ids: HashSet<String> = redis::cmd("SMEMBERS")
            .arg("zsxq:users:all")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ids, HashSet::from(["71".to_owned()]));
        for index in [
            "zsxq:{idx}:number",
            "zsxq:{idx}:join_time",
            "zsxq:{idx}:expiry",
        ] {
            let n: u64 = redis::cmd("ZCARD")
                .arg(index)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(n, 1, "{index} still lists expired members");
        }
        // The short-TTL write must not have cut the shared keys' TTL below
        // the keeper's: otherwise the set would expire before the member.
        let left: i64 = redis::cmd("PTTL")
            .arg("zsxq:users:all")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(left > 3_000_000, "users:all TTL shrank to {left} ms");
    }

    // Once the keeper expires too, nothing is left (the wall-clock variant
    // would need an hour, so only the embedded store checks this).
    if let Some(clock) = &h.manual_clock {
        clock.advance_ms(i64::try_from(TTL.as_millis()).unwrap());
        assert_eq!(h.store.count().await.unwrap(), 0);
        let p = h
            .store
            .page(PageRequest {
                sort: SortBy::Number,
                order: SortOrder::Desc,
                offset: 0,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!((p.members.len(), p.total), (0, 0));
    }
}

async fn clear_removes_every_member_index_and_counter_and_reports_counts(h: &Harness) {
    let members = vec![
        member(81, 1, "一", "2024-01-01T00:00:00.000+0800"),
        member(82, 2, "二", "2024-01-02T00:00:00.000+0800"),
        member(83, 3, "三", "2024-01-03T00:00:00.000+0800"),
    ];
    h.store.put_members(&members, TTL).await.unwrap();
    h.store
        .add_stats(&StatCounters {
            total_requests: 3,
            cache_hits: 1,
            cache_misses: 2,
            api_calls: 2,
        })
        .await
        .unwrap();
    h.store.set_last_sync_time(START_MS).await.unwrap();

    let report = h.store.clear().await.unwrap();
    // 3 member hashes + 3 number keys + users:all + 3 indexes + stats hash.
    assert_eq!(
        report,
        ClearReport {
            deleted_keys: 11,
            deleted_users: 3
        }
    );

    assert_eq!(h.store.count().await.unwrap(), 0);
    assert_eq!(
        h.store.get_members(&[uid(81), uid(83)]).await.unwrap(),
        vec![None, None]
    );
    assert_eq!(h.store.user_id_by_number(num(1)).await.unwrap(), None);
    let p = h
        .store
        .page(PageRequest {
            sort: SortBy::Number,
            order: SortOrder::Asc,
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!((p.members.len(), p.total), (0, 0));
    assert_eq!(h.store.stats().await.unwrap(), StoredStats::default());
    assert_eq!(h.store.clear().await.unwrap(), ClearReport::default());

    if let Some(mut conn) = h.raw_redis().await {
        assert_eq!(namespace_keys(&mut conn).await, Vec::<String>::new());
    }

    // The store keeps working after a clear.
    h.store.put_members(&members[..1], TTL).await.unwrap();
    assert_eq!(h.store.count().await.unwrap(), 1);
}

async fn stats_accumulate_and_remember_the_last_sync_time(h: &Harness) {
    assert_eq!(h.store.stats().await.unwrap(), StoredStats::default());
    let delta = StatCounters {
        total_requests: 10,
        cache_hits: 7,
        cache_misses: 3,
        api_calls: 4,
    };
    h.store.add_stats(&delta).await.unwrap();
    h.store.add_stats(&delta).await.unwrap();
    h.store.add_stats(&StatCounters::default()).await.unwrap();
    h.store.set_last_sync_time(START_MS + 1).await.unwrap();
    h.store.set_last_sync_time(START_MS + 2).await.unwrap();

    assert_eq!(
        h.store.stats().await.unwrap(),
        StoredStats {
            counters: StatCounters {
                total_requests: 20,
                cache_hits: 14,
                cache_misses: 6,
                api_calls: 8,
            },
            last_sync_time: Some(START_MS + 2),
        }
    );
    h.store.ping().await.unwrap();
    let usage = h.store.memory_usage().await.unwrap();
    assert!(
        usage.ends_with(['B', 'K', 'M', 'G']) && usage.starts_with(|c: char| c.is_ascii_digit()),
        "memory usage {usage:?} is not human readable"
    );
}

async fn a_cached_ranking_reads_back_until_it_expires_and_clear_removes_it(h: &Harness) {
    const ACC: RankingType = RankingType::Accumulated;
    const CONT: RankingType = RankingType::Continuous;
    let camp = CheckinId::new(842_448_118_212_345).unwrap();
    let ongoing = CheckinId::new(77).unwrap();
    assert_eq!(h.store.get_ranking(camp, ACC).await.unwrap(), None);

    let first = "{\"rows\":[\"🐱猫猫\",\"Tom \\\"The Cat\\\" Li\"]}".as_bytes();
    h.store.put_ranking(camp, ACC, first, TTL).await.unwrap();
    h.store
        .put_ranking(ongoing, ACC, b"short-lived", SHORT_TTL)
        .await
        .unwrap();
    assert_eq!(
        h.store.get_ranking(camp, ACC).await.unwrap().as_deref(),
        Some(first)
    );
    // A second write replaces the first.
    h.store.put_ranking(camp, ACC, b"v2", TTL).await.unwrap();
    assert_eq!(
        h.store.get_ranking(camp, ACC).await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );

    h.let_time_pass(Duration::from_secs(2)).await;
    assert_eq!(h.store.get_ranking(ongoing, ACC).await.unwrap(), None);
    assert_eq!(
        h.store.get_ranking(camp, ACC).await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    // The continuous ranking of the same camp is kept apart from the
    // accumulated one: neither is read as the other.
    assert_eq!(h.store.get_ranking(camp, CONT).await.unwrap(), None);
    h.store
        .put_ranking(camp, CONT, b"streaks", TTL)
        .await
        .unwrap();
    assert_eq!(
        h.store.get_ranking(camp, CONT).await.unwrap().as_deref(),
        Some(&b"streaks"[..])
    );
    assert_eq!(
        h.store.get_ranking(camp, ACC).await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    // Rankings are not members.
    assert_eq!(h.store.count().await.unwrap(), 0);

    assert_eq!(
        h.store.clear().await.unwrap(),
        ClearReport {
            deleted_keys: 2,
            deleted_users: 0
        }
    );
    assert_eq!(h.store.get_ranking(camp, ACC).await.unwrap(), None);
    assert_eq!(h.store.get_ranking(camp, CONT).await.unwrap(), None);
    if let Some(mut conn) = h.raw_redis().await {
        assert_eq!(namespace_keys(&mut conn).await, Vec::<String>::new());
    }
}

async fn the_device_id_is_created_once_agreed_on_by_concurrent_callers_and_survives_clear(
    h: &Harness,
) {
    let candidates: Vec<String> = (0..8).map(|i| format!("device-candidate-{i}")).collect();
    let answers =
        futures_util::future::join_all(candidates.iter().map(|c| h.store.device_id(c))).await;
    let answers: Vec<String> = answers.into_iter().map(Result::unwrap).collect();
    let first = answers[0].clone();
    assert!(candidates.contains(&first), "{first}");
    assert!(
        answers.iter().all(|a| *a == first),
        "concurrent callers agree on one id: {answers:?}"
    );
    assert_eq!(h.store.device_id("a-later-candidate").await.unwrap(), first);
    h.store.clear().await.unwrap();
    h.let_time_pass(Duration::from_secs(1)).await;
    assert_eq!(
        h.store.device_id("after-clear").await.unwrap(),
        first,
        "neither a clear nor time changes the device"
    );
    assert_eq!(h.store.count().await.unwrap(), 0, "the id is not a member");
    if let Some(mut conn) = h.raw_redis().await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("zsxq:device:aduid")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "the device id never expires");
    }
}

async fn refund_marks_apply_all_or_nothing_log_newest_first_and_survive_clear(h: &Harness) {
    use zsxq_cache::store::marks::{MarkChange, RefundLogEntry, RefundMark, RefundStatus};
    let camp = CheckinId::parse("8424481182").unwrap();
    let (a, b) = (UserId::new(11).unwrap(), UserId::new(22).unwrap());
    let change = |user, expected: Option<RefundMark>, status, at| {
        let mark = RefundMark {
            status,
            note: Some("微信已转".into()),
            updated_at: at,
            updated_by: "admin".into(),
        };
        MarkChange {
            user_id: user,
            expected: expected.clone(),
            entry: RefundLogEntry {
                at,
                by: "admin".into(),
                user_id: user,
                from: expected.map_or(RefundStatus::Pending, |m| m.status),
                to: status,
                note: mark.note.clone(),
            },
            mark,
        }
    };
    let first = [
        change(a, None, RefundStatus::Refunded, 1),
        change(b, None, RefundStatus::Rejected, 1),
    ];
    assert!(h.store.apply_refund_marks(camp, &first).await.unwrap());
    let marks = h.store.refund_marks(camp).await.unwrap();
    assert_eq!(marks.len(), 2);
    assert_eq!(marks[&a], first[0].mark);
    // A stale expectation on one of two writes nothing at all.
    let stale = [
        change(a, Some(first[0].mark.clone()), RefundStatus::Pending, 2),
        change(b, None, RefundStatus::Refunded, 2),
    ];
    assert!(!h.store.apply_refund_marks(camp, &stale).await.unwrap());
    assert_eq!(h.store.refund_marks(camp).await.unwrap(), marks);
    let next = [change(
        a,
        Some(first[0].mark.clone()),
        RefundStatus::Pending,
        3,
    )];
    assert!(h.store.apply_refund_marks(camp, &next).await.unwrap());
    let log = h.store.refund_log(camp, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], next[0].entry, "newest first");
    assert_eq!(h.store.refund_log(camp, 1).await.unwrap().len(), 1);
    h.store.clear().await.unwrap();
    // Redis time is real: there the PTTL below shows the keys never expire.
    if h.manual_clock.is_some() {
        h.let_time_pass(Duration::from_secs(7 * 86_400)).await;
    }
    assert_eq!(
        h.store.refund_marks(camp).await.unwrap().len(),
        2,
        "clear and time leave marks"
    );
    assert_eq!(h.store.refund_log(camp, 10).await.unwrap().len(), 3);
    let other = CheckinId::parse("1").unwrap();
    assert!(h.store.refund_marks(other).await.unwrap().is_empty());
    if let Some(mut conn) = h.raw_redis().await {
        let ttl: i64 = redis::cmd("PTTL")
            .arg("zsxq:refund:{8424481182}:marks")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "marks never expire");
    }
}

macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let h = super::Harness::redis().await;
                    super::$scenario(&h).await;
                }
            )*
        }

        mod embedded_store {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let h = super::Harness::embedded().await;
                    super::$scenario(&h).await;
                }
            )*
        }

        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let h = super::Harness::redis_cluster().await;
                    super::$scenario(&h).await;
                }
            )*
        }
    };
}

contract!(
    refund_marks_apply_all_or_nothing_log_newest_first_and_survive_clear,
    members_read_back_exactly_as_written_including_chinese_emoji_and_empty_unique_id,
    unknown_ids_read_as_none_and_batches_keep_their_order,
    a_number_resolves_to_its_member_and_an_unknown_number_to_nothing,
    a_members_old_number_stops_resolving_once_its_number_changed,
    overwriting_a_member_keeps_the_cached_at_the_caller_gives,
    cached_ids_say_which_members_are_cached,
    pages_by_number_follow_order_offset_and_limit_with_exact_totals,
    pages_by_join_time_follow_order_with_ties_and_bad_times_placed_alike,
    expired_members_vanish_from_reads_counts_pages_and_the_id_set,
    clear_removes_every_member_index_and_counter_and_reports_counts,
    stats_accumulate_and_remember_the_last_sync_time,
    oldest_lists_the_members_closest_to_expiry_first,
    a_cached_ranking_reads_back_until_it_expires_and_clear_removes_it,
    the_data_identity_counts_the_id_set_and_names_a_run_id_on_one_server_only,
    the_device_id_is_created_once_agreed_on_by_concurrent_callers_and_survives_clear,
);

async fn the_data_identity_counts_the_id_set_and_names_a_run_id_on_one_server_only(h: &Harness) {
    let Some(before) = h.store.data_identity().await.unwrap() else {
        assert!(h.redis.is_none() && h.cluster.is_none(), "Redis can tell");
        return;
    };
    assert_eq!(before.members, 0);
    // A cluster has no one run id: a failover changes them.
    assert_eq!(before.run_id.is_some(), h.redis.is_some(), "{before:?}");
    let (a, b) = (
        member(601, 1, "a", "2024-01-01T00:00:00.000+0800"),
        member(602, 2, "b", "2024-01-01T00:00:00.000+0800"),
    );
    h.store.put_members(&[a, b], TTL).await.unwrap();
    let after = h.store.data_identity().await.unwrap().unwrap();
    assert_eq!(after.members, 2);
    assert_eq!(after.run_id, before.run_id, "the same server");
    h.store.clear().await.unwrap();
    assert_eq!(h.store.data_identity().await.unwrap().unwrap().members, 0);
}

async fn oldest_lists_the_members_closest_to_expiry_first(h: &Harness) {
    let a = member(501, 1, "a", "2024-01-01T00:00:00.000+0800");
    let b = member(502, 2, "b", "2024-01-01T00:00:00.000+0800");
    let c = member(503, 3, "c", "2024-01-01T00:00:00.000+0800");
    for m in [&a, &b, &c] {
        h.store.put_members(slice::from_ref(m), TTL).await.unwrap();
        h.let_time_pass(Duration::from_millis(20)).await;
    }
    let ids = |v: Vec<UserId>| v.into_iter().map(UserId::get).collect::<Vec<_>>();
    assert_eq!(ids(h.store.oldest(2).await.unwrap()), vec![501, 502]);
    assert!(h.store.oldest(0).await.unwrap().is_empty());
    // Rewriting a member makes it the youngest.
    h.store.put_members(slice::from_ref(&a), TTL).await.unwrap();
    assert_eq!(ids(h.store.oldest(10).await.unwrap()), vec![502, 503, 501]);
}

// ---------------------------------------------------------------------------
// Embedded only.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn embedded_data_survives_closing_and_reopening_the_file() {
    let h = Harness::embedded().await;
    let clock = h.manual_clock.clone().unwrap();
    let a = member(91, 1, "持久", "2024-01-01T00:00:00.000+0800");
    h.store.put_members(slice::from_ref(&a), TTL).await.unwrap();
    h.store
        .add_stats(&StatCounters {
            total_requests: 1,
            ..StatCounters::default()
        })
        .await
        .unwrap();
    h.store.set_last_sync_time(START_MS).await.unwrap();
    let path = h.path.clone().unwrap();
    let Harness { store, _dir, .. } = h;
    drop(store);

    let reopened = EmbeddedStore::open(&path, clock.clone()).expect("reopen");
    assert_eq!(
        reopened.get_members(&[uid(91)]).await.unwrap(),
        vec![Some(a)]
    );
    assert_eq!(
        reopened.user_id_by_number(num(1)).await.unwrap(),
        Some(uid(91))
    );
    assert_eq!(reopened.count().await.unwrap(), 1);
    let stats = reopened.stats().await.unwrap();
    assert_eq!(stats.counters.total_requests, 1);
    assert_eq!(stats.last_sync_time, Some(START_MS));

    // Expiry is by stored time, so it also holds across a reopen.
    clock.advance_ms(i64::try_from(TTL.as_millis()).unwrap());
    assert_eq!(reopened.get_members(&[uid(91)]).await.unwrap(), vec![None]);
    assert_eq!(reopened.count().await.unwrap(), 0);
}

#[tokio::test]
async fn embedded_reports_an_undecodable_record_as_corrupt_and_clear_repairs_it() {
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
    let h = Harness::embedded().await;
    let clock = h.manual_clock.clone().unwrap();
    let path = h.path.clone().unwrap();
    let Harness { store, _dir, .. } = h;
    drop(store);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert(7u64, b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    let store = EmbeddedStore::open(&path, clock).unwrap();
    let err = store.get_members(&[uid(7)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    store.clear().await.unwrap();
    assert_eq!(store.get_members(&[uid(7)]).await.unwrap(), vec![None]);
}

// ---------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn redis_keeps_the_seeds_redis_cli_recipes_working() {
    let h = Harness::redis().await;
    let mut m = member(454_881_884_228, 177, "青弦", "2024-09-04T22:39:05.287+0800");
    m.member.unique_id = String::new();
    m.cached_at = 1_730_080_000_000;
    m.updated_at = 1_730_080_000_123;
    let other = member(
        412_451_285_841_818,
        178,
        "🐱",
        "2024-09-05T22:39:05.287+0800",
    );
    h.store.put_members(&[m, other], TTL).await.unwrap();
    let mut conn = h.raw_redis().await.unwrap();

    let hash: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("zsxq:user:454881884228")
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected: HashMap<String, String> = [
        ("user_id", "454881884228"),
        ("number", "177"),
        ("name", "青弦"),
        ("unique_id", ""),
        ("avatar_url", "https://images.zsxq.com/454881884228.jpg"),
        ("join_time", "2024-09-04T22:39:05.287+0800"),
        ("status", "joined"),
        ("expired_time", "2026-09-04T22:39:05.287+0800"),
        ("introduction", "高级前端开发工程师"),
        ("cached_at", "1730080000000"),
        ("updated_at", "1730080000123"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(hash, expected);

    let id: String = redis::cmd("GET")
        .arg("zsxq:number:177")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(id, "454881884228");

    let all: HashSet<String> = redis::cmd("SMEMBERS")
        .arg("zsxq:users:all")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        all,
        HashSet::from(["454881884228".to_owned(), "412451285841818".to_owned()])
    );
}

#[tokio::test]
async fn redis_reports_a_malformed_member_hash_as_corrupt_and_clear_repairs_it() {
    let h = Harness::redis().await;
    let mut conn = h.raw_redis().await.unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("zsxq:user:7")
        .arg("user_id")
        .arg("7")
        .arg("number")
        .arg("seven")
        .arg("cached_at")
        .arg("1")
        .arg("updated_at")
        .arg("1")
        .ignore()
        .cmd("SADD")
        .arg("zsxq:users:all")
        .arg("7")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let err = h.store.get_members(&[uid(7)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    let report = h.store.clear().await.unwrap();
    assert_eq!(report.deleted_users, 1);
    assert_eq!(h.store.get_members(&[uid(7)]).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn redis_gives_every_key_but_the_stats_hash_a_ttl_within_the_cache_ttl() {
    let h = Harness::redis().await;
    let a = member(101, 1, "a", "2024-01-01T00:00:00.000+0800");
    h.store
        .put_members(
            &[
                a.clone(),
                member(102, 2, "b", "2024-01-02T00:00:00.000+0800"),
            ],
            TTL,
        )
        .await
        .unwrap();
    // A number change and a second, shorter write exercise the other paths.
    let mut renumbered = a;
    renumbered.member.number = Some(num(3));
    h.store
        .put_members(&[renumbered], Duration::from_secs(600))
        .await
        .unwrap();
    h.store
        .add_stats(&StatCounters {
            api_calls: 1,
            ..StatCounters::default()
        })
        .await
        .unwrap();

    let mut conn = h.raw_redis().await.unwrap();
    let keys = namespace_keys(&mut conn).await;
    assert!(keys.len() >= 9, "expected the full layout, found {keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if key == "zsxq:stats:cache" {
            assert_eq!(ttl, -1, "the stats hash must not expire");
        } else {
            assert!(
                ttl > 0 && ttl <= TTL.as_secs() as i64,
                "{key} has TTL {ttl}"
            );
        }
    }
}

#[tokio::test]
async fn redis_clear_also_sweeps_keys_the_id_set_no_longer_knows() {
    let h = Harness::redis().await;
    h.store
        .put_members(&[member(111, 1, "a", "2024-01-01T00:00:00.000+0800")], TTL)
        .await
        .unwrap();
    let mut conn = h.raw_redis().await.unwrap();
    // What a careless writer leaves behind: a stale number key (a clear that
    // forgot the number index), and a member hash whose id fell out of the
    // set (set and hashes that expire at different times). Plus a key that
    // is not the store's.
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("zsxq:number:999")
        .arg("111")
        .arg("EX")
        .arg(600)
        .ignore()
        .cmd("HSET")
        .arg("zsxq:user:222")
        .arg("user_id")
        .arg("222")
        .ignore()
        .cmd("SET")
        .arg("zsxq:lease:sync")
        .arg("someone")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let report = h.store.clear().await.unwrap();
    // hash 111, number 1, users:all, 3 indexes, then stale number + orphan hash.
    assert_eq!(
        report,
        ClearReport {
            deleted_keys: 8,
            deleted_users: 2
        }
    );
    assert_eq!(
        namespace_keys(&mut conn).await,
        vec!["zsxq:lease:sync".to_owned()]
    );
}

#[tokio::test]
async fn redis_pages_skip_and_forget_members_whose_hash_was_evicted() {
    let h = Harness::redis().await;
    let members: Vec<CachedMember> = (1..=4)
        .map(|n| member(150 + n, n, "m", "2024-01-01T00:00:00.000+0800"))
        .collect();
    h.store.put_members(&members, TTL).await.unwrap();
    let mut conn = h.raw_redis().await.unwrap();
    // Eviction under maxmemory removes a hash long before its TTL.
    let _: u64 = redis::cmd("DEL")
        .arg("zsxq:user:152")
        .query_async(&mut conn)
        .await
        .unwrap();

    let p = h
        .store
        .page(PageRequest {
            sort: SortBy::Number,
            order: SortOrder::Asc,
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!((ids_of(&p.members), p.total), (vec![151, 153, 154], 3));
    let all: HashSet<String> = redis::cmd("SMEMBERS")
        .arg("zsxq:users:all")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !all.contains("152"),
        "the evicted id is still listed: {all:?}"
    );
    assert_eq!(h.store.count().await.unwrap(), 3);
}

#[tokio::test]
async fn redis_store_built_while_redis_is_down_fails_fast_and_recovers_after_restart() {
    let mut server = RedisServer::start().unwrap();
    server.stop().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).expect("no dial needed");
    let m = member(121, 1, "a", "2024-01-01T00:00:00.000+0800");

    for round in 0..2 {
        let ops: Vec<(&str, Result<(), String>, Duration)> = vec![
            timed("ping", store.ping()).await,
            timed("get_members", store.get_members(&[uid(121)])).await,
            timed("put_members", store.put_members(slice::from_ref(&m), TTL)).await,
            timed("user_id_by_number", store.user_id_by_number(num(1))).await,
            timed("cached_ids", store.cached_ids(&[uid(121)])).await,
            timed(
                "page",
                store.page(PageRequest {
                    sort: SortBy::Number,
                    order: SortOrder::Asc,
                    offset: 0,
                    limit: 5,
                }),
            )
            .await,
            timed("count", store.count()).await,
            timed("add_stats", store.add_stats(&one_request())).await,
            timed("stats", store.stats()).await,
            timed("memory_usage", store.memory_usage()).await,
            timed("clear", store.clear()).await,
        ];
        for (op, result, took) in ops {
            assert!(
                result.is_err(),
                "round {round}: {op} succeeded with Redis down"
            );
            assert!(
                took < Duration::from_secs(1),
                "round {round}: {op} took {took:?} to fail"
            );
        }
    }

    // Let the reconnect attempts the failures started run (and fail) before
    // Redis comes back, as they would in a busy service.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart().unwrap();
    // The very same store works again, from the first call on.
    store.ping().await.expect("first call after restart");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();
    assert_eq!(store.get_members(&[uid(121)]).await.unwrap(), vec![Some(m)]);
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn redis_store_fails_fast_while_redis_hangs_and_works_again_after_it_resumes() {
    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    let m = member(131, 1, "a", "2024-01-01T00:00:00.000+0800");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();

    server.pause().unwrap();
    for (op, result, took) in [
        timed("get_members", store.get_members(&[uid(131)])).await,
        timed("count", store.count()).await,
        timed("ping", store.ping()).await,
    ] {
        assert!(result.is_err(), "{op} succeeded against a frozen Redis");
        assert!(took < Duration::from_secs(1), "{op} took {took:?} to fail");
    }

    server.resume().unwrap();
    store.ping().await.expect("first call after resume");
    assert_eq!(store.get_members(&[uid(131)]).await.unwrap(), vec![Some(m)]);
}

#[tokio::test]
async fn redis_store_survives_redis_restarting_under_an_open_connection() {
    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    let m = member(141, 1, "a", "2024-01-01T00:00:00.000+0800");
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();

    // The old connection is dead; reads are idempotent, so the store may
    // replay them on a fresh connection and the caller never sees the drop.
    server.restart().unwrap();
    assert_eq!(store.get_members(&[uid(141)]).await.unwrap(), vec![None]);
    store.put_members(slice::from_ref(&m), TTL).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
}

fn one_request() -> StatCounters {
    StatCounters {
        total_requests: 1,
        ..StatCounters::default()
    }
}

/// Runs one store call, keeping only whether it failed and how long it took.
async fn timed<T, E: std::fmt::Display>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> (&'static str, Result<(), String>, Duration) {
    let started = Instant::now();
    let result = call.await.map(|_| ()).map_err(|e| e.to_string());
    (op, result, started.elapsed())
}

#[test]
fn opening_an_embedded_file_another_handle_holds_says_what_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.redb");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let _held = EmbeddedStore::open(&path, clock.clone()).unwrap();
    let err = EmbeddedStore::open(&path, clock).unwrap_err().to_string();
    assert!(err.contains("already open"), "{err}");
    assert!(err.contains("serve"), "{err}");
}
