//! The member endpoints: one member, the member list by join time or
//! number, and the answers for unknown, malformed, unnumbered and departed
//! members.

use super::*;

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
