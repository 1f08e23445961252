//! Tests of the simulator: the generated data directly, the HTTP behaviour
//! through real requests against [`spawn`], as the service's client will see it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "sim-token";
const GROUP: u64 = 51122858222824;

// ---------------------------------------------------------------- data

#[test]
fn the_same_seed_generates_the_same_group() {
    let a = generate(7, 300, GROUP);
    let b = generate(7, 300, GROUP);
    assert_eq!(a.members, b.members);
    assert_eq!(a.camps, b.camps);
    assert_eq!(a.caller_user_id, b.caller_user_id);
}

#[test]
fn different_seeds_generate_different_members() {
    let a = generate(1, 50, GROUP);
    let b = generate(2, 50, GROUP);
    assert_ne!(a.members, b.members);
}

#[test]
fn user_ids_are_large_unique_and_not_ordered_like_numbers() {
    let data = generate(42, 500, GROUP);
    let ids: Vec<u64> = data.members.iter().map(|m| m.user_id).collect();
    assert!(ids.iter().all(|&id| id > u64::from(u32::MAX)));
    assert!(
        ids.iter()
            .all(|id| (12..=15).contains(&id.to_string().len()))
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "ids must not follow numbers"
    );
}

#[test]
fn numbers_start_at_one_and_increase_with_some_gaps() {
    let data = generate(42, 500, GROUP);
    let numbers: Vec<u64> = data.members.iter().map(|m| m.number).collect();
    assert_eq!(numbers[0], 1);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    assert!(
        numbers.windows(2).any(|w| w[1] - w[0] > 1),
        "someone must have left"
    );
}

#[test]
fn about_a_third_of_members_have_no_unique_id() {
    let data = generate(42, 500, GROUP);
    let missing = data
        .members
        .iter()
        .filter(|m| m.unique_id.is_none())
        .count();
    assert!(
        (100..=230).contains(&missing),
        "{missing} of 500 without unique_id"
    );
}

#[test]
fn names_include_chinese_emoji_markup_quotes_and_plain_ascii() {
    let data = generate(42, 500, GROUP);
    let names: Vec<&str> = data.members.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"🐱猫猫"));
    assert!(names.iter().any(|n| n.contains("<b>")));
    assert!(names.iter().any(|n| n.contains('"')));
    assert!(names.iter().any(|n| n.contains('\'')));
    assert!(names.iter().any(|n| n.is_ascii()));
    assert!(
        names
            .iter()
            .any(|n| n.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)))
    );
    assert!(data.members.iter().any(|m| m.alias.is_empty()));
    assert!(data.members.iter().any(|m| !m.alias.is_empty()));
    assert!(data.members.iter().any(|m| m.introduction.is_empty()));
}

#[test]
fn join_times_use_the_upstream_format_and_never_decrease_with_number() {
    let data = generate(42, 500, GROUP);
    let mut previous = i64::MIN;
    let mut shared = 0;
    for m in &data.members {
        assert!(m.join_time.ends_with("+0800"), "{}", m.join_time);
        assert_eq!(m.join_time.len(), "2024-09-04T22:39:05.287+0800".len());
        let joined = zsxq_domain::parse_zsxq_time_ms(&m.join_time).expect("parses");
        assert_eq!(joined, m.join_time_ms);
        assert!(joined >= previous);
        shared += usize::from(joined == previous);
        previous = joined;
        let expires = zsxq_domain::parse_zsxq_time_ms(&m.expired_time).expect("parses");
        assert_eq!(expires - joined, 365 * 24 * 3600 * 1000);
        assert_eq!(m.status, "joined");
    }
    assert_eq!(
        shared,
        500 / super::data::SHARED_JOIN_EVERY,
        "some members share a millisecond"
    );
}

