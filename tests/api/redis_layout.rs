//! The original design's Redis layout, kept so its `redis-cli` recipes work:
//! key names, field strings, TTLs.

use serde_json::json;

use zsxq_test_support::{StoreKind, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_redis_cli_recipes_show_what_the_seed_says() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .members(30)
        .spawn()
        .await;
    app.sync(json!({})).await;
    let m = &app.sim.data.members[9];
    let mut conn = app.redis_conn().await;

    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("zsxq:user:{}", m.user_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hash["user_id"], m.user_id.to_string());
    assert_eq!(hash["number"], m.number.to_string());
    assert_eq!(hash["name"], m.name);
    assert_eq!(hash["join_time"], m.join_time);
    for field in [
        "unique_id",
        "avatar_url",
        "status",
        "expired_time",
        "introduction",
        "cached_at",
        "updated_at",
    ] {
        assert!(hash.contains_key(field), "{field} missing from {hash:?}");
    }
    // A number is found through the number index (docs/OPERATIONS.md): the
    // last directory entry not above it names the bucket, whose scores
    // count from the base after the `!`.
    let number = i64::try_from(m.number).unwrap();
    let bucket: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
        .arg("zsxq:{idx}:number:dir")
        .arg(number)
        .arg("-inf")
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let base: i64 = bucket[0].rsplit_once('!').unwrap().1.parse().unwrap();
    let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(format!("zsxq:{{idx}}:number:{}", bucket[0]))
        .arg(number - base)
        .arg(number - base)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids, vec![m.user_id.to_string()]);
    let listed: i64 = redis::cmd("ZCARD")
        .arg(format!("zsxq:{{idx}}:number:{}", bucket[0]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed as usize, app.sim.data.members.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_but_the_stats_hash_has_the_cache_ttl() {
    let app = TestApp::builder()
        .store(StoreKind::Redis)
        .members(25)
        .spawn()
        .await;
    app.sync(json!({})).await;
    app.user(app.sim.data.members[0].user_id).await;
    app.stats().await; // flushes the counters into zsxq:stats:cache
    let mut conn = app.redis_conn().await;
    let keys = app.redis_keys().await;
    assert!(keys.len() >= 25 + 6, "{keys:?}");
    assert!(keys.contains(&"zsxq:stats:cache".to_string()));
    for key in keys {
        let ttl = zsxq_test_support::ttl_of(&mut conn, &key).await.unwrap();
        if key == "zsxq:stats:cache" || key == zsxq_cache::store::keys::DEVICE_ID {
            assert_eq!(ttl, -1, "{key} has no TTL");
        } else if key == zsxq_cache::store::keys::FLEET_BUDGET {
            // Rate-limit state, not cache: it lives a minute or so past
            // its last use.
            assert!(ttl > 0 && ttl <= 120, "{key} has TTL {ttl}");
        } else {
            assert!(ttl > 86_000 && ttl <= 86_400, "{key} has TTL {ttl}");
        }
    }
}
