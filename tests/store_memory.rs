//! Redis memory per cached member, measured on a private `redis-server`
//! with its default configuration, every key and index included, against
//! the original design's layout written the straightforward way on the
//! same members in the same run (`seed_layout::compare_layouts`): on
//! records whose fields are all short (every value ≤ 64 bytes) and on the
//! simulator's records with real-looking avatar URLs of ~85 bytes. With a
//! fresh server and one writer the figures are deterministic to a few
//! bytes, so the absolute bounds are tight on purpose: they guard the
//! layout against regressions (a hash or an index bucket falling back from
//! listpack encoding costs hundreds of bytes), and every index bucket and
//! a sample of member hashes must be listpack-encoded.

use zsxq_cache::domain::CachedMember;
use zsxq_test_support::RedisServer;
use zsxq_test_support::seed_layout::{LayoutFigures, compare_layouts, short_fields};

/// Our layout over the straightforward one, on either kind of record.
const MAX_RATIO: f64 = 0.8;

/// Measured figures (short ≈ 531 B, long ≈ 590 B) plus ~2 % for allocator
/// noise.
const MAX_SHORT_BYTES: f64 = 542.0;
const MAX_LONG_BYTES: f64 = 602.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_member_costs_redis_at_most_four_fifths_of_the_straightforward_layout() {
    let server = RedisServer::start().expect("redis-server");
    let n = 20_000;
    let now = chrono::Utc::now().timestamp_millis();
    let long: Vec<CachedMember> = zsxq_sim::generate(42, n, 1)
        .members
        .iter()
        .map(|m| CachedMember {
            member: m.to_member().unwrap(),
            cached_at: now,
            updated_at: now,
        })
        .collect();
    assert!(
        long.iter()
            .filter(|m| m.member.avatar_url.len() > 64)
            .count()
            > n / 2,
        "the long records must have long avatar URLs"
    );
    let short: Vec<CachedMember> = long.iter().map(short_fields).collect();

    let figures = |kind: &str, f: LayoutFigures| {
        println!(
            "{kind} fields: ours {:.0} B/member (indexes {:.0} B), straightforward {:.0} B, ratio {:.2}",
            f.ours,
            f.index_share,
            f.straightforward,
            f.ratio()
        );
        f
    };
    let short_figures = figures(
        "short",
        compare_layouts(&server.url(), &short).await.unwrap(),
    );
    let long_figures = figures("long", compare_layouts(&server.url(), &long).await.unwrap());

    for (kind, f, bound) in [
        ("short", short_figures, MAX_SHORT_BYTES),
        ("long", long_figures, MAX_LONG_BYTES),
    ] {
        assert!(
            f.ratio() <= MAX_RATIO,
            "{kind}: {:.0} B vs {:.0} B straightforward (ratio {:.2} > {MAX_RATIO})",
            f.ours,
            f.straightforward,
            f.ratio()
        );
        assert!(
            f.ours <= bound,
            "{kind}: {:.0} B per member (bound {bound})",
            f.ours
        );
        assert!(
            f.not_listpack.is_empty(),
            "{kind}: member hashes and index buckets must stay listpacks: {:?}",
            f.not_listpack
        );
    }
}
