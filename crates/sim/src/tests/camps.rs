//! Camps and their rankings: listed newest first, ranking pages of 21 in
//! the expected order, unknown camps and bad parameters.

use super::*;

#[tokio::test]
async fn camps_are_listed_newest_first_and_a_bad_scope_gets_1004() {
    let sim = start(SimConfig::for_tests()).await;
    let benchmark = sim.data.benchmark_camp().expect("an over camp");
    let answer = get(&sim, "/checkins?scope=over&count=20").await;
    let camps = answer["resp_data"]["checkins"]
        .as_array()
        .expect("checkins");
    assert!(camps.len() >= 2);
    assert_eq!(camps[0]["checkin_id"], benchmark.checkin_id);
    assert_eq!(camps[0]["joined_count"], benchmark.joined_count());
    assert_eq!(
        camps[0]["statistics"]["joined_count"],
        benchmark.joined_count()
    );
    assert_eq!(
        camps[0]["statistics"]["completed_count"],
        benchmark.completed_count()
    );
    assert_eq!(camps[0]["status"], "over");
    assert_eq!(camps[0]["type"], "accumulated");
    assert!(camps[0]["validity"]["long_period"].is_boolean());
    let times: Vec<i64> = camps
        .iter()
        .map(|c| {
            zsxq_domain::parse_zsxq_time_ms(c["create_time"].as_str().unwrap_or(""))
                .expect("a time")
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "newest first");

    let one = get(&sim, "/checkins?scope=closed&count=1").await;
    assert_eq!(
        one["resp_data"]["checkins"].as_array().map(Vec::len),
        Some(1)
    );
    assert_fails_with(&get(&sim, "/checkins?scope=finished&count=20").await, 1004);
    assert_fails_with(&get(&sim, "/checkins?count=20").await, 1004);
}

#[tokio::test]
async fn ranking_pages_of_21_cover_the_benchmark_camp_in_expected_order() {
    let sim = start(SimConfig::for_tests()).await;
    let camp = sim.data.benchmark_camp().expect("an over camp").checkin_id;
    let expected = sim.data.expected_ranking(camp).expect("known camp");
    let mut rows = Vec::new();
    let mut page_sizes = Vec::new();
    let mut index = 0;
    loop {
        let answer = get(
            &sim,
            &format!("/checkins/{camp}/ranking_list?type=accumulated&index={index}"),
        )
        .await;
        let resp = &answer["resp_data"];
        let page = resp["ranking_list"]
            .as_array()
            .expect("ranking_list")
            .clone();
        if index == 0 {
            assert_eq!(
                resp["user_specific"]["user"]["user_id"],
                sim.data.caller_user_id
            );
        } else {
            assert!(resp.get("user_specific").is_none());
        }
        page_sizes.push(page.len());
        for row in &page {
            let rankings = row["rankings"].as_u64().expect("rankings");
            assert_eq!(rankings, rows.len() as u64 + 1, "sequential positions");
            let user_id = row["user"]["user_id"].as_u64().expect("user_id");
            let days = row["checkined_days"].as_u64().expect("days");
            assert!(row["user"]["alias"].is_string() && row["user"]["name"].is_string());
            rows.push((user_id, u32::try_from(days).expect("small")));
            index = rankings;
        }
        if page.len() < RANKING_PAGE_SIZE {
            break;
        }
    }
    assert_eq!(page_sizes, [21, 21, 21, 21, 21, 21, 21, 20]);
    assert_eq!(rows, expected);
    assert!(rows.iter().all(|r| r.0 != sim.data.caller_user_id));
}

#[tokio::test]
async fn continuous_rankings_follow_their_own_expected_order() {
    let sim = start(SimConfig::for_tests()).await;
    let camp = sim.data.benchmark_camp().expect("an over camp").checkin_id;
    let expected = sim
        .data
        .expected_ranking_of(camp, RankingType::Continuous)
        .expect("known camp");
    let answer = get(
        &sim,
        &format!("/checkins/{camp}/ranking_list?type=continuous"),
    )
    .await;
    let rows: Vec<(u64, u64)> = answer["resp_data"]["ranking_list"]
        .as_array()
        .expect("ranking_list")
        .iter()
        .filter_map(|r| {
            Some((
                r["user"]["user_id"].as_u64()?,
                r["checkined_days"].as_u64()?,
            ))
        })
        .collect();
    let want: Vec<(u64, u64)> = expected
        .iter()
        .take(21)
        .map(|&(id, d)| (id, u64::from(d)))
        .collect();
    assert_eq!(rows, want);
}

#[tokio::test]
async fn rankings_of_unknown_camps_get_404_and_bad_parameters_get_1004() {
    let sim = start(SimConfig::for_tests()).await;
    let camp = sim.data.benchmark_camp().expect("an over camp").checkin_id;
    let missing = get(
        &sim,
        "/checkins/123456789012345/ranking_list?type=accumulated",
    )
    .await;
    assert_fails_with(&missing, 404);
    assert_eq!(missing["info"], "checkin not found");
    assert_fails_with(&get(&sim, "/checkins/abc/ranking_list").await, 1004);
    assert_fails_with(
        &get(&sim, &format!("/checkins/{camp}/ranking_list?type=weekly")).await,
        1004,
    );
    assert_fails_with(
        &get(&sim, &format!("/checkins/{camp}/ranking_list?index=x")).await,
        1004,
    );
    let past_end = get(&sim, &format!("/checkins/{camp}/ranking_list?index=500")).await;
    assert_eq!(past_end["resp_data"]["ranking_list"], json!([]));
}
