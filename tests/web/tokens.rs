//! The page behind tokens: with `READ_TOKEN` it asks once and lists and
//! downloads with the kept token; an upstream that rejects our token puts a
//! banner up that says what to renew.

use serde_json::json;
use zsxq_test_support::TestApp;

use crate::webdriver::Browser;
use crate::{
    BROWSER, DESKTOP, SLOW, artifact, parse_csv, refuse_then_give_token, wait_for_download,
};

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
    refuse_then_give_token(&browser, "not-the-read-token-000", READ).await;
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