#[test]
fn the_first_over_camp_has_167_participants_with_ties_and_both_outcomes() {
    let data = generate(42, 500, GROUP);
    let camp = data.benchmark_camp().expect("an over camp");
    assert_eq!(camp.status, CampScope::Over);
    assert_eq!(
        data.camps_in(CampScope::Over)[0].checkin_id,
        camp.checkin_id
    );
    assert_eq!(camp.participants.len(), BENCHMARK_PARTICIPANTS);
    assert_eq!(camp.checkin_days, BENCHMARK_CHECKIN_DAYS);
    let ids: HashSet<u64> = camp.participants.iter().map(|p| p.0).collect();
    assert_eq!(
        ids.len(),
        BENCHMARK_PARTICIPANTS,
        "participants are distinct"
    );
    assert!(ids.iter().all(|&id| data.member_by_id(id).is_some()));
    assert!(!ids.contains(&data.caller_user_id));
    let days: Vec<u32> = camp.participants.iter().map(|p| p.1).collect();
    assert!(days.iter().any(|&d| d >= 7) && days.iter().any(|&d| d < 7));
    assert!(
        days.iter().all(|&d| d >= 1) && days.iter().any(|&d| d > 7),
        "the ranking's participants checked in at least once"
    );
    assert_eq!(camp.never_checked_in, BENCHMARK_PARTICIPANTS / 10);
    assert_eq!(
        camp.joined_count(),
        BENCHMARK_PARTICIPANTS + BENCHMARK_PARTICIPANTS / 10
    );
    let distinct: HashSet<u32> = days.iter().copied().collect();
    assert!(distinct.len() <= 11, "ties are common");
}

#[test]
fn every_scope_has_at_least_two_camps_with_large_distinct_ids() {
    let data = generate(42, 500, GROUP);
    for scope in CampScope::ALL {
        assert!(data.camps_in(scope).len() >= 2, "{scope:?}");
    }
    let ids: HashSet<u64> = data.camps.iter().map(|c| c.checkin_id).collect();
    assert_eq!(ids.len(), data.camps.len());
    assert!(ids.iter().all(|&id| id > u64::from(u32::MAX)));
}

#[test]
fn expected_ranking_sorts_by_days_and_keeps_join_order_for_ties() {
    let data = generate(42, 500, GROUP);
    let camp = data.benchmark_camp().expect("an over camp");
    let ranking = data.expected_ranking(camp.checkin_id).expect("known camp");
    assert_eq!(ranking.len(), camp.participants.len());
    assert!(ranking.windows(2).all(|w| w[0].1 >= w[1].1));
    let join_position = |id: u64| camp.participants.iter().position(|p| p.0 == id);
    for w in ranking.windows(2).filter(|w| w[0].1 == w[1].1) {
        assert!(join_position(w[0].0) < join_position(w[1].0));
    }
    assert_eq!(data.expected_ranking(1), None);
}

#[test]
fn small_groups_still_generate_consistent_data() {
    let empty = generate(3, 0, GROUP);
    assert!(empty.members.is_empty());
    assert!(empty.camps.iter().all(|c| c.participants.is_empty()));
    let tiny = generate(3, 5, GROUP);
    let camp = tiny.benchmark_camp().expect("an over camp");
    assert_eq!(camp.participants.len(), 4, "everyone but the caller");
    assert!(camp.participants.iter().all(|p| p.0 != tiny.caller_user_id));
}

#[test]
fn members_can_be_found_by_id_and_by_number() {
    let data = generate(42, 200, GROUP);
    for m in &data.members {
        assert_eq!(data.member_by_id(m.user_id), Some(m));
        assert_eq!(data.member_by_number(m.number), Some(m));
    }
    assert_eq!(data.member_by_id(1), None);
    assert_eq!(data.member_by_number(0), None);
}

// ---------------------------------------------------------------- config

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimConfig,
}

#[test]
fn command_line_defaults_match_the_default_config() {
    let cli = Cli::try_parse_from(["sim"]).expect("no flags needed");
    assert_eq!(cli.sim, SimConfig::default());
}

#[test]
fn every_flag_parses_under_its_documented_name() {
    let cli = Cli::try_parse_from([
        "sim",
        "--port=4000",
        "--members=10",
        "--seed=9",
        "--latency-ms=5",
        "--rate-per-min=50",
        "--reject-ratio=0.25",
        "--token=t",
        "--no-member-list",
        "--group-id=77",
        "--fault=http-500",
        "--slow-ms=12",
        "--unnumbered-ratio=0.5",
        "--tied-joins=250",
    ])
    .expect("valid flags");
    let expected = SimConfig {
        port: 4000,
        members: 10,
        seed: 9,
        latency_ms: 5,
        rate_per_min: 50,
        reject_ratio: 0.25,
        token: "t".into(),
        no_member_list: true,
        group_id: 77,
        fault: SimFault::Http500,
        slow_ms: 12,
        lenient_headers: false,
        ban_after: 0,
        unnumbered_ratio: 0.5,
        tied_joins: 250,
    };
    assert_eq!(cli.sim, expected);
}

