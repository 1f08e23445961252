//! The storage contract, run against both stores.
//!
//! Every scenario is written once against `dyn Store` and instantiated twice
//! by `contract!`: once on a fresh real `redis-server` (started by
//! `zsxq_test_support::RedisServer` on a free port) and once on a fresh redb file in a
//! temporary directory. Where Redis adds a promise of its own (the original
//! design's `redis-cli` recipes, TTLs on every key, no leftovers after
//! `clear`), the scenario also inspects Redis directly through a plain
//! connection.
//!
//! A third instantiation runs every scenario on a real Redis Cluster (three
//! masters, three replicas, built by `zsxq_test_support::RedisCluster`), so that the
//! cluster and a single server are held to the very same answers.
//! Looking behind the store there goes through the cluster client.
//!
//! Time: the Redis store runs on the wall clock and real TTLs (a 1 s TTL and
//! a 2 s wait); the embedded store runs on a `ManualClock` moved forward.
//!
//! - `members.rs`: records read back as written, numbers resolve, overwrites.
//! - `paging.rs`: pages by number and by join time, the oldest members.
//! - `lifecycle.rs`: expiry, clear, statistics, rankings, the device id and
//!   the data identity.
//! - `buckets.rs`: what the Redis layout's bucketed indexes make risky
//!   (bucket splits, ties across buckets, a number passed on, expiry
//!   across buckets).
//! - `marks.rs`: refund marks and their log.
//! - `embedded_only.rs`, `redis_only.rs`: what one store promises beyond
//!   the contract.

mod buckets;
mod embedded_only;
mod lifecycle;
mod marks;
mod members;
mod paging;
mod redis_only;

use buckets::*;
use lifecycle::*;
use marks::*;
use members::*;
use paging::*;

use std::collections::HashMap;
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
    ClearReport, Page, PageRequest, SortBy, SortOrder, StatCounters, Store, StoreError, StoredStats,
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

/// The first ten members in `sort` and `order`, and the total.
async fn first_ten(h: &Harness, sort: SortBy, order: SortOrder) -> Page {
    h.store
        .page(PageRequest {
            sort,
            order,
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap()
}

/// The members of one index of the Redis layout (`number`, `join_time`,
/// `expiry`), in index order, read as an operator would: the directory,
/// then each of its buckets.
async fn index_members(raw: &mut Raw, index: &str) -> Vec<String> {
    let buckets: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("zsxq:{{idx}}:{index}:dir"))
        .arg(0)
        .arg(-1)
        .query_async(raw)
        .await
        .unwrap();
    let mut out = Vec::new();
    for bucket in buckets {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("zsxq:{{idx}}:{index}:{bucket}"))
            .arg(0)
            .arg(-1)
            .query_async(raw)
            .await
            .unwrap();
        out.extend(members);
    }
    out
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
    the_first_read_after_members_expire_prunes_them_whichever_read_it_is,
    clear_removes_every_member_index_and_counter_and_reports_counts,
    stats_accumulate_and_remember_the_last_sync_time,
    oldest_lists_the_members_closest_to_expiry_first,
    a_cached_ranking_reads_back_until_it_expires_and_clear_removes_it,
    the_data_identity_counts_the_id_set_and_names_a_run_id_on_one_server_only,
    the_device_id_is_created_once_agreed_on_by_concurrent_callers_and_survives_clear,
    pages_cross_bucket_boundaries_in_both_orders_with_ties_and_numberless_last,
    a_number_passed_to_another_member_resolves_to_its_newest_holder,
    expiry_across_buckets_prunes_exactly_and_keeps_the_oldest_in_order,
);
