//! Refund rules: `grace_days` and `ranking_type` on every refund-list
//! endpoint, export and the CLI — who qualifies exactly as the rule says,
//! streaks from the continuous ranking, rankings cached per type, and every
//! bad rule refused before anything is read.

use serde_json::{Value, json};
use zsxq_sim::{RankingType, SimHandle, continuous_days};

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{StoreKind, TestApp};

on_both_stores!(
    grace_lowers_the_threshold_to_required_minus_grace_and_the_statistics_say_so,
    a_continuous_list_takes_each_participants_streak_and_is_proven_by_the_accumulated_ranking,
    a_paged_continuous_list_walks_the_same_streaks,
    every_bad_rule_is_refused_on_the_body_the_page_and_every_export_and_costs_nothing,
    exports_state_the_rule_and_the_csv_adds_no_column_for_it,
);

/// The participants as `(user_id, days)` in accumulated ranking order, with
/// the days of `kind` (each participant's streak for `Continuous`).
fn expected_days(sim: &SimHandle, camp: u64, kind: RankingType) -> Vec<(u64, u32)> {
    let rows = sim.data.expected_ranking(camp).expect("a simulated camp");
    match kind {
        RankingType::Accumulated => rows,
        RankingType::Continuous => rows
            .into_iter()
            .map(|(id, days)| (id, continuous_days(id, days)))
            .collect(),
    }
}

/// Each row has the expected user, days and verdict for `threshold`.
fn assert_judged(rows: &[Value], expected: &[(u64, u32)], threshold: u32) {
    assert_eq!(rows.len(), expected.len());
    for (row, &(id, days)) in rows.iter().zip(expected) {
        assert_eq!(row["planet_user_id"], id.to_string(), "{row}");
        assert_eq!(row["checkined_days"], days, "{row}");
        assert_eq!(row["is_qualified"], days >= threshold, "{row}");
        assert!(row.get("days_missing_reason").is_none(), "{row}");
    }
}

fn qualified_count(expected: &[(u64, u32)], threshold: u32) -> usize {
    expected.iter().filter(|(_, d)| *d >= threshold).count()
}

