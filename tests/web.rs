//! The operator's web page, end to end, in a real headless Chromium.
//!
//! Each browser test starts what `zsxq-cache demo` starts — the simulator
//! and the service on port 0 with the embedded store and an admin token (the
//! `Setup` of `tests/api/helpers.rs`, reused as is) — then drives Chromium
//! through chromedriver (`web/webdriver.rs` says why by hand) like an
//! operator: clicks, typing, a real file download. Expected values come from
//! the simulator's own data, never from the service under test.
//!
//! Chromium and chromedriver must be installed (`apt-get install -y chromium
//! chromium-driver`; `.ci/run` does it): without them these tests fail with
//! that instruction, in CI and locally alike. Screenshots go to
//! `test-artifacts/` (gitignored): `web-refund.png`, `web-refund-phone.png`,
//! `web-camps.png`, `web-members.png`, `web-cache.png`.

#[path = "web/webdriver.rs"]
mod webdriver;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use webdriver::Browser;
use zsxq_sim::{BENCHMARK_PARTICIPANTS, CampScope, SimMember};
use zsxq_test_support::{ADMIN_TOKEN, TestApp};

/// One browser at a time: two cores run one Chromium well, three badly.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLOW: Duration = Duration::from_secs(60);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// The member whose name is markup; the simulator always creates it.
const MARKUP_NAME: &str = "<b>加粗</b>小张";

fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-artifacts")
        .join(name)
}

/// The service and simulator, with upstream calls slow enough that a cold
/// refund list takes a visible moment to build.
async fn spawn_demo() -> TestApp {
    let mut setup = TestApp::builder();
    setup.sim.latency_ms = 15;
    setup.spawn().await
}

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
    let stat = |key: &'static str| {
        let browser = &browser;
        async move {
            browser
                .text(&format!("[data-stat=\"{key}\"] .stat-value"))
                .await
        }
    };
    let total = ranking.len();
    assert_eq!(stat("total").await, total.to_string());
    assert_eq!(stat("qualified").await, qualified.to_string());
    assert_eq!(stat("unqualified").await, (total - qualified).to_string());
    let rate = (qualified as f64 * 10_000.0 / total as f64).round() / 100.0;
    assert_eq!(stat("rate").await, format!("{rate:.2}%"));
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
        Some(vec!["序号", "星球编号", "星球昵称", "打卡天数", "是否合格"]),
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

