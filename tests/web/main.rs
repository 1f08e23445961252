//! The operator's web page, end to end, in a real headless Chromium.
//!
//! Each browser test starts what `zsxq-cache demo` starts — the simulator
//! and the service on port 0 with the embedded store and an admin token
//! (`TestApp::builder`) — then drives Chromium through chromedriver
//! (`webdriver.rs` says why by hand) like an operator: clicks, typing, a
//! real file download. Expected values come from
//! the simulator's own data, never from the service under test.
//!
//! Chromium and chromedriver must be installed (`apt-get install -y chromium
//! chromium-driver`; `.ci/run` does it): without them these tests fail with
//! that instruction, in CI and locally alike. Screenshots go to
//! `test-artifacts/` (gitignored): `web-refund.png`, `web-refund-phone.png`,
//! `web-camps.png`, `web-members.png`, `web-cache.png`,
//! `web-token-rejected.png`, `web-refund-marks.png`,
//! `web-refund-marks-pending.png`.

mod assets;
mod cache_page;
mod refund_marks;
mod refund_page;
mod tokens;
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use webdriver::Browser;
use zsxq_test_support::TestApp;

/// One browser at a time: two cores run one Chromium well, three badly.
pub static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const SLOW: Duration = Duration::from_secs(60);
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// The member whose name is markup; the simulator always creates it.
pub const MARKUP_NAME: &str = "<b>加粗</b>小张";

pub fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test-artifacts")
        .join(name)
}

/// The service and simulator, with upstream calls slow enough that a cold
/// refund list takes a visible moment to build.
pub async fn spawn_demo() -> TestApp {
    let mut setup = TestApp::builder();
    setup.sim.latency_ms = 15;
    setup.spawn().await
}

/// Waits until a finished file ending in `ext` is in `dir`.
pub async fn wait_for_download(dir: &Path, ext: &str) -> PathBuf {
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
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
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

/// Answers the open token dialog with `wrong`, waits for it to ask again
/// saying the token was wrong, then answers `right`.
pub async fn refuse_then_give_token(browser: &Browser, wrong: &str, right: &str) {
    browser.type_into("#token-input", wrong).await;
    browser.click("#token-ok").await;
    browser
        .wait_js(
            "the token dialog, again, saying the token was wrong",
            SLOW,
            "return document.getElementById('token-dialog').open && !document.getElementById('token-error').hidden",
        )
        .await;
    browser.type_into("#token-input", right).await;
    browser.click("#token-ok").await;
}

/// The value shown for the statistic `key` (`data-stat`).
pub async fn stat(browser: &Browser, key: &str) -> String {
    browser
        .text(&format!("[data-stat=\"{key}\"] .stat-value"))
        .await
}