async fn grace_lowers_the_threshold_to_required_minus_grace_and_the_statistics_say_so(
    kind: StoreKind,
) {
    let app = TestApp::builder().store(kind).spawn().await;
    let camp = app.benchmark_camp();
    let expected = expected_days(&app.sim, camp, RankingType::Accumulated);
    for (required, grace) in [(7, 0), (7, 2), (3, 2), (10, 9)] {
        let threshold = required - grace;
        let a = app
            .refund_list(
                camp,
                json!({"required_days": required, "grace_days": grace}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let d = a.data();
        assert_eq!(d["complete"], true, "{d}");
        assert_eq!(
            (d["required_days"].clone(), d["grace_days"].clone()),
            (json!(required), json!(grace))
        );
        assert_eq!(d["ranking_type"], "accumulated");
        assert_judged(d["refund_list"].as_array().unwrap(), &expected, threshold);
        let s = &d["statistics"];
        assert_eq!(s["required_days"], required);
        assert_eq!(s["grace_days"], grace);
        assert_eq!(s["qualifying_days"], threshold);
        assert_eq!(s["ranking_type"], "accumulated");
        assert_eq!(s["qualified_count"], qualified_count(&expected, threshold));
    }
    // The grace decides someone's verdict in this camp, or the test proves
    // nothing.
    assert_ne!(
        qualified_count(&expected, 7),
        qualified_count(&expected, 5),
        "the benchmark camp has no participant with 5 or 6 days"
    );
    // The page form judges the same way.
    let page = app
        .get(&format!(
            "/api/camps/{camp}/refund-list?required_days=7&grace_days=2&page_size=100"
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let rows = page.data()["refund_list"].as_array().unwrap().clone();
    assert_judged(&rows, &expected[..rows.len()], 5);
    assert_eq!(page.data()["page_statistics"]["grace_days"], 2);
    assert_eq!(page.data()["grace_days"], 2);
}

async fn a_continuous_list_takes_each_participants_streak_and_is_proven_by_the_accumulated_ranking(
    kind: StoreKind,
) {
    let app = TestApp::builder().store(kind).spawn().await;
    let camp = app.benchmark_camp();
    let streaks = expected_days(&app.sim, camp, RankingType::Continuous);
    let totals = expected_days(&app.sim, camp, RankingType::Accumulated);
    assert_ne!(
        streaks, totals,
        "the simulator's streaks must differ from totals"
    );
    let pages = 167u64.div_ceil(21);

    // An accumulated list first: its ranking is now cached.
    let acc = app.refund_list(camp, json!({})).await;
    assert_eq!(acc.status, 200, "{}", acc.body);
    let before = app.sim.stats();

    // The cached accumulated ranking proves the participants; the streaks
    // are read from the continuous ranking — never the cached totals.
    let body = json!({"required_days": 5, "grace_days": 1, "ranking_type": "continuous"});
    let a = app.refund_list(camp, body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let d = a.data();
    assert_eq!(d["complete"], true, "{d}");
    assert_eq!(d["incomplete_reasons"], json!([]));
    assert_eq!(d["ranking_type"], "continuous");
    assert_judged(d["refund_list"].as_array().unwrap(), &streaks, 4);
    let camp_data = app.sim.data.camp(camp).unwrap();
    assert_eq!(d["statistics"]["ranking_checkins"], camp_data.checkins());
    assert_eq!(d["statistics"]["checkined_count"], camp_data.checkins());
    assert_eq!(d["statistics"]["ranking_type"], "continuous");
    assert_eq!(
        d["statistics"]["qualified_count"],
        qualified_count(&streaks, 4)
    );
    assert_eq!(
        d["ranking_reads"],
        json!([
            {"ranking_type": "accumulated", "source": "cache"},
            {"ranking_type": "continuous", "source": "upstream"},
        ])
    );
    assert_eq!(d["ranking_source"], "upstream");
    // The continuous ranking costs its pages and the empty one that ends
    // it (streaks add up to nothing the camp counts); nothing else.
    let after = app.sim.stats();
    assert_eq!(
        after.by_kind.ranking - before.by_kind.ranking,
        pages + 1,
        "{after:?}"
    );
    assert_eq!(after.calls - before.calls, pages + 1, "{after:?}");

    // Again: both rankings cached, no call at all; and an accumulated list
    // still gets totals, not the cached streaks.
    let b = app.refund_list(camp, body).await;
    assert_eq!(b.data()["ranking_source"], "cache");
    assert_judged(b.data()["refund_list"].as_array().unwrap(), &streaks, 4);
    let c = app.refund_list(camp, json!({"required_days": 4})).await;
    assert_judged(c.data()["refund_list"].as_array().unwrap(), &totals, 4);
    assert_eq!(app.sim.stats().calls, after.calls);
}

async fn a_paged_continuous_list_walks_the_same_streaks(kind: StoreKind) {
    let app = TestApp::builder().store(kind).spawn().await;
    let camp = app.benchmark_camp();
    let streaks = expected_days(&app.sim, camp, RankingType::Continuous);
    let pages = crate::refund_pages(
        &app,
        &format!(
            "/api/camps/{camp}/refund-list?ranking_type=continuous&required_days=6&page_size=50"
        ),
    )
    .await;
    let mut rows: Vec<Value> = Vec::new();
    for d in &pages {
        assert_eq!(d["ranking_type"], "continuous");
        assert_eq!(d["page_statistics"]["ranking_type"], "continuous");
        assert_eq!(d["complete"], true, "{d}");
        rows.extend(d["refund_list"].as_array().unwrap().iter().cloned());
    }
    assert_judged(&rows, &streaks, 6);
}

async fn every_bad_rule_is_refused_on_the_body_the_page_and_every_export_and_costs_nothing(
    kind: StoreKind,
) {
    let app = TestApp::builder().store(kind).spawn().await;
    let camp = app.benchmark_camp();
    let before = app.sim.stats().calls;
    let grace_too_large =
        "grace_days must be less than required_days: got grace_days 5 with required_days 5";
    let grace_not_whole = "grace_days must be an integer from 0 to 364";
    let unknown_type = "ranking_type must be one of accumulated|continuous";
    let bodies = [
        (
            json!({"required_days": 5, "grace_days": 5}),
            grace_too_large,
        ),
        (
            json!({"grace_days": 7}),
            "got grace_days 7 with required_days 7",
        ),
        (json!({"grace_days": -1}), grace_not_whole),
        (json!({"grace_days": 1.5}), grace_not_whole),
        (json!({"grace_days": "2"}), grace_not_whole),
        (json!({"ranking_type": "streak"}), unknown_type),
        (json!({"ranking_type": 1}), unknown_type),
    ];
    for (body, says) in bodies {
        let a = app.refund_list(camp, body.clone()).await;
        a.assert_error(400);
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let queries = [
        ("required_days=5&grace_days=5", grace_too_large),
        ("grace_days=-1", grace_not_whole),
        ("grace_days=1.5", grace_not_whole),
        ("grace_days=two", grace_not_whole),
        ("ranking_type=streak", unknown_type),
    ];
    for path in [
        "refund-list",
        "refund-list/text",
        "refund-list.csv",
        "refund-list.xlsx",
    ] {
        for (query, says) in queries {
            let a = app.get(&format!("/api/camps/{camp}/{path}?{query}")).await;
            a.assert_error(400);
            let message = a.body["message"].as_str().unwrap();
            assert!(message.contains(says), "{path}?{query}: {message}");
        }
    }
    assert_eq!(
        app.sim.stats().calls,
        before,
        "a refused rule cost upstream calls"
    );
}

async fn exports_state_the_rule_and_the_csv_adds_no_column_for_it(kind: StoreKind) {
    let app = TestApp::builder().store(kind).spawn().await;
    let camp = app.benchmark_camp();
    let streaks = expected_days(&app.sim, camp, RankingType::Continuous);
    let query = "required_days=7&grace_days=2&ranking_type=continuous";

    let text = app
        .get_raw(&format!("/api/camps/{camp}/refund-list/text?{query}"))
        .await;
    assert_eq!(text.status(), 200);
    let text = text.text().await.unwrap();
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains("连续打卡满 7 天（宽限 2 天，满 5 天即合格）")),
        "{text}"
    );

    let csv = app
        .get_raw(&format!("/api/camps/{camp}/refund-list.csv?{query}"))
        .await;
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.headers()["x-refund-rule"],
        "required_days=7; grace_days=2; qualifying_days=5; ranking_type=continuous"
    );
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.trim_start_matches('\u{FEFF}').lines().collect();
    assert_eq!(
        lines[0],
        "序号,星球编号,星球昵称,打卡天数,是否合格,退款状态"
    );
    assert_eq!(lines.len(), 1 + streaks.len());
    for (line, &(_, days)) in lines[1..].iter().zip(&streaks) {
        // Names may hold commas (quoted); the last three fields never do.
        let fields: Vec<&str> = line.rsplitn(4, ',').collect();
        assert_eq!(fields[2], days.to_string(), "{line}");
        assert_eq!(fields[1], if days >= 5 { "是" } else { "否" }, "{line}");
        assert_eq!(fields[0], "未退款", "{line}");
    }

    let xlsx = app
        .get_raw(&format!("/api/camps/{camp}/refund-list.xlsx?{query}"))
        .await;
    assert_eq!(xlsx.status(), 200);
    assert!(
        xlsx.headers()["x-refund-rule"]
            .to_str()
            .unwrap()
            .contains("grace_days=2")
    );
    let bytes = xlsx.bytes().await.unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut sheet = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("xl/worksheets/sheet2.xml").unwrap(),
        &mut sheet,
    )
    .unwrap();
    let mut shared = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("xl/sharedStrings.xml").unwrap(),
        &mut shared,
    )
    .unwrap();
    assert!(shared.contains("连续打卡满 7 天"), "{shared}");
    assert!(shared.contains("continuous"), "{shared}");
}

/// The CLI's flags reach the list, and a grace that does not fit is
/// refused by the binary with a message naming both flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_grace_days_and_ranking_type_and_refuses_a_grace_that_does_not_fit() {
    use zsxq_cache::cli::{ListFormat, RankingChoice, RefundListArgs, refund_list_output};
    let app = TestApp::builder().spawn().await;
    let camp = app.benchmark_camp();
    let cli = crate::cli_environment(&app).await;
    let config = cli.config().unwrap();
    let args = RefundListArgs {
        checkin_id: camp.to_string(),
        required_days: 6,
        grace_days: 1,
        ranking_type: RankingChoice::Continuous,
        format: ListFormat::Text,
        output: None,
    };
    let (list, bytes) = refund_list_output(&config, &args).await.unwrap();
    assert!(list.complete);
    let streaks = expected_days(&app.sim, camp, RankingType::Continuous);
    let got: Vec<(u64, u32, bool)> = list
        .refund_list
        .iter()
        .map(|r| (r.planet_user_id.get(), r.checkined_days, r.is_qualified))
        .collect();
    let want: Vec<(u64, u32, bool)> = streaks.iter().map(|&(id, d)| (id, d, d >= 5)).collect();
    assert_eq!(got, want);
    assert_eq!(list.statistics.grace_days, 1);
    assert!(
        String::from_utf8(bytes)
            .unwrap()
            .contains("连续打卡满 6 天（宽限 1 天")
    );

    let mut bad_grace = cli.command(env!("CARGO_BIN_EXE_zsxq-cache"));
    bad_grace
        .args([
            "refund-list",
            &camp.to_string(),
            "--required-days",
            "3",
            "--grace-days",
            "3",
        ])
        .args(["--ranking-type", "continuous"]);
    let said = refusal(bad_grace).await;
    assert!(
        said.contains("--grace-days (3) must be less than --required-days (3)"),
        "{said}"
    );
    let mut bad_type = std::process::Command::new(env!("CARGO_BIN_EXE_zsxq-cache"));
    bad_type
        .args(["refund-list", &camp.to_string(), "--ranking-type", "streak"])
        .current_dir(cli.dir())
        .env_clear();
    let said = refusal(bad_type).await;
    assert!(
        said.contains("accumulated") && said.contains("continuous"),
        "{said}"
    );
}

/// Runs `command`, which must fail; what it said on stderr.
async fn refusal(command: std::process::Command) -> String {
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
