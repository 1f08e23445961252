//! Camps and refund lists: complete and correct lists,
//! cheap on a cold cache, free when repeated, loud when something is missing.

use std::io::Read;

use serde_json::{Value, json};
use zsxq_sim::{CampScope, DEPARTED_CAMP_POSITION, SimHandle};

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{Answer, StoreKind, TestApp, spawn_app};

on_both_stores!(
    the_benchmark_camps_list_is_complete_right_and_free_the_second_time,
    a_refused_member_list_still_gives_a_complete_list_through_member_calls,
    former_members_have_a_null_number_with_a_reason_and_the_list_says_incomplete,
    the_paged_form_walks_the_whole_list_and_equals_the_full_list,
);

/// One participant as the simulator knows them.
#[derive(Debug)]
struct Expected {
    user_id: u64,
    number: Option<u64>,
    name: String,
    alias: String,
    days: u32,
}

fn expected_rows(sim: &SimHandle, camp: u64) -> Vec<Expected> {
    sim.data
        .expected_ranking(camp)
        .expect("a simulated camp")
        .into_iter()
        .map(|(user_id, days)| match sim.data.member_by_id(user_id) {
            Some(m) => Expected {
                user_id,
                number: Some(m.number),
                name: m.name.clone(),
                alias: m.alias.clone(),
                days,
            },
            None => Expected {
                user_id,
                number: None,
                name: sim
                    .data
                    .departed_by_id(user_id)
                    .map(|d| d.name.clone())
                    .unwrap_or_default(),
                alias: String::new(),
                days,
            },
        })
        .collect()
}

fn benchmark_camp(app: &TestApp) -> u64 {
    app.sim
        .data
        .benchmark_camp()
        .expect("benchmark camp")
        .checkin_id
}

fn departed_camp(app: &TestApp) -> u64 {
    app.sim.data.camps_in(CampScope::Over)[DEPARTED_CAMP_POSITION].checkin_id
}

/// Every row in order, with exactly the contract's fields and values.
fn assert_rows(rows: &[Value], expected: &[Expected], required: u32) {
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(expected) {
        assert_eq!(row["planet_user_id"], want.user_id.to_string(), "{row}");
        match want.number {
            Some(n) => {
                assert_eq!(row["planet_number"], n, "{row}");
                assert!(row.get("number_missing_reason").is_none(), "{row}");
            }
            None => {
                assert!(row["planet_number"].is_null(), "{row}");
                assert!(
                    row["number_missing_reason"]
                        .as_str()
                        .is_some_and(|r| !r.is_empty()),
                    "{row}"
                );
            }
        }
        assert_eq!(row["planet_nickname"], want.name, "{row}");
        assert_eq!(row["planet_alias"], want.alias, "{row}");
        assert_eq!(row["checkined_days"], want.days, "{row}");
        assert_eq!(row["required_days"], required, "{row}");
        assert_eq!(row["is_qualified"], want.days >= required, "{row}");
    }
}

/// The statistics the contract asks for, computed from the simulator.
fn assert_statistics(stats: &Value, expected: &[Expected], required: u32) {
    let qualified: Vec<&str> = expected
        .iter()
        .filter(|e| e.days >= required)
        .map(|e| e.name.as_str())
        .collect();
    let total = expected.len();
    assert_eq!(stats["total_count"], total);
    assert_eq!(stats["qualified_count"], qualified.len());
    assert_eq!(stats["unqualified_count"], total - qualified.len());
    let rate = (qualified.len() as f64 * 10_000.0 / total as f64).round() / 100.0;
    assert_eq!(stats["qualified_rate"].as_f64(), Some(rate), "{stats}");
    let text = stats["qualified_rate"].to_string();
    assert!(
        text.split('.').nth(1).is_none_or(|d| d.len() <= 2),
        "two decimals at most: {text}"
    );
    assert_eq!(stats["qualified_names"], qualified.join("、"));
}

