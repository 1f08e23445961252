//! The Zsxq client against the real simulator over HTTP: every call the
//! product makes, both token styles, the signature, and paging that fails
//! loudly rather than returning a short list.

use std::sync::Arc;
use std::time::Duration;

use zsxq_cache::config::{Secret, UpstreamAuth, UpstreamConfig};
use zsxq_cache::domain::Member;
use zsxq_cache::domain::{CheckinId, GroupId, RankingType, UserId};
use zsxq_cache::upstream::{
    self, Budget, CampScope, MemberWalk, Priority, Upstream, UpstreamError, ZsxqClient,
};
use zsxq_sim::{SimConfig, SimHandle};

fn client(sim: &SimHandle, auth: UpstreamAuth, max_retries: usize) -> ZsxqClient {
    let cfg = UpstreamConfig {
        base_url: sim.base_url.clone(),
        group_id: GroupId::new(sim.data.group_id).unwrap(),
        auth,
        rate_per_min: 6000,
        concurrency: 5,
        request_delay: Duration::ZERO,
        timeout: Duration::from_secs(3),
        max_retries,
        retry_base: Duration::from_millis(5),
        x_version: zsxq_cache::config::DEFAULT_X_VERSION.to_string(),
        refusal: Default::default(),
    };
    let budget = Arc::new(Budget::new(
        cfg.rate_per_min,
        cfg.request_delay,
        cfg.concurrency,
    ));
    ZsxqClient::new(cfg, budget).unwrap()
}

fn cookie() -> UpstreamAuth {
    UpstreamAuth::Cookie(Secret::new("sim-token"))
}

#[tokio::test]
async fn member_calls_return_the_simulated_members_with_either_token_style() {
    let sim = zsxq_sim::spawn(SimConfig::for_tests()).await.unwrap();
    let expected = &sim.data.members[5];
    let id = UserId::new(expected.user_id).unwrap();
    for auth in [cookie(), UpstreamAuth::Header(Secret::new("sim-token"))] {
        let c = client(&sim, auth, 0);
        let a = c.member_summary(id, Priority::Interactive).await.unwrap();
        let b = c.member(id, Priority::Interactive).await.unwrap();
        assert_eq!(a.number.map(|n| n.get()), Some(expected.number));
        assert_eq!(a, b);
        assert_eq!(a.name, expected.name);
        assert_eq!(a.unique_id, expected.unique_id.clone().unwrap_or_default());
    }
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_not_retried() {
    let sim = zsxq_sim::spawn(SimConfig::for_tests()).await.unwrap();
    let c = client(&sim, UpstreamAuth::Cookie(Secret::new("wrong")), 3);
    let e = c
        .member_summary(
            UserId::new(sim.data.members[0].user_id).unwrap(),
            Priority::Interactive,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unauthorized { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("wrong"),
        "the token never appears in errors"
    );
    assert_eq!(sim.stats().calls, 1);
}

/// Every member a walk hands out, in order, with the walk's counts.
async fn walk_all(c: &ZsxqClient) -> Result<(Vec<Member>, usize, bool), UpstreamError> {
    let mut walk = MemberWalk::new(c, Priority::Background);
    let mut all = Vec::new();
    while let Some(page) = walk.next_page().await? {
        all.extend(page);
    }
    Ok((all, walk.pages(), walk.complete()))
}

#[tokio::test]
async fn the_member_list_is_read_whole_by_join_time_200_a_call() {
    let mut cfg = SimConfig::for_tests();
    cfg.members = 450;
    let sim = zsxq_sim::spawn(cfg).await.unwrap();
    // The data has members sharing a millisecond, some of them on a page
    // boundary's time: the walk must neither repeat nor lose them.
    let ties = sim
        .data
        .members
        .windows(2)
        .filter(|w| w[0].join_time_ms == w[1].join_time_ms)
        .count();
    assert!(
        ties >= 20,
        "the simulated group has shared milliseconds ({ties})"
    );
    let c = client(&sim, cookie(), 0);
    let (all, pages, complete) = walk_all(&c).await.unwrap();
    let got: Vec<u64> = all.iter().map(|m| m.user_id.get()).collect();
    // Newest first: the group's join order reversed.
    let want: Vec<u64> = sim.data.members.iter().rev().map(|m| m.user_id).collect();
    assert_eq!(got, want, "every member once, newest first");
    assert!(complete);
    assert_eq!(pages, 3);
    assert_eq!(sim.stats().by_kind.member_list, 3);

    sim.set_member_list_allowed(false);
    let e = walk_all(&c).await.unwrap_err();
    assert!(e.is_listing_refused(), "{e:?}");
}

#[tokio::test]
async fn more_members_in_one_millisecond_than_a_page_holds_end_the_walk_marked_incomplete() {
    let mut cfg = SimConfig::for_tests();
    cfg.members = 500;
    cfg.tied_joins = 260;
    let sim = zsxq_sim::spawn(cfg).await.unwrap();
    let c = client(&sim, cookie(), 0);
    let (all, pages, complete) = walk_all(&c).await.unwrap();
    let mut ids: Vec<u64> = all.iter().map(|m| m.user_id.get()).collect();
    let read = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), read, "no member handed out twice");
    assert!(
        !complete,
        "a walk that had to step over a millisecond says so"
    );
    // Everyone outside the tied millisecond is read; of the 260 inside it,
    // at least the page the upstream showed.
    let tied: std::collections::HashSet<u64> = sim.data.members[1..=260]
        .iter()
        .map(|m| m.user_id)
        .collect();
    let outside = sim.data.members.len() - tied.len();
    let read_outside = all
        .iter()
        .filter(|m| !tied.contains(&m.user_id.get()))
        .count();
    assert_eq!(read_outside, outside);
    assert!(
        read - read_outside >= 200,
        "{read} read, {read_outside} outside the tie"
    );
    assert!(pages <= 6, "{pages} pages for 500 members");
}

