//! The original design's Redis layout written the straightforward way: one
//! `HSET` of the record as it comes, `EXPIRE`, the number key and the set
//! entry. It is the baseline our layout is measured against, in the same
//! run and on the same members, on records with short fields and on records
//! with real-looking long ones ([`compare_layouts`]): `tests/store_memory.rs`
//! and `zsxq-bench hot` both use it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;

use zsxq_cache::clock::SystemClock;
use zsxq_cache::domain::CachedMember;
use zsxq_cache::store::Store;
use zsxq_cache::store::redis::RedisStore;

/// TTL of every write in the comparison (a day, as the service's default).
const TTL_SECS: u64 = 86_400;

/// `m` with every value at most 64 bytes — the avatar URL a short one, text
/// cut at a character boundary — as records from a group whose avatars
/// are short look.
pub fn short_fields(m: &CachedMember) -> CachedMember {
    fn cut(text: &str) -> String {
        let mut end = text.len().min(64);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }
    let mut short = m.clone();
    let r = &mut short.member;
    r.avatar_url = "https://images.zsxq.com/a.jpg".to_owned();
    for text in [
        &mut r.name,
        &mut r.unique_id,
        &mut r.join_time,
        &mut r.status,
        &mut r.expired_time,
        &mut r.introduction,
    ] {
        *text = cut(text);
    }
    short
}

/// Redis `used_memory` per member of one set of members, every key
/// included, in our layout and in the straightforward one.
#[derive(Debug, Clone)]
pub struct LayoutFigures {
    pub ours: f64,
    /// Of `ours`, what the index keys (`zsxq:{idx}:*`) take.
    pub index_share: f64,
    pub straightforward: f64,
    /// Keys of our layout that Redis did not keep listpack-encoded: every
    /// index bucket and every 97th member hash are looked at. A hash or a
    /// bucket in hashtable or skiplist encoding costs several times more.
    pub not_listpack: Vec<String>,
}

impl LayoutFigures {
    pub fn ratio(&self) -> f64 {
        self.ours / self.straightforward
    }
}

/// Measures `members` in both layouts, one after the other, on the
/// otherwise unused Redis at `url` (flushed before each): written through
/// [`RedisStore`] 500 a batch, then with [`write_straightforward`]. Each
/// figure is the growth of `used_memory` from the flushed server, over the
/// number of members.
pub async fn compare_layouts(url: &str, members: &[CachedMember]) -> anyhow::Result<LayoutFigures> {
    // FLUSHALL of a few hundred thousand keys takes longer than the
    // client's default 500 ms.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let n = members.len().max(1) as f64;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let empty = crate::used_memory(&mut conn).await?;
    let store = RedisStore::connect(url, Arc::new(SystemClock))?;
    for chunk in members.chunks(500) {
        store
            .put_members(chunk, Duration::from_secs(TTL_SECS))
            .await?;
    }
    let filled = crate::used_memory(&mut conn).await?;
    let index_keys = crate::scan_keys(url, "zsxq:{idx}:*").await?;
    let mut not_listpack = Vec::new();
    let sampled = members
        .iter()
        .step_by(97)
        .map(|m| format!("zsxq:user:{}", m.member.user_id));
    let buckets = index_keys
        .iter()
        .filter(|k| !k.ends_with(":dir") && !k.ends_with(":count"))
        .cloned();
    for key in sampled.chain(buckets) {
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if encoding != "listpack" {
            not_listpack.push(format!("{key} ({encoding})"));
        }
    }
    for key in &index_keys {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    }
    let without_indexes = crate::used_memory(&mut conn).await?;

    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let empty_again = crate::used_memory(&mut conn).await?;
    write_straightforward(&mut conn, members, TTL_SECS).await?;
    let straightforward = crate::used_memory(&mut conn).await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    Ok(LayoutFigures {
        ours: (filled - empty) as f64 / n,
        index_share: (filled - without_indexes) as f64 / n,
        straightforward: (straightforward - empty_again) as f64 / n,
        not_listpack,
    })
}

/// Writes `members` as a straightforward implementation of that layout would,
/// 500 to a pipeline. With an avatar URL over 64 bytes (as real ones are) each
/// hash is a hashtable rather than a listpack: that is the point of measuring.
pub async fn write_straightforward<C: ConnectionLike>(
    conn: &mut C,
    members: &[CachedMember],
    ttl_secs: u64,
) -> redis::RedisResult<()> {
    for chunk in members.chunks(500) {
        let mut pipe = redis::pipe();
        for m in chunk {
            let r = &m.member;
            let key = format!("zsxq:user:{}", r.user_id);
            let number = r.number.map(|n| n.to_string()).unwrap_or_default();
            pipe.cmd("HSET")
                .arg(&key)
                .arg("user_id")
                .arg(r.user_id.to_string())
                .arg("number")
                .arg(&number)
                .arg("name")
                .arg(&r.name)
                .arg("unique_id")
                .arg(&r.unique_id)
                .arg("avatar_url")
                .arg(&r.avatar_url)
                .arg("join_time")
                .arg(&r.join_time)
                .arg("status")
                .arg(&r.status)
                .arg("expired_time")
                .arg(&r.expired_time)
                .arg("introduction")
                .arg(&r.introduction)
                .arg("cached_at")
                .arg(m.cached_at)
                .arg("updated_at")
                .arg(m.updated_at)
                .ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).ignore();
            if r.number.is_some() {
                pipe.cmd("SET")
                    .arg(format!("zsxq:number:{number}"))
                    .arg(r.user_id.to_string())
                    .arg("EX")
                    .arg(ttl_secs)
                    .ignore();
            }
            pipe.cmd("SADD")
                .arg("zsxq:users:all")
                .arg(r.user_id.to_string())
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
