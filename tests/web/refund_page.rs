//! The refund list from the camps page: every participant with the member
//! number (never the user id), days and verdict, the statistics, the
//! filters, the copied names, a real CSV download, a phone-width layout, and
//! a bookmarked list whose former members say why they have no number.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use zsxq_sim::{BENCHMARK_PARTICIPANTS, CampScope, SimMember};

use crate::webdriver::Browser;
use crate::{
    BROWSER, DESKTOP, MARKUP_NAME, PHONE, SLOW, artifact, parse_csv, spawn_demo, stat,
    wait_for_download,
};

/// One row of the refund table as the page shows it.
#[derive(Debug)]
struct ShownRow {
    user_id: String,
    index: String,
    number: String,
    missing_reason: String,
    name: String,
    days: String,
    verdict: String,
}

async fn shown_refund_rows(browser: &Browser) -> Vec<ShownRow> {
    let rows = browser
        .js(
            "return [...document.querySelectorAll('#refund-table tbody tr[data-user-id]')].map(tr => ({
                user_id: tr.dataset.userId,
                index: tr.querySelector('.col-index').textContent.trim(),
                number: (tr.querySelector('.col-number .member-no') || {textContent: ''}).textContent.trim(),
                missing_reason: (tr.querySelector('.col-number .missing .reason') || {textContent: ''}).textContent.trim(),
                name: tr.querySelector('.col-name .name').textContent,
                days: tr.querySelector('.col-days').textContent.trim(),
                verdict: tr.querySelector('.col-status').textContent.trim(),
            }))",
            vec![],
        )
        .await;
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            ShownRow {
                user_id: s("user_id"),
                index: s("index"),
                number: s("number"),
                missing_reason: s("missing_reason"),
                name: s("name"),
                days: s("days"),
                verdict: s("verdict"),
            }
        })
        .collect()
}