#[tokio::test]
async fn a_full_ranking_matches_the_camp_and_a_failing_page_fails_it_whole() {
    let sim = zsxq_sim::spawn(SimConfig::for_tests()).await.unwrap();
    let c = client(&sim, cookie(), 0);
    let camps = c
        .camps(CampScope::Over, 20, Priority::Interactive)
        .await
        .unwrap();
    let bench = sim.data.benchmark_camp().unwrap();
    assert_eq!(camps[0].checkin_id.get(), bench.checkin_id);
    assert_eq!(camps[0].checkin_days, bench.checkin_days);

    let cid = CheckinId::new(bench.checkin_id).unwrap();
    let accumulated = || {
        upstream::full_ranking(
            &c,
            cid,
            RankingType::Accumulated,
            None,
            Priority::Interactive,
        )
    };
    let rows = accumulated().await.unwrap();
    let got: Vec<(u64, u32)> = rows
        .iter()
        .map(|r| (r.user.user_id.get(), r.checkined_days))
        .collect();
    assert_eq!(got, sim.data.expected_ranking(bench.checkin_id).unwrap());
    assert_eq!(got.len(), 167);
    assert!(
        !got.iter().any(|r| r.0 == sim.data.caller_user_id),
        "user_specific is not a participant"
    );

    // Every page refused: with no retries the ranking is an error, never a
    // short list.
    sim.set_reject_ratio(1.0);
    let e = accumulated().await.unwrap_err();
    assert!(e.is_throttle(), "{e:?}");
}

#[tokio::test]
async fn throttles_are_retried_and_counted() {
    let sim = zsxq_sim::spawn(SimConfig::for_tests()).await.unwrap();
    sim.set_reject_ratio(0.5);
    let c = client(&sim, cookie(), 10);
    for m in sim.data.members.iter().take(8) {
        let got = c
            .member_summary(UserId::new(m.user_id).unwrap(), Priority::Interactive)
            .await
            .unwrap();
        assert_eq!(got.number.map(|n| n.get()), Some(m.number));
    }
    let snap = c.budget().snapshot();
    assert_eq!(snap.upstream_calls, sim.stats().calls);
    assert_eq!(snap.throttled, sim.stats().throttled);
    assert!(snap.retries >= snap.throttled);
}
