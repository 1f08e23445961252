//! The original design's Redis layout written the straightforward way: one
//! `HSET` of the record as it comes, `EXPIRE`, the number key and the set
//! entry. It is the baseline our layout is measured against (the sorted
//! indexes must not make the cache fatter than the straightforward layout),
//! in the same run and on the same members: `tests/store_memory.rs` and
//! `zsxq-cache bench hot` both use it.

use redis::aio::ConnectionLike;

use zsxq_cache::domain::CachedMember;

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