async fn the_benchmark_camps_list_is_complete_right_and_free_the_second_time(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let camp = benchmark_camp(&app);
    let expected = expected_rows(&app.sim, camp);
    assert_eq!(expected.len(), 167);

    let a = app.refund_list(camp, json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["message"], "生成成功");
    let d = a.data();
    assert_eq!(d["checkin_id"], camp.to_string());
    assert_eq!(d["title"], app.sim.data.camp(camp).unwrap().title);
    assert_eq!(d["complete"], true);
    assert_eq!(d["required_days"], 7);
    assert_rows(d["refund_list"].as_array().unwrap(), &expected, 7);
    assert_statistics(&d["statistics"], &expected, 7);

    // The camp's own counts reconcile with the ranking.
    let camp_data = app.sim.data.camp(camp).unwrap();
    assert_eq!(d["statistics"]["checkined_count"], camp_data.checkins());
    assert_eq!(d["statistics"]["ranking_checkins"], camp_data.checkins());
    assert_eq!(d["statistics"]["joined_count"], camp_data.joined_count());
    assert_eq!(
        d["statistics"]["never_checked_in_count"],
        camp_data.never_checked_in
    );
    assert_eq!(d["incomplete_reasons"], json!([]));

    // Cold: one camps call, the camp's statistics, 8 ranking pages (the
    // statistics say when it is whole, so no final empty page), the member
    // list (500 members, 3 pages at most), not one call per participant.
    let cold = app.sim.stats();
    assert_eq!(cold.by_kind.checkins, 1, "{cold:?}");
    assert_eq!(cold.by_kind.statistics, 1, "{cold:?}");
    assert_eq!(
        cold.by_kind.ranking,
        167usize.div_ceil(21) as u64,
        "{cold:?}"
    );
    assert!(cold.by_kind.member_list <= 3, "{cold:?}");
    assert_eq!(cold.by_kind.member_summary, 0, "{cold:?}");
    assert!(cold.calls <= 12 + 1, "{cold:?}");

    // Again, and with another requirement: no upstream call at all.
    let b = app.refund_list(camp, json!({"required_days": 3})).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.data()["ranking_source"], "cache");
    assert_eq!(b.data()["lookup"]["cache_hits"], 167);
    assert_rows(b.data()["refund_list"].as_array().unwrap(), &expected, 3);
    assert_statistics(&b.data()["statistics"], &expected, 3);
    assert_eq!(app.sim.stats().calls, cold.calls, "the repeat cost calls");
}

async fn a_refused_member_list_still_gives_a_complete_list_through_member_calls(kind: StoreKind) {
    let mut setup = TestApp::builder().store(kind);
    setup.sim.no_member_list = true;
    let app = setup.spawn().await;
    let camp = benchmark_camp(&app);
    let expected = expected_rows(&app.sim, camp);

    let a = app.refund_list(camp, json!({"required_days": 7})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.data()["complete"], true);
    assert_rows(a.data()["refund_list"].as_array().unwrap(), &expected, 7);
    let stats = app.sim.stats();
    assert_eq!(stats.by_kind.member_list, 1, "the refusal is asked once");
    assert_eq!(stats.by_kind.member_summary, 167);

    // The refusal is remembered and the numbers are cached.
    let b = app.refund_list(camp, json!({})).await;
    assert_eq!(b.data()["complete"], true);
    assert_eq!(app.sim.stats().calls, stats.calls);
}

