//! Refund marks on the refund list: one row marked 已退款 with a note, two
//! marked 已拒绝 in one batch, the counters and row states, the 未退款
//! filter, a reload that shows the marks from the store, and the admin token
//! asked for once in the whole session.

use serde_json::{Value, json};
use zsxq_test_support::ADMIN_TOKEN;

use crate::webdriver::Browser;
use crate::{BROWSER, DESKTOP, SLOW, artifact, spawn_demo, stat};

const NOTE: &str = "微信已转 39 元";

/// Counts the token dialog's openings from now on (`window.__tokenAsks`).
async fn count_token_asks(browser: &Browser) {
    browser
        .js(
            "const d = document.getElementById('token-dialog');
             window.__tokenAsks = 0;
             const open = d.showModal.bind(d);
             d.showModal = () => { window.__tokenAsks += 1; open(); };",
            vec![],
        )
        .await;
}

async fn token_asks(browser: &Browser) -> Value {
    browser.js("return window.__tokenAsks", vec![]).await
}

/// `(user id, refund status, shown label, note)` of every row shown, in order.
async fn shown_marks(browser: &Browser) -> Vec<(String, String, String, String)> {
    let rows = browser
        .js(
            "return [...document.querySelectorAll('#refund-table tbody tr[data-user-id]')].map(tr => [
                tr.dataset.userId,
                tr.dataset.refundStatus,
                tr.querySelector('.col-refund .refund-tag').textContent,
                (tr.querySelector('.col-refund .refund-note') || {textContent: ''}).textContent,
            ])",
            vec![],
        )
        .await;
    let rows: Vec<[String; 4]> = serde_json::from_value(rows).expect("rows");
    rows.into_iter().map(|[a, b, c, d]| (a, b, c, d)).collect()
}

/// Waits until the row of `user` shows `status`.
async fn wait_status(browser: &Browser, user: u64, status: &str) {
    browser
        .wait_js(
            &format!("row {user} marked {status}"),
            SLOW,
            &format!(
                "const tr = document.querySelector('#refund-table tr[data-user-id=\"{user}\"]');
                 return tr && tr.dataset.refundStatus === '{status}'"
            ),
        )
        .await;
}

async fn wait_for_list(browser: &Browser, rows: usize) {
    browser
        .wait_js(
            "the whole refund list with its counters",
            SLOW,
            &format!(
                "return document.querySelectorAll('#refund-table tbody tr[data-user-id]').length === {rows}
                    && document.querySelector('[data-stat=\"pending\"]')"
            ),
        )
        .await;
}

/// The three refund counters as shown: 已退款, 已拒绝, 未退款.
async fn counters(browser: &Browser) -> [String; 3] {
    [
        stat(browser, "refunded").await,
        stat(browser, "rejected").await,
        stat(browser, "pending").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_marks_are_set_one_and_in_a_batch_filtered_and_kept_over_a_reload() {
    let _one_browser = BROWSER.lock().await;
    let app = spawn_demo().await;
    let camp = app.sim.data.benchmark_camp().expect("the benchmark camp");
    let required = 7;
    let ranking = app
        .sim
        .data
        .expected_ranking(camp.checkin_id)
        .expect("ranking");
    let qualified: Vec<u64> = ranking
        .iter()
        .filter(|(_, days)| *days >= required)
        .map(|(id, _)| *id)
        .collect();
    assert!(qualified.len() > 4, "the camp has enough qualified people");
    let (a, b, c) = (qualified[0], qualified[1], qualified[2]);
    let pending = (qualified.len() - 3).to_string();

    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;
    let page = app.url(&format!(
        "/#/camps/{}/refund?required_days={required}",
        camp.checkin_id
    ));
    browser.goto(&page).await;
    wait_for_list(&browser, ranking.len()).await;
    count_token_asks(&browser).await;
    assert!(
        shown_marks(&browser)
            .await
            .iter()
            .all(|r| r.1 == "pending" && r.2 == "未退款"),
        "nothing is marked yet"
    );
    assert_eq!(
        counters(&browser).await,
        [
            "0".to_string(),
            "0".to_string(),
            qualified.len().to_string()
        ]
    );

    // One row 已退款, with a note: the admin token is asked for here.
    browser.type_into("#mark-note", NOTE).await;
    browser
        .click(&format!(
            "#refund-table tr[data-user-id=\"{a}\"] [data-mark=\"refunded\"]"
        ))
        .await;
    browser
        .wait_js(
            "the admin-token dialog",
            SLOW,
            "return document.getElementById('token-dialog').open",
        )
        .await;
    assert_eq!(browser.text("#token-title").await, "管理员令牌");
    browser.type_into("#token-input", ADMIN_TOKEN).await;
    browser.click("#token-ok").await;
    wait_status(&browser, a, "refunded").await;

    // Two rows 已拒绝 in one batch.
    for user in [b, c] {
        browser
            .click(&format!(
                "#refund-table tr[data-user-id=\"{user}\"] .row-select"
            ))
            .await;
    }
    assert_eq!(browser.text("#selected-count").await, "已选 2 人");
    browser.click("#batch-rejected").await;
    wait_status(&browser, c, "rejected").await;
    wait_status(&browser, b, "rejected").await;
    assert_eq!(browser.text("#selected-count").await, "已选 0 人");

    let expect_marked = |rows: &[(String, String, String, String)]| {
        for (id, status, label, note) in rows {
            let (want, want_label, want_note) = match id.parse::<u64>().expect("an id") {
                u if u == a => ("refunded", "已退款", NOTE),
                u if u == b || u == c => ("rejected", "已拒绝", ""),
                _ => ("pending", "未退款", ""),
            };
            assert_eq!(
                (status.as_str(), label.as_str(), note.as_str()),
                (want, want_label, want_note),
                "row {id}"
            );
        }
    };
    let rows = shown_marks(&browser).await;
    assert_eq!(rows.len(), ranking.len());
    expect_marked(&rows);
    assert_eq!(
        counters(&browser).await,
        ["1".to_string(), "2".to_string(), pending.clone()]
    );
    browser.screenshot(&artifact("web-refund-marks.png")).await;

    // 未退款: exactly the qualified rows still owed, in ranking order.
    browser.click("[data-filter=\"pending\"]").await;
    let shown: Vec<String> = shown_marks(&browser)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    let owed: Vec<String> = qualified[3..].iter().map(u64::to_string).collect();
    assert_eq!(shown, owed, "the 未退款 filter");
    browser
        .screenshot(&artifact("web-refund-marks-pending.png"))
        .await;
    assert_eq!(token_asks(&browser).await, json!(1), "asked once");

    // A reload reads the marks back from the store.
    browser.js("location.reload()", vec![]).await;
    wait_for_list(&browser, ranking.len()).await;
    count_token_asks(&browser).await;
    expect_marked(&shown_marks(&browser).await);
    assert_eq!(
        counters(&browser).await,
        ["1".to_string(), "2".to_string(), pending]
    );

    // The kept token marks c back to 未退款 without asking again.
    browser
        .click(&format!(
            "#refund-table tr[data-user-id=\"{c}\"] [data-mark=\"pending\"]"
        ))
        .await;
    wait_status(&browser, c, "pending").await;
    assert_eq!(
        counters(&browser).await,
        [
            "1".to_string(),
            "1".to_string(),
            (qualified.len() - 2).to_string()
        ]
    );
    assert_eq!(token_asks(&browser).await, json!(0), "not asked again");
    browser.close().await;
}
