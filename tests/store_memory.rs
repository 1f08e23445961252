//! Redis memory per cached member, measured on a private
//! `redis-server` with its default configuration: `used_memory` before and
//! after writing simulator members through the store, divided by their
//! number. With a fresh server and one writer the figure is deterministic
//! to a few bytes, so the bound below is tight on purpose: it guards the
//! compact layout against regressions (a hash falling back to hashtable
//! encoding costs ~600 B more).
//!
//! The sorted indexes must not make the cache fatter than a straightforward
//! implementation of the original design's layout. The same test
//! therefore also measures, on the same members and server: our figure
//! without the indexes, and the straightforward layout (one `HSET` of the
//! record as it comes — an avatar URL over 64 bytes makes that hash a
//! hashtable — plus number key and set entry). Ours must stay below it. See
//! the README's Redis layout section for the figures.

use std::sync::Arc;
use std::time::Duration;

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::CachedMember;
use zsxq_cache::store::Store;
use zsxq_cache::store::redis::RedisStore;
use zsxq_test_support::RedisServer;

/// Current layout's figure plus a few percent for allocator noise.
const MAX_BYTES_PER_MEMBER: f64 = 1_200.0;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    zsxq_test_support::used_memory(conn)
        .await
        .expect("used_memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_member_costs_redis_a_bounded_number_of_bytes_and_hashes_stay_listpacks() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock)).unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n = 20_000;
    let now = chrono::Utc::now().timestamp_millis();
    let members: Vec<CachedMember> = zsxq_sim::generate(42, n, 1)
        .members
        .iter()
        .map(|m| CachedMember {
            member: m.to_member().unwrap(),
            cached_at: now,
            updated_at: now,
        })
        .collect();
    // The first batch creates the shared keys; measure from after it.
    store
        .put_members(&members[..500], Duration::from_secs(86_400))
        .await
        .unwrap();
    let before = used_memory(&mut conn).await;
    for chunk in members[500..].chunks(500) {
        store
            .put_members(chunk, Duration::from_secs(86_400))
            .await
            .unwrap();
    }
    let after = used_memory(&mut conn).await;
    let per_member = (after - before) as f64 / (n - 500) as f64;
    println!("Redis used_memory per cached member: {per_member:.0} B");

    for m in members.iter().step_by(97) {
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(format!("zsxq:user:{}", m.member.user_id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(encoding, "listpack", "member {}", m.member.user_id);
    }

    // What the sorted indexes cost: drop them and measure again. The rest
    // is the original design's keys (hash, number key, set entry) as we
    // write them.
    let _: () = redis::cmd("DEL")
        .arg("zsxq:{idx}:number")
        .arg("zsxq:{idx}:join_time")
        .arg("zsxq:{idx}:expiry")
        .query_async(&mut conn)
        .await
        .unwrap();
    let without_indexes = used_memory(&mut conn).await;
    let index_share = (after - without_indexes) as f64 / n as f64;

    // The straightforward implementation of the original layout on the same
    // members, in the same server: one HSET of the record as it comes (an avatar URL over
    // 64 bytes makes the hash a hashtable), the number key, the set entry.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let seed_first = used_memory(&mut conn).await;
    zsxq_test_support::seed_layout::write_straightforward(&mut conn, &members, 86_400)
        .await
        .unwrap();
    let seed_layout = (used_memory(&mut conn).await - seed_first) as f64 / n as f64;
    println!(
        "of which the sorted indexes: {index_share:.0} B; the original design's keys as we write them: {:.0} B; \
         the straightforward layout on the same members: {seed_layout:.0} B",
        per_member - index_share
    );

    assert!(
        per_member <= MAX_BYTES_PER_MEMBER,
        "{per_member:.0} B per member (bound {MAX_BYTES_PER_MEMBER})"
    );
    assert!(
        per_member < seed_layout,
        "indexes included, a member must cost less than the straightforward layout \
         ({per_member:.0} B vs {seed_layout:.0} B)"
    );
}