/// The verdict text the page must show for `days` against `required`.
fn verdict(days: u32, required: u32) -> &'static str {
    if days >= required {
        "合格"
    } else {
        "不合格"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_list_from_the_camps_page_shows_member_numbers_and_exports_csv() {
    let _one_browser = BROWSER.lock().await;
    let app = spawn_demo().await;
    let data = app.sim.data.clone();
    let camp = data.benchmark_camp().expect("the benchmark camp");
    let id = camp.checkin_id.to_string();
    let required = 7;
    let ranking: HashMap<u64, u32> = data
        .expected_ranking(camp.checkin_id)
        .expect("ranking")
        .into_iter()
        .collect();
    assert_eq!(ranking.len(), BENCHMARK_PARTICIPANTS);
    let member = |uid: &str| -> &SimMember {
        uid.parse()
            .ok()
            .and_then(|u| data.member_by_id(u))
            .unwrap_or_else(|| panic!("{uid} is not a simulated member"))
    };
    let qualified = ranking.values().filter(|&&d| d >= required).count();
    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;

    // The camps page: finished camps first, every one of them listed.
    browser.goto(&app.url("/")).await;
    let card = format!("a.camp-card[data-checkin-id=\"{id}\"]");
    browser
        .wait_js(
            "the camps list (or an error)",
            SLOW,
            "return document.querySelector('.camp-card') || document.querySelector('.notice-error')",
        )
        .await;
    let error = browser.text(".notice-error").await;
    assert!(
        error.is_empty(),
        "the camps page shows an error: {error} (GET /api/camps comes with branch `refund`)"
    );
    browser.find(&card).await;
    let titles = browser
        .js(
            "return [...document.querySelectorAll('.camp-card h3')].map(h => h.textContent)",
            vec![],
        )
        .await;
    let over: Vec<&str> = data
        .camps_in(CampScope::Over)
        .iter()
        .map(|c| c.title.as_str())
        .collect();
    assert_eq!(
        titles,
        json!(over),
        "the 已结束 tab lists the finished camps"
    );
    browser.screenshot(&artifact("web-camps.png")).await;

    // Click through: the address carries the camp and the required days.
    browser.click(&card).await;
    browser
        .wait_js(
            "the refund address",
            SLOW,
            "return location.hash.startsWith('#/camps/') && location.hash",
        )
        .await;
    assert!(
        browser
            .current_url()
            .await
            .ends_with(&format!("#/camps/{id}/refund?required_days={required}")),
        "{}",
        browser.current_url().await
    );

    // The list builds page by page; watch the progress until it is done.
    let mut seen_progress = Vec::new();
    let deadline = Instant::now() + SLOW;
    loop {
        let label = browser
            .text("#refund-progress .progress-label")
            .await
            .trim()
            .to_string();
        if seen_progress.last() != Some(&label) && !label.is_empty() {
            seen_progress.push(label.clone());
        }
        let rows = browser
            .js(
                "return document.querySelectorAll('#refund-table tbody tr[data-user-id]').length",
                vec![],
            )
            .await;
        if rows == json!(BENCHMARK_PARTICIPANTS) {
            break;
        }
        let error = browser.text(".notice-error").await;
        assert!(error.is_empty(), "the page shows an error: {error}");
        assert!(
            Instant::now() < deadline,
            "no refund table after {SLOW:?}; progress seen: {seen_progress:?}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let last = browser.text("#refund-progress .progress-right").await;
    assert_eq!(
        last,
        format!("已加载 {0} / {0}", BENCHMARK_PARTICIPANTS),
        "progress seen: {seen_progress:?}"
    );
    // A cold list takes a moment (ranking pages and member calls at 15 ms
    // each): the operator saw a counting progress line, not a frozen page.
    assert!(
        seen_progress
            .iter()
            .any(|l| l.starts_with("正在生成名单") && l.contains(" / ")),
        "progress seen: {seen_progress:?}"
    );
    println!("progress labels seen while building: {seen_progress:?}");

    // Every row: the member number (not the user id), days and verdict.
    let rows = shown_refund_rows(&browser).await;
    let mut ids = HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let m = member(&row.user_id);
        let days = ranking[&m.user_id];
        assert_eq!(row.index, (i + 1).to_string());
        assert_eq!(row.number, m.number.to_string(), "number of {}", m.user_id);
        assert_ne!(row.number, row.user_id);
        assert_eq!(row.name, m.name);
        assert_eq!(row.days, format!("{days} / {required}"));
        assert_eq!(row.verdict, verdict(days, required), "{row:?}");
        ids.insert(m.user_id);
    }
    assert_eq!(ids.len(), ranking.len(), "each participant exactly once");

    // The four statistics.
    let total = ranking.len();
    assert_eq!(stat(&browser, "total").await, total.to_string());
    assert_eq!(stat(&browser, "qualified").await, qualified.to_string());
    assert_eq!(
        stat(&browser, "unqualified").await,
        (total - qualified).to_string()
    );
    let rate = (qualified as f64 * 10_000.0 / total as f64).round() / 100.0;
    assert_eq!(stat(&browser, "rate").await, format!("{rate:.2}%"));
    browser.screenshot(&artifact("web-refund.png")).await;

    // A name with markup, if this camp has it, stays text.
    if let Some(row) = rows.iter().find(|r| member(&r.user_id).name == MARKUP_NAME) {
        assert_eq!(row.name, MARKUP_NAME);
    }
    let bold = browser
        .js(
            "return document.querySelectorAll('#refund-table b').length",
            vec![],
        )
        .await;
    assert_eq!(bold, json!(0), "member names must never become elements");

    // Filters.
    for (filter, want, count) in [
        ("unqualified", "不合格", total - qualified),
        ("qualified", "合格", qualified),
    ] {
        browser.click(&format!("[data-filter=\"{filter}\"]")).await;
        let shown = shown_refund_rows(&browser).await;
        assert_eq!(shown.len(), count, "filter {filter}");
        assert!(shown.iter().all(|r| r.verdict == want), "filter {filter}");
    }
    browser.click("[data-filter=\"all\"]").await;
    assert_eq!(shown_refund_rows(&browser).await.len(), total);

    // The qualified names, copied with one click.
    let names_shown = browser
        .js(
            "return document.getElementById('qualified-names').value",
            vec![],
        )
        .await;
    let expected_names: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict == "合格")
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(names_shown, json!(expected_names.join("、")));
    let origin = app.url("");
    browser
        .cdp(
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"] }),
        )
        .await;
    browser.click("#copy-names").await;
    browser
        .wait_js(
            "the copy confirmation",
            SLOW,
            "const t = document.getElementById('toast'); return !t.hidden && t.textContent.includes('已复制')",
        )
        .await;
    let clipboard = browser
        .js_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(done, e => done('clipboard error: ' + e))",
            vec![],
        )
        .await;
    assert_eq!(
        clipboard, names_shown,
        "the clipboard holds the qualified names"
    );

    // Downloads are plain links to the export endpoints.
    for (link, path) in [
        ("#download-csv", "refund-list.csv"),
        ("#download-xlsx", "refund-list.xlsx"),
        ("#download-text", "refund-list/text"),
    ] {
        let href = browser
            .js(
                "const a = document.querySelector(arguments[0]); return a.getAttribute('href') + '|' + a.hasAttribute('download')",
                vec![json!(link)],
            )
            .await;
        assert_eq!(
            href,
            json!(format!(
                "/api/camps/{id}/{path}?required_days={required}|true"
            ))
        );
    }

    // A real download of the CSV, then its rows.
    browser.click("#download-csv").await;
    let csv_path = wait_for_download(&browser.downloads(), ".csv").await;
    let csv = std::fs::read_to_string(&csv_path).expect("utf-8 CSV");
    let table = parse_csv(csv.trim_start_matches('\u{feff}'));
    assert_eq!(
        table
            .first()
            .map(|h| h.iter().map(|c| c.trim()).collect::<Vec<_>>()),
        Some(vec![
            "序号",
            "星球编号",
            "星球昵称",
            "打卡天数",
            "是否合格",
            "退款状态"
        ]),
        "CSV header"
    );
    let body: Vec<&Vec<String>> = table.iter().skip(1).filter(|r| r.len() > 1).collect();
    assert_eq!(body.len(), total, "one CSV row per participant");
    let by_number: HashMap<String, &SimMember> = ranking
        .keys()
        .filter_map(|&u| data.member_by_id(u))
        .map(|m| (m.number.to_string(), m))
        .collect();
    for row in body {
        let m = by_number
            .get(row[1].trim())
            .unwrap_or_else(|| panic!("CSV number {:?} is not a participant's", row[1]));
        let days = ranking[&m.user_id];
        assert_eq!(row[2], m.name);
        let shown_days: String = row[3].chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(shown_days, days.to_string(), "{row:?}");
        let ok = matches!(row[4].trim(), "合格" | "是");
        assert!(
            matches!(row[4].trim(), "合格" | "是" | "不合格" | "否"),
            "{row:?}"
        );
        assert_eq!(ok, days >= required, "{row:?}");
    }

    // At phone width the page still fits, the table stacked into cards.
    browser.set_viewport(PHONE.0, PHONE.1).await;
    let overflow = browser
        .js(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "horizontal overflow at {}px: {overflow}",
        PHONE.0
    );
    browser.screenshot(&artifact("web-refund-phone.png")).await;
    browser.set_viewport(DESKTOP.0, DESKTOP.1).await;

    // A bookmarked address builds its list on open; people who left the
    // group have no number, and the page says why.
    let departed_camp = data
        .camps
        .iter()
        .find(|c| {
            c.participants
                .iter()
                .any(|(u, _)| data.departed_by_id(*u).is_some())
        })
        .expect("a camp with former members");
    let required = departed_camp.checkin_days.min(7);
    browser
        .goto(&app.url(&format!(
            "/#/camps/{}/refund?required_days={required}",
            departed_camp.checkin_id
        )))
        .await;
    let participants = departed_camp.participants.len();
    browser
        .wait_js(
            "the bookmarked refund list",
            SLOW,
            &format!(
                "return document.querySelectorAll('#refund-table tbody tr[data-user-id]').length === {participants}"
            ),
        )
        .await;
    assert_eq!(
        browser
            .js(
                "return document.getElementById('required-days').value",
                vec![]
            )
            .await,
        json!(required.to_string())
    );
    for row in shown_refund_rows(&browser).await {
        let uid: u64 = row.user_id.parse().expect("numeric id");
        match data.member_by_id(uid) {
            Some(m) => assert_eq!(row.number, m.number.to_string()),
            None => {
                assert!(data.departed_by_id(uid).is_some(), "{row:?}");
                assert!(row.number.is_empty(), "{row:?}");
                assert!(!row.missing_reason.is_empty(), "a reason for {row:?}");
            }
        }
    }
    browser.close().await;
}