async fn former_members_have_a_null_number_with_a_reason_and_the_list_says_incomplete(
    kind: StoreKind,
) {
    let app = spawn_app(kind).await;
    let camp = departed_camp(&app);
    let expected = expected_rows(&app.sim, camp);
    let departed = expected.iter().filter(|e| e.number.is_none()).count();
    assert_eq!(departed, app.sim.data.departed.len());
    assert!(departed > 0);

    let a = app.refund_list(camp, json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["complete"], false);
    assert_eq!(d["missing_count"], departed);
    assert!(
        a.body["message"].as_str().unwrap().contains("不完整"),
        "{}",
        a.body["message"]
    );
    let rows = d["refund_list"].as_array().unwrap();
    assert_rows(rows, &expected, 7);
    for row in rows.iter().filter(|r| r["planet_number"].is_null()) {
        assert!(
            row["number_missing_reason"]
                .as_str()
                .unwrap()
                .contains("该用户已退出星球"),
            "{row}"
        );
    }
    assert_statistics(&d["statistics"], &expected, 7);

    // Viewing again and exporting cost nothing more; the export says it too.
    let calls = app.sim.stats().calls;
    let again = app.refund_list(camp, json!({})).await;
    assert_eq!(again.data()["complete"], false);
    let csv = app
        .get_raw(&format!("/api/camps/{camp}/refund-list.csv"))
        .await;
    assert_eq!(csv.headers()["x-refund-list-complete"], "false");
    let text = csv.text().await.unwrap();
    assert_eq!(
        text.matches(",缺失：该用户已退出星球").count(),
        departed,
        "{text}"
    );
    assert_eq!(app.sim.stats().calls, calls);
}

