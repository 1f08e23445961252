//! The Zsxq client against the real simulator over HTTP: every call the
//! product makes, both token styles, the signature, and paging that fails
//! loudly rather than returning a short list.

use std::sync::Arc;
use std::time::Duration;

use zsxq_cache::config::{Secret, UpstreamAuth, UpstreamConfig};
use zsxq_cache::domain::{CheckinId, GroupId, UserId};
use zsxq_cache::sim::{SimConfig, SimHandle};
use zsxq_cache::upstream::{
    self, Budget, CampScope, Priority, Upstream, UpstreamError, ZsxqClient,
};

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
    let sim = zsxq_cache::sim::spawn(SimConfig::for_tests())
        .await
        .unwrap();
    let expected = &sim.data.members[5];
    let id = UserId::new(expected.user_id).unwrap();
    for auth in [cookie(), UpstreamAuth::Header(Secret::new("sim-token"))] {
        let c = client(&sim, auth, 0);
        let a = c.member_summary(id, Priority::Interactive).await.unwrap();
        let b = c.member(id, Priority::Interactive).await.unwrap();
        assert_eq!(a.number.get(), expected.number);
        assert_eq!(a, b);
        assert_eq!(a.name, expected.name);
        assert_eq!(a.unique_id, expected.unique_id.clone().unwrap_or_default());
    }
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_not_retried() {
    let sim = zsxq_cache::sim::spawn(SimConfig::for_tests())
        .await
        .unwrap();
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

#[tokio::test]
async fn the_member_list_is_read_whole_200_a_call() {
    let mut cfg = SimConfig::for_tests();
    cfg.members = 450;
    let sim = zsxq_cache::sim::spawn(cfg).await.unwrap();
    let c = client(&sim, cookie(), 0);
    let all = upstream::all_members(&c, Priority::Background)
        .await
        .unwrap();
    let got: Vec<u64> = all.iter().map(|m| m.user_id.get()).collect();
    let want: Vec<u64> = sim.data.members.iter().map(|m| m.user_id).collect();
    assert_eq!(got, want);
    assert_eq!(sim.stats().by_kind.member_list, 3);

    sim.set_member_list_allowed(false);
    let e = upstream::all_members(&c, Priority::Background)
        .await
        .unwrap_err();
    assert!(e.is_listing_refused(), "{e:?}");
}

#[tokio::test]
async fn a_full_ranking_matches_the_camp_and_a_failing_page_fails_it_whole() {
    let sim = zsxq_cache::sim::spawn(SimConfig::for_tests())
        .await
        .unwrap();
    let c = client(&sim, cookie(), 0);
    let camps = c
        .camps(CampScope::Over, 20, Priority::Interactive)
        .await
        .unwrap();
    let bench = sim.data.benchmark_camp().unwrap();
    assert_eq!(camps[0].checkin_id.get(), bench.checkin_id);
    assert_eq!(camps[0].checkin_days, bench.checkin_days);

    let cid = CheckinId::new(bench.checkin_id).unwrap();
    let rows = upstream::full_ranking(&c, cid, Priority::Interactive)
        .await
        .unwrap();
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
    let e = upstream::full_ranking(&c, cid, Priority::Interactive)
        .await
        .unwrap_err();
    assert!(e.is_throttle(), "{e:?}");
}

#[tokio::test]
async fn throttles_are_retried_and_counted() {
    let sim = zsxq_cache::sim::spawn(SimConfig::for_tests())
        .await
        .unwrap();
    sim.set_reject_ratio(0.5);
    let c = client(&sim, cookie(), 10);
    for m in sim.data.members.iter().take(8) {
        let got = c
            .member_summary(UserId::new(m.user_id).unwrap(), Priority::Interactive)
            .await
            .unwrap();
        assert_eq!(got.number.get(), m.number);
    }
    let snap = c.budget().snapshot();
    assert_eq!(snap.upstream_calls, sim.stats().calls);
    assert_eq!(snap.throttled, sim.stats().throttled);
    assert!(snap.retries >= snap.throttled);
}
