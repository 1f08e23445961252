//! The cache page syncs with the admin token (asked for, kept for the
//! session only) and clears after a confirmation; the members page pages,
//! sorts and looks members up by number and by user id.

use serde_json::json;
use zsxq_test_support::ADMIN_TOKEN;

use crate::webdriver::Browser;
use crate::{
    BROWSER, DESKTOP, MARKUP_NAME, SLOW, artifact, refuse_then_give_token, spawn_demo, stat,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_page_syncs_with_the_admin_token_and_members_page_looks_up_numbers() {
    let _one_browser = BROWSER.lock().await;
    let app = spawn_demo().await;
    let data = app.sim.data.clone();
    let members = data.members.len();
    let browser = Browser::launch(DESKTOP.0, DESKTOP.1).await;
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
    assert_eq!(stat(&browser, "last_sync_time").await, "从未同步");
    assert!(stat(&browser, "cache_hit_rate").await.ends_with('%'));

    // Sync asks for the token; a wrong one is asked again, the right one works.
    browser.click("#sync-button").await;
    browser
        .wait_js(
            "the token dialog",
            SLOW,
            "return document.getElementById('token-dialog').open",
        )
        .await;
    refuse_then_give_token(&browser, "not-the-admin-token", ADMIN_TOKEN).await;
    wait_count(members).await;
    browser
        .wait_js(
            "the sync report",
            SLOW,
            "return document.getElementById('sync-result').textContent.includes('同步完成')",
        )
        .await;
    assert_ne!(stat(&browser, "last_sync_time").await, "从未同步");
    let calls: u64 = stat(&browser, "upstream_calls")
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
    ask_to_clear(&browser).await;
    browser.click("#confirm-cancel").await;
    assert_eq!(
        app.stats().await.data()["cached_users_count"],
        json!(members)
    );
    ask_to_clear(&browser).await;
    browser.click("#confirm-ok").await;
    wait_count(0).await;
    assert!(browser.text("#clear-result").await.contains("已清空"));
    browser.close().await;
}

/// Clicks "clear" and waits for the confirmation it asks first.
async fn ask_to_clear(browser: &Browser) {
    browser.click("#clear-button").await;
    browser
        .wait_js(
            "the confirmation",
            SLOW,
            "return document.getElementById('confirm-dialog').open",
        )
        .await;
}