/// Waits until a finished file ending in `ext` is in `dir`.
async fn wait_for_download(dir: &Path, ext: &str) -> PathBuf {
    let deadline = Instant::now() + SLOW;
    loop {
        let found = std::fs::read_dir(dir)
            .expect("downloads dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(ext));
        if let Some(path) = found
            && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
        {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no {ext} download in {} after {SLOW:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// RFC 4180 CSV: quoted fields may hold commas, quotes ("") and newlines.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn the_csv_reader_handles_quotes_commas_and_crlf() {
    let rows = parse_csv("a,\"b,\"\"c\"\"\"\r\n1,\"x\ny\"\n");
    assert_eq!(rows, vec![vec!["a", "b,\"c\""], vec!["1", "x\ny"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_page_syncs_with_the_admin_token_and_members_page_looks_up_numbers() {
    let _one_browser = BROWSER.lock().await;
    let app = spawn_demo().await;
    let data = app.sim.data.clone();
    let members = data.members.len();
    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;
    let stat = |key: &'static str| {
        let browser = &browser;
        async move {
            browser
                .text(&format!("[data-stat=\"{key}\"] .stat-value"))
                .await
        }
    };
    let wait_count = |n: usize| {
        let browser = &browser;
        async move {
            browser
                .wait_js(
                    &format!("{n} cached members on the cache page"),
                    SLOW,
                    &format!(
                        "const e = document.querySelector('[data-stat=\"cached_users_count\"] .stat-value');
                         return e && e.textContent === {}",
                        json!(n.to_string())
                    ),
                )
                .await;
        }
    };

    // A fresh cache: the stats are there, nothing cached, never synced.
    browser.goto(&app.url("/#/cache")).await;
    wait_count(0).await;
    assert_eq!(stat("last_sync_time").await, "从未同步");
    assert!(stat("cache_hit_rate").await.ends_with('%'));

    // Sync asks for the token; a wrong one is asked again, the right one works.
    browser.click("#sync-button").await;
    browser
        .wait_js(
            "the token dialog",
            SLOW,
            "return document.getElementById('token-dialog').open",
        )
        .await;
    browser
        .type_into("#token-input", "not-the-admin-token")
        .await;
    browser.click("#token-ok").await;
    browser
        .wait_js(
            "the token dialog, again, saying the token was wrong",
            SLOW,
            "return document.getElementById('token-dialog').open && !document.getElementById('token-error').hidden",
        )
        .await;
    browser.type_into("#token-input", ADMIN_TOKEN).await;
    browser.click("#token-ok").await;
    wait_count(members).await;
    browser
        .wait_js(
            "the sync report",
            SLOW,
            "return document.getElementById('sync-result').textContent.includes('同步完成')",
        )
        .await;
    assert_ne!(stat("last_sync_time").await, "从未同步");
    let calls: u64 = stat("upstream_calls")
        .await
        .replace(',', "")
        .parse()
        .expect("a count of upstream calls");
    assert!(calls > 0);
    // The token is kept for the session (and only there): no second prompt.
    let kept = browser
        .js(
            "return sessionStorage.getItem('zsxq-cache.admin-token')",
            vec![],
        )
        .await;
    assert_eq!(kept, json!(ADMIN_TOKEN));
    let stored = browser.js("return localStorage.length", vec![]).await;
    assert_eq!(stored, json!(0), "nothing persists beyond the session");
    browser.screenshot(&artifact("web-cache.png")).await;

    // Members: first page by number, the markup name as text.
    browser.click("a[data-nav=\"members\"]").await;
    browser
        .wait_js(
            "the member table",
            SLOW,
            "return document.querySelectorAll('#members-table tbody tr[data-user-id]').length === 50",
        )
        .await;
    assert!(
        browser
            .text("#members-summary")
            .await
            .contains(&format!("共 {members} 人"))
    );
    let first_numbers = || async {
        browser
            .js(
                "return [...document.querySelectorAll('#members-table tbody .member-no')].map(e => e.textContent)",
                vec![],
            )
            .await
    };
    let want: Vec<String> = data
        .members
        .iter()
        .take(50)
        .map(|m| m.number.to_string())
        .collect();
    assert_eq!(first_numbers().await, json!(want));
    let markup = data
        .members
        .iter()
        .find(|m| m.name == MARKUP_NAME)
        .expect("the simulator's markup name");
    let shown = browser
        .js(
            "const tr = document.querySelector(`#members-table tr[data-user-id=\"${arguments[0]}\"]`);
             return tr && tr.querySelector('.name').textContent",
            vec![json!(markup.user_id.to_string())],
        )
        .await;
    assert_eq!(shown, json!(MARKUP_NAME));
    assert_eq!(
        browser
            .js(
                "return document.querySelectorAll('#members-table b').length",
                vec![]
            )
            .await,
        json!(0)
    );

    // Sorting by number, descending: the largest numbers first.
    browser.click("th[data-sort=\"number\"]").await;
    browser
        .wait_js(
            "descending order in the address",
            SLOW,
            "return location.hash.includes('order=desc') && document.querySelectorAll('#members-table tbody tr[data-user-id]').length === 50",
        )
        .await;
    let want: Vec<String> = data
        .members
        .iter()
        .rev()
        .take(50)
        .map(|m| m.number.to_string())
        .collect();
    assert_eq!(first_numbers().await, json!(want));

    // Lookup by number, then by user id.
    let someone = &data.members[members / 3];
    browser
        .type_into("#lookup-input", &someone.number.to_string())
        .await;
    browser.click("#lookup-button").await;
    browser
        .wait_js(
            "the member card",
            SLOW,
            "return document.getElementById('member-card')",
        )
        .await;
    assert_eq!(
        browser.text("#member-number").await,
        someone.number.to_string()
    );
    assert_eq!(browser.text("#member-name").await, someone.name);
    assert_eq!(
        browser.text("#member-card [data-field=\"user_id\"]").await,
        someone.user_id.to_string()
    );
    browser.screenshot(&artifact("web-members.png")).await;
    let other = &data.members[members / 2];
    browser.click("[data-mode=\"user_id\"]").await;
    browser
        .type_into("#lookup-input", &other.user_id.to_string())
        .await;
    browser.click("#lookup-button").await;
    let number = other.number.to_string();
    browser
        .wait_js(
            "the card of the member looked up by id",
            SLOW,
            &format!(
                "const e = document.getElementById('member-number'); return e && e.textContent === {}",
                json!(number)
            ),
        )
        .await;
    assert_eq!(browser.text("#member-name").await, other.name);

    // Clearing asks first; cancelling keeps everything, confirming empties.
    browser.click("a[data-nav=\"cache\"]").await;
    wait_count(members).await;
    browser.click("#clear-button").await;
    browser
        .wait_js(
            "the confirmation",
            SLOW,
            "return document.getElementById('confirm-dialog').open",
        )
        .await;
    browser.click("#confirm-cancel").await;
    assert_eq!(
        app.stats().await.data()["cached_users_count"],
        json!(members)
    );
    browser.click("#clear-button").await;
    browser
        .wait_js(
            "the confirmation",
            SLOW,
            "return document.getElementById('confirm-dialog').open",
        )
        .await;
    browser.click("#confirm-ok").await;
    wait_count(0).await;
    assert!(browser.text("#clear-result").await.contains("已清空"));
    browser.close().await;
}

/// The read token of the READ_TOKEN run.
const READ: &str = "read-token-for-the-page-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_read_token_the_page_asks_once_and_lists_and_downloads_with_it() {
    let _one_browser = BROWSER.lock().await;
    let mut setup = TestApp::builder().var("READ_TOKEN", READ);
    setup.sim.latency_ms = 15;
    let app = setup.spawn().await;
    let data = app.sim.data.clone();
    let camp = data.benchmark_camp().expect("the benchmark camp");
    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;
    let dialog_open = "return document.getElementById('token-dialog').open";

    // The page itself is open; its data asks for the token, once.
    browser.goto(&app.url("/")).await;
    browser
        .wait_js("the read-token dialog", SLOW, dialog_open)
        .await;
    assert_eq!(browser.text("#token-title").await, "访问令牌");
    assert!(browser.text("#token-hint").await.contains("READ_TOKEN"));
    browser
        .type_into("#token-input", "not-the-read-token-000")
        .await;
    browser.click("#token-ok").await;
    browser
        .wait_js(
            "the dialog again, saying the token was wrong",
            SLOW,
            "return document.getElementById('token-dialog').open && !document.getElementById('token-error').hidden",
        )
        .await;
    browser.type_into("#token-input", READ).await;
    browser.click("#token-ok").await;
    let card = format!("a.camp-card[data-checkin-id=\"{}\"]", camp.checkin_id);
    browser.find(&card).await;
    assert_eq!(
        browser
            .js(
                "return sessionStorage.getItem('zsxq-cache.read-token')",
                vec![]
            )
            .await,
        json!(READ)
    );
    assert_eq!(
        browser.js("return localStorage.length", vec![]).await,
        json!(0)
    );

    // The refund list and its download work with the kept token, no prompt.
    browser.click(&card).await;
    let total = camp.participants.len();
    browser
        .wait_js(
            "the refund list behind the token",
            SLOW,
            &format!(
                "return document.querySelectorAll('#refund-table tbody tr[data-user-id]').length === {total}"
            ),
        )
        .await;
    let asked_again = browser.js(dialog_open, vec![]).await;
    assert_eq!(asked_again, json!(false), "the token is asked for once");
    browser.click("#download-csv").await;
    let csv_path = wait_for_download(&browser.downloads(), ".csv").await;
    let csv = std::fs::read_to_string(&csv_path).expect("utf-8 CSV");
    let table = parse_csv(csv.trim_start_matches('\u{feff}'));
    assert_eq!(
        table[0][1].trim(),
        "星球编号",
        "a CSV, not a refusal: {csv}"
    );
    let rows = table.iter().skip(1).filter(|r| r.len() > 1).count();
    assert_eq!(rows, total, "one CSV row per participant");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_come_from_the_service_with_strict_headers() {
    let app = spawn_demo().await;
    let page = app.http.get(app.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    let etag = header(&page, "etag");
    let html = page.text().await.expect("html");
    assert!(html.contains("<html lang=\"zh-CN\">"));

    // Every asset the page names is served, typed and cacheable.
    let mut links = Vec::new();
    for part in html.split("\"/assets/").skip(1) {
        let link = format!("/assets/{}", part.split('"').next().unwrap_or(""));
        if !links.contains(&link) {
            links.push(link);
        }
    }
    assert!(
        links.iter().any(|l| l.starts_with("/assets/app.js?v=")),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l.starts_with("/assets/app.css?v=")),
        "{links:?}"
    );
    for link in &links {
        let r = app.http.get(app.url(link)).send().await.expect("asset");
        assert_eq!(r.status(), 200, "{link}");
        assert!(header(&r, "cache-control").contains("immutable"), "{link}");
        assert!(!header(&r, "etag").is_empty(), "{link}");
        let want = match link.split('?').next().unwrap_or("") {
            "/assets/app.js" => "text/javascript; charset=utf-8",
            "/assets/app.css" => "text/css; charset=utf-8",
            _ => "image/svg+xml",
        };
        assert_eq!(header(&r, "content-type"), want, "{link}");
    }

    // Revalidation answers 304; HEAD works; an unknown asset is a 404.
    let again = app
        .http
        .get(app.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("GET / again");
    assert_eq!(again.status(), 304);
    let head = app.http.head(app.url("/")).send().await.expect("HEAD /");
    assert_eq!(head.status(), 200);
    let missing = app
        .http
        .get(app.url("/assets/nope.js"))
        .send()
        .await
        .expect("missing asset");
    assert_eq!(missing.status(), 404);
    // The API keeps its JSON 404 for unknown paths.
    app.get("/api/nope").await.assert_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_puts_a_banner_on_the_page_that_says_what_to_renew() {
    let _one_browser = BROWSER.lock().await;
    let app = TestApp::builder()
        .var("ZSXQ_ACCESS_TOKEN", "an-expired-token-value")
        .spawn()
        .await;
    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;
    // The camps page asks the upstream, which rejects the token.
    browser.goto(&app.url("/#/camps")).await;
    browser
        .wait_js(
            "the token notice",
            SLOW,
            "const n = document.querySelector('#service-notices [data-notice=\"token_rejected\"]');
             return n && !n.closest('[hidden]') && n.textContent.includes('token rejected since')",
        )
        .await;
    let text = browser
        .text("#service-notices [data-notice=\"token_rejected\"]")
        .await;
    assert!(
        text.contains("令牌") && text.contains("ZSXQ_ACCESS_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("an-expired-token-value"));
    browser
        .screenshot(&artifact("web-token-rejected.png"))
        .await;
    browser.close().await;
}