async fn the_paged_form_walks_the_whole_list_and_equals_the_full_list(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let camp = benchmark_camp(&app);
    let expected = expected_rows(&app.sim, camp);

    // Cold, the first page reads only the ranking pages it covers.
    let first = app
        .get(&format!("/api/camps/{camp}/refund-list?page_size=20"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.data()["refund_list"].as_array().unwrap().len(), 20);
    assert!(
        app.sim.stats().by_kind.ranking <= 2,
        "{:?}",
        app.sim.stats()
    );

    let pages = crate::refund_pages(
        &app,
        &format!("/api/camps/{camp}/refund-list?page_size=20&required_days=7"),
    )
    .await;
    let mut rows: Vec<Value> = Vec::new();
    let mut index = 0u64;
    for d in &pages {
        let page_rows = d["refund_list"].as_array().unwrap();
        assert_eq!(d["complete"], true);
        assert_eq!(d["index"], index);
        let stats = &d["page_statistics"];
        assert_eq!(stats["total_count"], page_rows.len());
        let qualified = page_rows
            .iter()
            .filter(|r| r["is_qualified"] == true)
            .count();
        assert_eq!(stats["qualified_count"], qualified);
        rows.extend(page_rows.iter().cloned());
        if d["has_more"] == false {
            break;
        }
        assert_eq!(page_rows.len(), 20);
        let next = d["next_index"].as_u64().unwrap();
        assert!(next > index);
        index = next;
    }
    assert_eq!(pages.len(), 167usize.div_ceil(20));
    assert_rows(&rows, &expected, 7);

    let full = app.refund_list(camp, json!({})).await;
    assert_eq!(full.data()["refund_list"].as_array().unwrap(), &rows);

    // With the whole ranking cached, pages cost no call; past the end is an
    // empty last page.
    let calls = app.sim.stats().calls;
    let big = app
        .get(&format!(
            "/api/camps/{camp}/refund-list?page_size=100&index=100"
        ))
        .await;
    assert_eq!(big.data()["refund_list"].as_array().unwrap().len(), 67);
    assert_eq!(big.data()["has_more"], false);
    assert_eq!(big.data()["ranking_source"], "cache");
    let past = app
        .get(&format!("/api/camps/{camp}/refund-list?index=500"))
        .await;
    assert_eq!(past.status, 200);
    assert_eq!(past.data()["refund_list"], json!([]));
    assert_eq!(past.data()["has_more"], false);
    assert_eq!(app.sim.stats().calls, calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camps_are_listed_newest_first_with_the_fields_the_page_needs() {
    let app = spawn_app(StoreKind::Embedded).await;
    for scope in [CampScope::Ongoing, CampScope::Over, CampScope::Closed] {
        let a = app
            .get(&format!("/api/camps?scope={}&count=100", scope.as_str()))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let camps = a.data()["camps"].as_array().unwrap();
        let want = app.sim.data.camps_in(scope);
        assert_eq!(camps.len(), want.len());
        for (got, want) in camps.iter().zip(&want) {
            assert_eq!(got["checkin_id"], want.checkin_id.to_string());
            assert_eq!(got["title"], want.title);
            assert_eq!(got["checkin_days"], want.checkin_days);
            assert_eq!(got["status"], scope.as_str());
            assert_eq!(got["joined_count"], want.joined_count());
            assert_eq!(got["expiration_time"], want.expiration_time);
            assert_eq!(got["create_time"], want.create_time);
        }
        let times: Vec<&str> = camps
            .iter()
            .map(|c| c["create_time"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "newest first");
    }
    // Default scope is over; count cuts the list; the lists are reused.
    let calls = app.sim.stats().calls;
    let a = app.get("/api/camps?count=1").await;
    assert_eq!(a.data()["scope"], "over");
    assert_eq!(a.data()["camps"].as_array().unwrap().len(), 1);
    assert_eq!(
        a.data()["camps"][0]["checkin_id"],
        benchmark_camp(&app).to_string()
    );
    assert_eq!(app.sim.stats().calls, calls, "camps lists are cached");

    for bad in [
        "/api/camps?scope=finished",
        "/api/camps?scope=",
        "/api/camps?count=0",
        "/api/camps?count=101",
        "/api/camps?count=ten",
    ] {
        app.get(bad).await.assert_error(400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranking_that_fails_midway_is_a_5xx_envelope_and_never_a_list() {
    let app = TestApp::builder().var("API_MAX_RETRIES", "1").spawn().await;
    let camp = benchmark_camp(&app);
    // Learn the camps first, then let only 4 more calls through a minute:
    // the camp's statistics and ranking pages 1-3 succeed, page 4 is
    // throttled beyond its retry.
    assert_eq!(app.get("/api/camps").await.status, 200);
    app.sim.set_rate_per_min(4);
    let r = app
        .http
        .post(app.url(&format!("/api/camps/{camp}/refund-list")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    let a = Answer { status: 503, body };
    a.assert_error(503);
    assert_eq!(app.sim.stats().by_kind.statistics, 1);
    assert_eq!(
        app.sim.stats().by_kind.ranking,
        3 + 2,
        "3 pages, then 1 + 1 retry"
    );
    assert_eq!(app.sim.stats().by_kind.member_list, 0, "no list was built");

    // Nothing partial was cached: once the upstream recovers, the list is whole.
    app.sim.set_rate_per_min(0);
    let ok = app.refund_list(camp, json!({})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.data()["complete"], true);
    assert_eq!(ok.data()["refund_list"].as_array().unwrap().len(), 167);

    // The same for the first page of a camp whose ranking is not cached.
    app.sim.set_reject_ratio(1.0);
    let other = app.sim.data.camps_in(CampScope::Over)[2].checkin_id;
    app.get(&format!("/api/camps/{other}/refund-list"))
        .await
        .assert_error(503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_hold_the_same_list_as_csv_xlsx_and_text_at_no_upstream_cost() {
    let app = spawn_app(StoreKind::Embedded).await;
    let camp = benchmark_camp(&app);
    let list = app.refund_list(camp, json!({})).await;
    let rows = list.data()["refund_list"].as_array().unwrap().clone();
    let calls = app.sim.stats().calls;

    // CSV
    let r = app
        .get_raw(&format!("/api/camps/{camp}/refund-list.csv"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(r.headers()["x-refund-list-complete"], "true");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cd.starts_with("attachment; filename=\"refund-list-"),
        "{cd}"
    );
    assert!(cd.contains("filename*=UTF-8''"), "{cd}");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..3], &[0xEF, 0xBB, 0xBF], "UTF-8 BOM");
    let text = std::str::from_utf8(&bytes[3..]).unwrap();
    assert!(text.ends_with("\r\n"));
    let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    assert_eq!(
        lines[0],
        "序号,星球编号,星球昵称,打卡天数,是否合格,退款状态"
    );
    assert_eq!(lines.len(), rows.len() + 1);
    for (i, (line, row)) in lines[1..].iter().zip(&rows).enumerate() {
        let fields = parse_csv_line(line);
        let name = row["planet_nickname"].as_str().unwrap();
        assert_eq!(fields[0], (i + 1).to_string());
        assert_eq!(fields[1], row["planet_number"].to_string());
        assert_eq!(fields[2].trim_start_matches('\''), name, "{line}");
        assert_eq!(fields[3], row["checkined_days"].to_string());
        let q = if row["is_qualified"] == true {
            "是"
        } else {
            "否"
        };
        assert_eq!(fields[4], q);
        // Nobody is marked in this camp: every row is still owed.
        assert_eq!(row["refund_status"], "pending");
        assert_eq!(fields[5], "未退款");
    }

    // XLSX: a real workbook whose cells read back.
    let r = app
        .get_raw(&format!(
            "/api/camps/{camp}/refund-list.xlsx?required_days=7"
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(b"PK"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut shared = String::new();
    zip.by_name("xl/sharedStrings.xml")
        .unwrap()
        .read_to_string(&mut shared)
        .unwrap();
    for header in [
        "序号",
        "星球编号",
        "星球昵称",
        "打卡天数",
        "是否合格",
        "退款状态",
    ] {
        assert!(shared.contains(header), "{header} not in the workbook");
    }
    let emoji_or_cjk = rows
        .iter()
        .map(|r| r["planet_nickname"].as_str().unwrap())
        .find(|n| !n.is_ascii() && !n.contains(['<', '>', '&', '"', '\'']))
        .unwrap();
    assert!(shared.contains(emoji_or_cjk), "{emoji_or_cjk}");
    let mut sheet = String::new();
    zip.by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut sheet)
        .unwrap();
    assert_eq!(sheet.matches("<row ").count(), rows.len() + 1);
    let first_number = rows[0]["planet_number"].to_string();
    assert!(
        sheet.contains(&format!("<c r=\"B2\"><v>{first_number}</v></c>")),
        "B2 holds the first number as a number"
    );

    // Text report.
    let r = app
        .get_raw(&format!("/api/camps/{camp}/refund-list/text"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let report = r.text().await.unwrap();
    let s = &list.data()["statistics"];
    assert!(
        report.contains(&format!(
            "总人数：{}    合格：{}    不合格：{}",
            s["total_count"], s["qualified_count"], s["unqualified_count"]
        )),
        "{report}"
    );
    assert!(report.contains("合格名单"));
    assert!(report.contains("还差"));

    assert_eq!(
        app.sim.stats().calls,
        calls,
        "exports after viewing cost nothing"
    );
}

/// A CSV line split into fields (RFC 4180 quoting).
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_refund_input_gets_4xx_envelopes_that_say_what_to_fix() {
    let app = spawn_app(StoreKind::Embedded).await;
    let camp = benchmark_camp(&app);
    for path in [
        "/api/camps/abc/refund-list".to_string(),
        "/api/camps/12a/refund-list.csv".to_string(),
        "/api/camps/-1/refund-list.xlsx".to_string(),
        "/api/camps/0/refund-list/text".to_string(),
        format!("/api/camps/{camp}/refund-list?required_days=0"),
        format!("/api/camps/{camp}/refund-list?required_days=366"),
        format!("/api/camps/{camp}/refund-list?page_size=0"),
        format!("/api/camps/{camp}/refund-list?page_size=101"),
        format!("/api/camps/{camp}/refund-list?index=-1"),
        format!("/api/camps/{camp}/refund-list.csv?required_days=0"),
        format!("/api/camps/{camp}/refund-list/text?required_days=x"),
    ] {
        let a = app.get(&path).await;
        a.assert_error(400);
    }
    for (path, body) in [
        ("/api/camps/abc/refund-list".to_string(), json!({})),
        (
            format!("/api/camps/{camp}/refund-list"),
            json!({"required_days": 0}),
        ),
        (
            format!("/api/camps/{camp}/refund-list"),
            json!({"required_days": 366}),
        ),
        (
            format!("/api/camps/{camp}/refund-list"),
            json!({"required_days": "7"}),
        ),
        (format!("/api/camps/{camp}/refund-list"), json!({"days": 7})),
    ] {
        let a = app.post_json(&path, body).await;
        a.assert_error(400);
        assert!(
            a.body["message"]
                .as_str()
                .unwrap()
                .contains("required_days")
                || a.body["message"].as_str().unwrap().contains("checkin_id"),
            "{}",
            a.body
        );
    }
    assert_eq!(
        app.sim.stats().calls,
        0,
        "no bad request reached the upstream"
    );

    let unknown = app.refund_list(999_999_999, json!({})).await;
    unknown.assert_error(404);
    assert!(
        unknown.body["message"]
            .as_str()
            .unwrap()
            .contains("999999999")
    );
    let export = app.get_raw("/api/camps/999999999/refund-list.xlsx").await;
    assert_eq!(
        export.status(),
        404,
        "an unknown camp's export is a 404 too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_builds_of_one_camp_cost_the_calls_of_one() {
    let app = spawn_app(StoreKind::Embedded).await;
    app.sim.set_latency_ms(20);
    let camp = benchmark_camp(&app);
    let (a, b) = tokio::join!(
        app.refund_list(camp, json!({})),
        app.refund_list(camp, json!({"required_days": 5}))
    );
    assert_eq!(a.data()["complete"], true, "{}", a.body);
    assert_eq!(b.data()["complete"], true, "{}", b.body);
    assert!(app.sim.stats().calls <= 12 + 1, "{:?}", app.sim.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_a_finished_camps_ranking_with_a_ttl_and_clearing_drops_it() {
    let app = TestApp::builder().store(StoreKind::Redis).spawn().await;
    let camp = benchmark_camp(&app);
    assert_eq!(app.refund_list(camp, json!({})).await.status, 200);
    let mut conn = app.redis_conn().await;
    let key = format!("zsxq:ranking:{camp}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "{key} has TTL {ttl}");

    assert_eq!(app.clear().await.status, 200);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "clear removes cached rankings");
    let ranking_calls = app.sim.stats().by_kind.ranking;
    let again = app.refund_list(camp, json!({})).await;
    assert_eq!(again.data()["ranking_source"], "upstream");
    assert!(app.sim.stats().by_kind.ranking > ranking_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_readable_table_and_refuses_bad_arguments() {
    use zsxq_cache::cli::{ListFormat, RefundListArgs, refund_list_output};
    let app = spawn_app(StoreKind::Embedded).await;
    let camp = benchmark_camp(&app);
    let cli = crate::cli_environment(&app).await;
    let config = cli.config().unwrap();
    let args = |id: &str, format: ListFormat| RefundListArgs {
        checkin_id: id.to_string(),
        required_days: 7,
        grace_days: 0,
        ranking_type: zsxq_cache::cli::RankingChoice::Accumulated,
        format,
        output: None,
    };

    let (list, bytes) = refund_list_output(&config, &args(&camp.to_string(), ListFormat::Table))
        .await
        .unwrap();
    assert!(list.complete);
    let table = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("序号  星球编号  星球昵称"), "{table}");
    assert_eq!(lines.len(), 1 + 1 + 167 + 1, "{table}");
    let first = &list.refund_list[0];
    assert!(
        lines[2].starts_with(&format!("1     {}", first.planet_number.unwrap())),
        "{}",
        lines[2]
    );
    assert!(lines.last().unwrap().starts_with("合计 167 人"), "{table}");

    // The list is now in the CLI's store: CSV costs no upstream call.
    let calls = app.sim.stats().calls;
    let (_, csv) = refund_list_output(&config, &args(&camp.to_string(), ListFormat::Csv))
        .await
        .unwrap();
    assert!(csv.starts_with(&[0xEF, 0xBB, 0xBF]));
    assert_eq!(app.sim.stats().calls, calls);

    for bad in [
        args("12ab", ListFormat::Table),
        args(&camp.to_string(), ListFormat::Xlsx),
    ] {
        let e = refund_list_output(&config, &bad).await.unwrap_err();
        assert!(
            e.to_string().contains("checkin_id") || e.to_string().contains("--output"),
            "{e}"
        );
    }
    let e = refund_list_output(&config, &args("999999999", ListFormat::Text))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("999999999"), "{e}");
}