#[test]
fn a_reject_ratio_outside_zero_to_one_is_refused() {
    for bad in ["1.5", "-0.1", "NaN", "half"] {
        assert!(
            Cli::try_parse_from(["sim", "--reject-ratio", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn debug_output_never_shows_the_token() {
    let cfg = SimConfig {
        token: "secret-value".into(),
        ..SimConfig::for_tests()
    };
    assert!(!format!("{cfg:?}").contains("secret-value"));
}

// ---------------------------------------------------------------- HTTP helpers

/// A simulator for the tests below, which send hand-made requests: headers
/// are lenient (their checks are tested with [`spawn`] directly).
async fn start(cfg: SimConfig) -> SimHandle {
    spawn(SimConfig {
        lenient_headers: true,
        ..cfg
    })
    .await
    .expect("simulator starts")
}

fn group_path(sim: &SimHandle, rest: &str) -> String {
    format!("{}/v2/groups/{}{rest}", sim.base_url, sim.data.group_id)
}

/// Sends a request and checks the upstream's rule that every answer is HTTP 200.
async fn send(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("simulator answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

/// A GET with the token in the `Authorization` header.
async fn get(sim: &SimHandle, rest: &str) -> Value {
    send(
        reqwest::Client::new()
            .get(group_path(sim, rest))
            .header("Authorization", TOKEN),
    )
    .await
}

fn code(answer: &Value) -> Option<i64> {
    answer["code"].as_i64()
}

fn assert_fails_with(answer: &Value, expected: i64) {
    assert_eq!(answer["succeeded"], false, "{answer}");
    assert_eq!(code(answer), Some(expected), "{answer}");
    assert_eq!(answer["resp_data"], json!({}));
}

async fn sim_stats(sim: &SimHandle) -> Value {
    send(reqwest::Client::new().get(format!("{}/__sim/stats", sim.base_url))).await
}

// ---------------------------------------------------------------- members

#[tokio::test]
async fn member_summary_answers_flat_fields_and_omits_a_missing_unique_id() {
    let sim = start(SimConfig::for_tests()).await;
    let with = sim
        .data
        .members
        .iter()
        .find(|m| m.unique_id.is_some())
        .expect("one has it");
    let without = sim
        .data
        .members
        .iter()
        .find(|m| m.unique_id.is_none())
        .expect("one lacks it");

    let answer = get(&sim, &format!("/members/{}/summary", with.user_id)).await;
    assert_eq!(answer["succeeded"], true);
    let member = &answer["resp_data"]["member"];
    assert_eq!(member["user_id"], with.user_id);
    assert_eq!(member["number"], with.number);
    assert_eq!(member["name"], with.name.as_str());
    assert_eq!(
        member["unique_id"],
        with.unique_id.as_deref().unwrap_or_default()
    );
    assert_eq!(member["join_time"], with.join_time.as_str());
    for field in ["avatar_url", "status", "expired_time", "introduction"] {
        assert!(member[field].is_string(), "{field}");
    }
    assert!(answer["resp_data"]["joined_days"].is_u64());
    assert!(answer["resp_data"]["topics_count"].is_u64());

    let answer = get(&sim, &format!("/members/{}/summary", without.user_id)).await;
    let member = answer["resp_data"]["member"]
        .as_object()
        .expect("an object");
    assert!(!member.contains_key("unique_id"));
}

#[tokio::test]
async fn member_endpoint_answers_the_member_with_its_group_id() {
    let sim = start(SimConfig::for_tests()).await;
    let m = &sim.data.members[2];
    let answer = get(&sim, &format!("/members/{}", m.user_id)).await;
    assert_eq!(answer["resp_data"]["member"]["number"], m.number);
    assert_eq!(answer["resp_data"]["member"]["name"], "<b>加粗</b>小张");
    assert_eq!(answer["resp_data"]["member"]["group_id"], GROUP);
}

#[tokio::test]
async fn unknown_users_get_13002_and_malformed_ids_get_1004() {
    let sim = start(SimConfig::for_tests()).await;
    assert_fails_with(&get(&sim, "/members/123456789012/summary").await, 13002);
    assert_fails_with(&get(&sim, "/members/123456789012").await, 13002);
    assert_fails_with(&get(&sim, "/members/abc/summary").await, 1004);
    assert_fails_with(&get(&sim, "/members/99999999999999999999999").await, 1004);
}

#[tokio::test]
async fn an_unknown_group_gets_11102() {
    let sim = start(SimConfig::for_tests()).await;
    let uid = sim.data.members[0].user_id;
    let url = format!("{}/v2/groups/42/members/{uid}/summary", sim.base_url);
    let answer = send(
        reqwest::Client::new()
            .get(url)
            .header("Authorization", TOKEN),
    )
    .await;
    assert_fails_with(&answer, 11102);
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_and_either_token_form_passes() {
    let sim = start(SimConfig::for_tests()).await;
    let url = group_path(
        &sim,
        &format!("/members/{}/summary", sim.data.members[0].user_id),
    );
    let http = reqwest::Client::new();

    assert_fails_with(&send(http.get(&url)).await, 401);
    assert_fails_with(
        &send(http.get(&url).header("Authorization", "nope")).await,
        401,
    );
    let wrong_cookie = http.get(&url).header("Cookie", "zsxq_access_token=nope");
    assert_fails_with(&send(wrong_cookie).await, 401);

    let header = send(http.get(&url).header("Authorization", TOKEN)).await;
    assert_eq!(header["succeeded"], true);
    let cookie = http.get(&url).header(
        "Cookie",
        format!("abtest_env=product; zsxq_access_token={TOKEN}"),
    );
    assert_eq!(send(cookie).await["succeeded"], true);
}

#[tokio::test]
async fn a_correct_signature_passes_and_a_wrong_one_gets_1059() {
    let sim = start(SimConfig::for_tests()).await;
    let path = format!(
        "/v2/groups/{}/members?count=5&sort=number",
        sim.data.group_id
    );
    let url = format!("{}{path}", sim.base_url);
    let (timestamp, request_id) = ("1735689600", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0");
    let signed = format!("http://{}{path} {timestamp} {request_id}", sim.addr);
    let signature = sha1_smol::Sha1::from(signed).digest().to_string();
    let signed_request = |sig: String| {
        reqwest::Client::new()
            .get(&url)
            .header("Authorization", TOKEN)
            .header("X-Timestamp", timestamp)
            .header("X-Request-Id", request_id)
            .header("X-Signature", sig)
    };

    let good = send(signed_request(signature.clone())).await;
    assert_eq!(good["succeeded"], true, "{good}");
    let mut tampered = signature.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).expect("hex stays ASCII");
    assert_fails_with(&send(signed_request(tampered)).await, 1059);
    assert_fails_with(&send(signed_request("deadbeef".into())).await, 1059);
}

// ---------------------------------------------------------------- member list

#[tokio::test]
async fn member_list_pages_by_join_time_with_an_inclusive_end_time() {
    let sim = start(SimConfig::for_tests()).await;
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut end_time = String::new();
    loop {
        let answer = get(&sim, &format!("/members?count=200{end_time}")).await;
        let page = answer["resp_data"]["members"]
            .as_array()
            .expect("members")
            .clone();
        page_sizes.push(page.len());
        for m in &page {
            let id = m["user_id"].as_u64().expect("an id");
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        if page.len() < 200 {
            break;
        }
        let last = page.last().expect("a full page")["join_time"]
            .as_str()
            .expect("a time")
            .replace('+', "%2B");
        end_time = format!("&end_time={last}");
    }
    assert_eq!(page_sizes.len(), 3, "{page_sizes:?}");
    let newest_first: Vec<u64> = sim.data.members.iter().rev().map(|m| m.user_id).collect();
    assert_eq!(seen, newest_first);
    // The bound is inclusive: the row at end_time comes again.
    let two = get(&sim, "/members?count=2").await;
    let bound = two["resp_data"]["members"][1]["join_time"]
        .as_str()
        .expect("a time")
        .replace('+', "%2B");
    let next = get(&sim, &format!("/members?count=2&end_time={bound}")).await;
    assert_eq!(
        next["resp_data"]["members"][0]["user_id"],
        two["resp_data"]["members"][1]["user_id"]
    );
    // Nobody has left the simulated group.
    let exited = get(&sim, "/members?count=20&filter=exited").await;
    assert_eq!(exited["resp_data"]["members"], json!([]));
    // Ascending from begin_time works the same way.
    let first = &sim.data.members[0];
    let bound = first.join_time.replace('+', "%2B");
    let asc = get(
        &sim,
        &format!("/members?count=2&order=asc&begin_time={bound}"),
    )
    .await;
    assert_eq!(asc["resp_data"]["members"][0]["user_id"], first.user_id);
}

#[tokio::test]
async fn sort_by_number_answers_an_empty_list_outside_the_expired_scope() {
    let sim = start(SimConfig::for_tests()).await;
    for query in [
        "count=200&sort=number",
        "count=200&sort=number&scope=all",
        "count=200&sort=number&scope=regular",
        "count=200&sort=expired_time",
    ] {
        let answer = get(&sim, &format!("/members?{query}")).await;
        assert_eq!(answer["succeeded"], true, "{query}");
        assert_eq!(answer["resp_data"]["members"], json!([]), "{query}");
    }
    let regular = get(&sim, "/members?count=5&sort=expired_time&scope=regular").await;
    assert_eq!(
        regular["resp_data"]["members"].as_array().map(Vec::len),
        Some(5)
    );
}

#[tokio::test]
async fn members_without_a_number_have_no_number_field() {
    let sim = start(SimConfig {
        unnumbered_ratio: 1.0,
        ..SimConfig::for_tests()
    })
    .await;
    let answer = get(&sim, "/members?count=200").await;
    let page = answer["resp_data"]["members"].as_array().expect("members");
    assert_eq!(page.len(), 200);
    assert!(page.iter().all(|m| m.get("number").is_none()));
    let some = &sim.data.members[3];
    let summary = get(&sim, &format!("/members/{}/summary", some.user_id)).await;
    assert!(summary["resp_data"]["member"].get("number").is_none());
    assert!(sim.data.member_by_number(some.number).is_none());
}

#[tokio::test]
async fn member_list_is_refused_with_11507_when_not_allowed() {
    let sim = start(SimConfig {
        no_member_list: true,
        ..SimConfig::for_tests()
    })
    .await;
    assert_fails_with(&get(&sim, "/members?count=20").await, 11507);

    sim.set_member_list_allowed(true);
    assert_eq!(get(&sim, "/members?count=20").await["succeeded"], true);

    sim.set_member_list_allowed(false);
    let answer = get(&sim, "/members?count=20").await;
    assert_fails_with(&answer, 11507);
    assert!(answer.get("info").is_none() && answer["error"].is_string());
}

#[tokio::test]
async fn member_list_parameters_out_of_range_get_1004() {
    let sim = start(SimConfig::for_tests()).await;
    for query in [
        "count=0",
        "count=201",
        "count=abc",
        "count=-1",
        "count=20&page_tag=x",
        "count=20&sort=name",
        "count=20&scope=vip",
        "count=20&order=up",
        "count=20&filter=gone",
        "count=20&end_time=2024-13-45",
    ] {
        assert_fails_with(&get(&sim, &format!("/members?{query}")).await, 1004);
    }
    let page = get(
        &sim,
        "/members?count=1&end_time=2000-01-01T00:00:00.000%2B0800",
    )
    .await;
    assert_eq!(page["resp_data"]["members"], json!([]));
}

// ---------------------------------------------------------------- camps

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

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn a_reject_ratio_of_one_answers_every_call_with_1059_and_counts_it_throttled() {
    let sim = start(SimConfig {
        reject_ratio: 1.0,
        ..SimConfig::for_tests()
    })
    .await;
    let uid = sim.data.members[0].user_id;
    for _ in 0..10 {
        assert_fails_with(&get(&sim, &format!("/members/{uid}/summary")).await, 1059);
    }
    let stats = sim_stats(&sim).await;
    assert_eq!(stats["calls"], 10);
    assert_eq!(stats["throttled"], 10);

    sim.set_reject_ratio(0.0);
    assert_eq!(
        get(&sim, &format!("/members/{uid}/summary")).await["succeeded"],
        true
    );
}

#[tokio::test]
async fn a_rate_limit_of_five_per_minute_answers_the_sixth_call_with_1059() {
    let sim = start(SimConfig {
        rate_per_min: 5,
        ..SimConfig::for_tests()
    })
    .await;
    for call in 1..=5 {
        assert_eq!(
            get(&sim, "/checkins?scope=over").await["succeeded"],
            true,
            "call {call}"
        );
    }
    assert_fails_with(&get(&sim, "/checkins?scope=over").await, 1059);
    assert_eq!(sim.stats().throttled, 1);
    assert_eq!(sim.stats().calls, 6);

    sim.set_rate_per_min(0);
    assert_eq!(get(&sim, "/checkins?scope=over").await["succeeded"], true);
}

#[tokio::test]
async fn latency_delays_every_call() {
    let sim = start(SimConfig::for_tests()).await;
    sim.set_latency_ms(150);
    let started = Instant::now();
    get(&sim, "/checkins?scope=ongoing").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn stats_count_every_call_by_kind_and_reset_zeroes_them() {
    let sim = start(SimConfig::for_tests()).await;
    let uid = sim.data.members[0].user_id;
    let camp = sim.data.benchmark_camp().expect("an over camp").checkin_id;
    get(&sim, &format!("/members/{uid}/summary")).await;
    get(&sim, &format!("/members/{uid}")).await;
    get(&sim, "/members?count=10").await;
    get(&sim, "/checkins?scope=over").await;
    get(&sim, &format!("/checkins/{camp}/ranking_list")).await;
    get(&sim, &format!("/checkins/{camp}/statistics")).await;
    // An unauthenticated call still counts.
    send(reqwest::Client::new().get(group_path(&sim, "/checkins?scope=over"))).await;

    let arrivals = sim.arrivals();
    assert_eq!(arrivals.len(), 7, "every call's arrival is logged");
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let stats = sim_stats(&sim).await;
    assert_eq!(
        stats,
        json!({
            "calls": 7,
            "by_kind": {"member_summary": 1, "member": 1, "member_list": 1, "checkins": 2, "ranking": 1, "statistics": 1, "other": 0},
            "throttled": 0,
            "banned": false,
        })
    );

    let http = reqwest::Client::new();
    send(http.post(format!("{}/__sim/reset", sim.base_url))).await;
    assert_eq!(sim.stats(), SimStats::default());
    assert_eq!(sim_stats(&sim).await["calls"], 0);
    assert!(sim.arrivals().is_empty());
}

#[test]
fn the_busiest_window_is_found_over_arrival_times() {
    let ms = |v: &[u64]| {
        v.iter()
            .map(|&m| Duration::from_millis(m))
            .collect::<Vec<_>>()
    };
    let second = Duration::from_secs(1);
    assert_eq!(max_within(&[], second), (0, Duration::ZERO));
    // 400..1200 fall within one second; 0 and 1000 do not share one (half-open).
    let times = ms(&[0, 400, 900, 1000, 1100, 1150, 1200, 3000]);
    assert_eq!(max_within(&times, second), (6, Duration::from_millis(400)));
    assert_eq!(
        max_within(&times, Duration::from_millis(1)),
        (1, Duration::ZERO)
    );
}

#[tokio::test]
async fn the_config_endpoint_changes_knobs_and_answers_the_effective_config() {
    let sim = start(SimConfig::for_tests()).await;
    let url = format!("{}/__sim/config", sim.base_url);
    let http = reqwest::Client::new();

    let answer = send(
        http.post(&url)
            .json(&json!({"member_list": false, "latency_ms": 3})),
    )
    .await;
    assert_eq!(
        answer,
        json!({"reject_ratio": 0.0, "latency_ms": 3, "rate_per_min": 0, "member_list": false,
               "fault": "none", "slow_ms": 5000, "ban_after": 0, "reject_next": 0, "hide_participant": false, "wrong_summary": false})
    );
    assert_fails_with(&get(&sim, "/members?count=1").await, 11507);

    let refused = http
        .post(&url)
        .json(&json!({"reject_ratio": 2.0, "latency_ms": 9}))
        .send()
        .await;
    assert_eq!(refused.expect("answers").status(), 400);
    let typo = http.post(&url).json(&json!({"latency": 9})).send().await;
    assert!(typo.expect("answers").status().is_client_error());
    assert_eq!(
        sim.knobs().latency_ms,
        3,
        "a refused change changes nothing"
    );
}

#[tokio::test]
async fn unknown_upstream_paths_are_counted_and_answered_404() {
    let sim = start(SimConfig::for_tests()).await;
    assert_fails_with(&get(&sim, "/topics?count=20").await, 404);
    assert_eq!(sim.stats().by_kind.other, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_all_answered_and_counted() {
    let sim = start(SimConfig::for_tests()).await;
    let http = reqwest::Client::new();
    let ids: Vec<u64> = sim.data.members.iter().map(|m| m.user_id).collect();
    let started = Instant::now();
    let calls = ids.iter().cycle().take(2000).map(|uid| {
        let request = http
            .get(group_path(&sim, &format!("/members/{uid}/summary")))
            .header("Authorization", TOKEN);
        async move { send(request).await["succeeded"] == true }
    });
    let answers = run_bounded(calls).await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|ok| *ok));
    assert_eq!(sim.stats().by_kind.member_summary, 2000);
    eprintln!("2000 summary calls in {elapsed:?}");
}

/// Runs futures concurrently on the current task, bounded to 64 in flight,
/// without pulling in the `futures` crate for one test.
async fn run_bounded<F>(calls: impl Iterator<Item = F>) -> Vec<bool>
where
    F: Future<Output = bool> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for call in calls {
        if set.len() >= 64
            && let Some(done) = set.join_next().await
        {
            results.push(done.unwrap_or(false));
        }
        set.spawn(call);
    }
    while let Some(done) = set.join_next().await {
        results.push(done.unwrap_or(false));
    }
    results
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = start(SimConfig::for_tests()).await;
    let url = format!("{}/__sim/stats", sim.base_url);
    sim.shutdown().await.expect("clean stop");
    assert!(reqwest::Client::new().get(url).send().await.is_err());
}

#[tokio::test]
async fn serve_runs_on_a_bound_listener_until_the_shutdown_signal() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let cfg = SimConfig {
        lenient_headers: true,
        ..SimConfig::for_tests()
    };
    let data = Arc::new(generate(cfg.seed, 10, cfg.group_id));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, cfg, data, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/v2/groups/{GROUP}/checkins?scope=over");
    let answer = send(
        reqwest::Client::new()
            .get(url)
            .header("Authorization", TOKEN),
    )
    .await;
    assert_eq!(answer["succeeded"], true);
    let _ = stop.send(());
    server.await.expect("joins").expect("serves cleanly");
}

#[tokio::test]
async fn departed_participants_rank_but_their_member_calls_answer_1037() {
    let sim = start(SimConfig::for_tests()).await;
    let data = &sim.data;
    assert_eq!(data.departed.len(), DEPARTED_COUNT);
    let camp = data
        .camps
        .iter()
        .filter(|c| c.status == CampScope::Over)
        .nth(DEPARTED_CAMP_POSITION)
        .unwrap();
    for d in &data.departed {
        assert!(camp.participants.iter().any(|p| p.0 == d.user_id));
        assert!(data.member_by_id(d.user_id).is_none());
    }
    let bench = data.benchmark_camp().unwrap();
    assert!(
        bench
            .participants
            .iter()
            .all(|p| data.member_by_id(p.0).is_some())
    );
    let url = format!(
        "{}/v2/groups/{}/members/{}/summary",
        sim.base_url, data.group_id, data.departed[0].user_id
    );
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .header("authorization", "sim-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["succeeded"], false);
    assert_eq!(body["code"], 1037);
}

// ---------------------------------------------------------------- faults

/// Status and raw body of a GET with the token.
async fn raw_get(sim: &SimHandle, rest: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(group_path(sim, rest))
        .header("Authorization", TOKEN)
        .send()
        .await
        .expect("simulator answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn each_fault_spoils_v2_answers_and_is_still_counted() {
    let sim = start(SimConfig::for_tests()).await;
    let uid = sim.data.members[0].user_id;
    let summary = format!("/members/{uid}/summary");

    sim.set_fault(SimFault::Garbage);
    let (status, body) = raw_get(&sim, &summary).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("<html>"), "{body}");

    sim.set_fault(SimFault::Truncated);
    let (status, body) = raw_get(&sim, &summary).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"") && serde_json::from_str::<Value>(&body).is_err());

    sim.set_fault(SimFault::MissingFields);
    let answer = get(&sim, &summary).await;
    assert_eq!(answer["succeeded"], true);
    assert!(answer["resp_data"]["member"]["number"].is_u64());
    assert!(answer["resp_data"]["member"].get("user_id").is_none());
    let list = get(&sim, "/members?count=3").await;
    assert!(
        list["resp_data"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.get("user_id").is_none())
    );
    let camps = get(&sim, "/checkins?scope=over&count=5").await;
    assert!(camps["resp_data"].get("checkins").is_none());

    sim.set_fault(SimFault::Http500);
    let (status, _) = raw_get(&sim, &summary).await;
    assert_eq!(status, 500);

    sim.set_fault(SimFault::Slow);
    sim.set_slow_ms(150);
    let started = Instant::now();
    let answer = get(&sim, &summary).await;
    assert_eq!(answer["succeeded"], true);
    assert!(started.elapsed() >= Duration::from_millis(150));

    sim.set_fault(SimFault::None);
    assert_eq!(get(&sim, &summary).await["succeeded"], true);
    assert_eq!(sim.stats().calls, 8, "every spoiled call was counted");
}

#[tokio::test]
async fn faults_leave_the_control_endpoints_alone_and_are_set_over_http() {
    let sim = start(SimConfig::for_tests()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/__sim/config", sim.base_url);
    let knobs = send(
        http.post(&url)
            .json(&json!({"fault": "http_500", "slow_ms": 7})),
    )
    .await;
    assert_eq!(knobs["fault"], "http_500");
    assert_eq!(knobs["slow_ms"], 7);
    assert_eq!(sim.knobs().fault, SimFault::Http500);
    // /__sim/* still answers normally.
    assert_eq!(sim_stats(&sim).await["calls"], 0);
    let bad = http
        .post(&url)
        .json(&json!({"fault": "explode"}))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
    assert_eq!(sim.knobs().fault, SimFault::Http500, "unchanged");
    send(http.post(&url).json(&json!({"fault": "none"}))).await;
    let uid = sim.data.members[1].user_id;
    assert_eq!(
        get(&sim, &format!("/members/{uid}")).await["succeeded"],
        true
    );
}

// ---------------------------------------------------------------- web client headers

/// A GET of `rest` with the headers the web client sends: token, version,
/// device, timestamp, request id and signature.
async fn signed_get(
    sim: &SimHandle,
    rest: &str,
    version: Option<&str>,
    aduid: Option<&str>,
) -> Value {
    let url = group_path(sim, rest);
    let path = url.trim_start_matches(&sim.base_url).to_string();
    let (timestamp, request_id) = ("1735689600", uuid::Uuid::new_v4().to_string());
    let signed = format!("http://{}{path} {timestamp} {request_id}", sim.addr);
    let mut request = reqwest::Client::new()
        .get(&url)
        .header("Authorization", TOKEN)
        .header("X-Timestamp", timestamp)
        .header("X-Request-Id", &request_id)
        .header(
            "X-Signature",
            sha1_smol::Sha1::from(signed).digest().to_string(),
        );
    if let Some(v) = version {
        request = request.header("X-Version", v);
    }
    if let Some(a) = aduid {
        request = request.header("X-Aduid", a);
    }
    send(request).await
}

#[tokio::test]
async fn calls_without_signature_version_or_a_stable_device_are_refused() {
    let sim = spawn(SimConfig::for_tests()).await.unwrap();
    let uid = sim.data.members[2].user_id;
    let rest = format!("/members/{uid}");
    // Unsigned, as a hand-written curl would be.
    assert_fails_with(&get(&sim, &rest).await, 1059);
    let device = "6b2f1b0e-8f1c-4c1e-9d7a-1f2e3d4c5b6a";
    assert_fails_with(&signed_get(&sim, &rest, Some("2.95.0"), None).await, 1059);
    let too_old = signed_get(&sim, &rest, Some("1.9.0"), Some(device)).await;
    assert_fails_with(&too_old, 1001);
    assert!(
        too_old["info"].as_str().unwrap().contains("版本过低"),
        "{too_old}"
    );
    assert_fails_with(&signed_get(&sim, &rest, None, Some(device)).await, 1001);
    let good = signed_get(&sim, &rest, Some("2.95.0"), Some(device)).await;
    assert_eq!(good["succeeded"], true, "{good}");
    assert_eq!(
        signed_get(&sim, &rest, Some("2.83.0"), Some(device)).await["succeeded"],
        true
    );
    // Another device on the same token looks like a shared token.
    let other = signed_get(&sim, &rest, Some("2.95.0"), Some("another-device")).await;
    assert_fails_with(&other, 1059);
    assert_eq!(other["info"], "设备状态异常");
    // A new installation logging in is accepted once the old one is forgotten.
    sim.forget_device();
    let renewed = signed_get(&sim, &rest, Some("2.95.0"), Some("another-device")).await;
    assert_eq!(renewed["succeeded"], true, "{renewed}");
    // Lenient headers accept the bare call.
    let lenient = start(SimConfig::for_tests()).await;
    assert_eq!(get(&lenient, &rest).await["succeeded"], true);
}

#[tokio::test]
async fn a_token_that_keeps_calling_through_a_run_of_1059s_is_banned_for_the_run() {
    let sim = start(SimConfig {
        ban_after: 4,
        ..SimConfig::for_tests()
    })
    .await;
    let rest = format!("/members/{}", sim.data.members[0].user_id);
    // A run shorter than the threshold, broken by a good answer, is forgiven.
    sim.reject_next(3);
    for _ in 0..3 {
        assert_fails_with(&get(&sim, &rest).await, 1059);
    }
    assert_eq!(get(&sim, &rest).await["succeeded"], true);
    sim.reject_next(4);
    for _ in 0..4 {
        assert_fails_with(&get(&sim, &rest).await, 1059);
    }
    assert!(sim.stats().banned);
    // Banned: 401 whatever comes next, the storm over or not.
    for _ in 0..3 {
        assert_fails_with(&get(&sim, &rest).await, 401);
    }
    assert_eq!(sim_stats(&sim).await["banned"], true);
    assert_eq!(sim.knobs().ban_after, 4);
}
