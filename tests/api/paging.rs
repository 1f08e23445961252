//! `GET /api/users`: pages from the sorted indexes.

use serde_json::json;

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{Answer, StoreKind, TestApp};

on_both_stores!(pages_are_sorted_by_number_or_join_time_in_either_order);

async fn pages_are_sorted_by_number_or_join_time_in_either_order(kind: StoreKind) {
    let app = TestApp::builder().store(kind).members(120).spawn().await;
    let synced = app.sync(json!({})).await;
    assert_eq!(synced.status, 200, "{}", synced.body);

    let mut by_number: Vec<_> = app.sim.data.members.iter().collect();
    by_number.sort_by_key(|m| m.number);
    let total = by_number.len() as u64;

    let p1 = app.get("/api/users?page=1&page_size=50").await;
    assert_eq!(p1.status, 200);
    assert_eq!(p1.body["message"], "查询成功");
    let pg = &p1.data()["pagination"];
    assert_eq!(pg["page"], 1);
    assert_eq!(pg["page_size"], 50);
    assert_eq!(pg["total_count"], total);
    assert_eq!(pg["total_pages"], total.div_ceil(50));
    assert_eq!(p1.data()["cache_info"]["total_cached"], total);
    assert!(
        p1.data()["cache_info"]["last_sync_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let numbers = |a: &Answer| -> Vec<u64> {
        a.data()["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["number"].as_u64().unwrap())
            .collect()
    };
    let expected: Vec<u64> = by_number.iter().take(50).map(|m| m.number).collect();
    assert_eq!(numbers(&p1), expected);
    let u0 = &p1.data()["users"][0];
    assert!(u0["user_id"].is_string());
    for field in ["name", "avatar_url", "join_time", "status"] {
        assert!(u0[field].is_string(), "{field} in {u0}");
    }

    // Last page is short; the page after it is empty but not an error.
    let last = app
        .get(&format!(
            "/api/users?page={}&page_size=50",
            total.div_ceil(50)
        ))
        .await;
    assert_eq!(
        numbers(&last).len() as u64,
        total - 50 * (total.div_ceil(50) - 1)
    );
    let beyond = app.get("/api/users?page=99&page_size=50").await;
    assert_eq!(beyond.status, 200);
    assert!(numbers(&beyond).is_empty());

    let desc = app
        .get("/api/users?page=1&page_size=10&sort_by=number&order=desc")
        .await;
    let expected: Vec<u64> = by_number.iter().rev().take(10).map(|m| m.number).collect();
    assert_eq!(numbers(&desc), expected);

    let mut by_join: Vec<_> = app.sim.data.members.iter().collect();
    by_join.sort_by_key(|m| (m.join_time_ms, m.user_id));
    let jt = app
        .get("/api/users?page=2&page_size=7&sort_by=join_time&order=asc")
        .await;
    let got = join_times(&jt);
    let want: Vec<String> = by_join
        .iter()
        .skip(7)
        .take(7)
        .map(|m| m.join_time.clone())
        .collect();
    assert_eq!(got, want);
    let jt_desc = app
        .get("/api/users?page=1&page_size=5&sort_by=join_time&order=desc")
        .await;
    let got = join_times(&jt_desc);
    let want: Vec<String> = by_join
        .iter()
        .rev()
        .take(5)
        .map(|m| m.join_time.clone())
        .collect();
    assert_eq!(got, want);
}

/// The join times of a page, in the order shown.
fn join_times(page: &Answer) -> Vec<String> {
    page.data()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["join_time"].as_str().unwrap().to_string())
        .collect()
}
