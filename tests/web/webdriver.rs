//! A small W3C WebDriver client over `reqwest`, enough for the web tests:
//! start `chromedriver` on a free port, open a headless Chromium session,
//! navigate, click and type like a user, run scripts, take screenshots, and
//! send Chrome DevTools commands through chromedriver's `goog/cdp/execute`
//! (downloads, clipboard permission, viewport).
//!
//! Why by hand and not a client crate: WebDriver is JSON over HTTP and the
//! tests need a dozen of its commands, which the `reqwest` already built
//! speaks. Both maintained clients were measured against this workspace:
//! `fantoccini` 0.22 (no TLS) adds 32 crates (a second ICU stack, `time`,
//! `cookie`, `http` 0.2) and changes the features of shared ones, rebuilding
//! about 70 crates for the tests; `thirtyfour` 0.38 (only `reqwest`, `cdp`)
//! adds 12, but turns on serde's `rc` and serde_json's `preserve_order`, so
//! every test build would recompile the service with JSON maps ordered
//! unlike the binary that ships. This file is the whole cost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL_HINT: &str = "apt-get install -y chromium chromium-driver";

/// The first of `candidates` that is a file: `CHROME_BIN` / `CHROMEDRIVER`
/// style variables, absolute paths, then names looked up on `PATH`.
fn find(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::var_os(env)
        .map(PathBuf::from)
        .into_iter()
        .chain(candidates.iter().flat_map(|name| {
            std::iter::once(PathBuf::from(name))
                .filter(|p| p.is_absolute())
                .chain(std::env::split_paths(&path).map(move |dir| dir.join(name)))
        }))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver; panics (never skips) when one is missing,
/// telling how to install it.
fn find_programs() -> (PathBuf, PathBuf) {
    let chromium = find(
        "CHROME_BIN",
        &[
            "/usr/lib/chromium/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ],
    );
    let driver = find("CHROMEDRIVER", &["chromedriver"]);
    if let (Some(chromium), Some(driver)) = (&chromium, &driver) {
        return (chromium.clone(), driver.clone());
    }
    let missing: Vec<&str> = [
        (chromium.is_none(), "chromium (or set CHROME_BIN)"),
        (driver.is_none(), "chromedriver (or set CHROMEDRIVER)"),
    ]
    .into_iter()
    .filter_map(|(gone, what)| gone.then_some(what))
    .collect();
    let who = if std::env::var_os("CI").is_some() {
        "CI must run the web end-to-end tests; .ci/run installs them when missing."
    } else {
        "The web end-to-end tests need a real browser; they do not skip."
    };
    panic!(
        "\n\n=============================================================\n\
         WEB E2E TEST CANNOT RUN: missing {}\n\
         Install with:   {INSTALL_HINT}\n\
         {who}\n\
         =============================================================\n",
        missing.join(" and "),
    );
}

/// A headless Chromium driven through chromedriver. Dropping it ends the
/// session (closing the browser) and stops the driver.
pub struct Browser {
    http: reqwest::Client,
    port: u16,
    session: Option<String>,
    driver: Child,
    /// Profile, downloads and the driver's log live here.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium with a window of
    /// `width` × `height` CSS pixels.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let (chromium, chromedriver) = find_programs();
        let dir = tempfile::tempdir().expect("temp dir");
        let (downloads, profile) = (dir.path().join("downloads"), dir.path().join("profile"));
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let log = dir.path().join("chromedriver.log");
        let port = zsxq_test_support::free_port().expect("a free port");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (install: {INSTALL_HINT})",
                    chromedriver.display()
                )
            });
        let mut browser = Browser {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
            port,
            session: None,
            driver,
            dir,
        };
        browser.wait_for_driver().await;
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.display().to_string(),
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-dev-shm-usage",
                        "--hide-scrollbars",
                        "--force-device-scale-factor=1",
                        "--lang=zh-CN",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.display()),
                    ],
                    "prefs": {
                        "download.default_directory": downloads.display().to_string(),
                        "download.prompt_for_download": false,
                        "download.directory_upgrade": true,
                    },
                },
            }},
        });
        let session = browser
            .raw("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                panic!(
                    "chromedriver could not start Chromium: {e}\n--- chromedriver log ---\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            });
        browser.session = Some(
            session["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        );
        // Downloads land in our directory without a prompt (prefs alone are
        // not honoured by every headless build).
        browser
            .cdp(
                "Browser.setDownloadBehavior",
                json!({ "behavior": "allow", "downloadPath": downloads.display().to_string() }),
            )
            .await;
        // Still pictures: no transitions half-way through in screenshots.
        browser
            .cdp(
                "Emulation.setEmulatedMedia",
                json!({ "features": [{ "name": "prefers-reduced-motion", "value": "reduce" }] }),
            )
            .await;
        browser.set_viewport(width, height).await;
        browser
    }

    async fn wait_for_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = self.raw("GET", "/status", None).await
                && v["ready"] == true
            {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {} within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command (a body means POST); the `value` of the
    /// answer, or the driver's error.
    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let request = match (method, body) {
            ("GET", _) => self.http.get(&url),
            ("DELETE", _) => self.http.delete(&url),
            (_, body) => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let value: Value = response.json().await.map_err(|e| e.to_string())?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"].as_str().unwrap_or("");
        Err(format!(
            "{} {path}: {} — {}",
            status.as_u16(),
            value["error"].as_str().unwrap_or("?"),
            message.lines().next().unwrap_or("")
        ))
    }

    /// A command of the open session; panics with the driver's error.
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().expect("an open session");
        self.raw(method, &format!("/session/{session}{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let body = json!({ "cmd": cmd, "params": params });
        self.cmd("POST", "/goog/cdp/execute", Some(body)).await
    }

    /// Makes the page area exactly `width` × `height` (phone widths included).
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 }),
        )
        .await;
    }

    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        let url = self.cmd("GET", "/url", None).await;
        url.as_str().unwrap_or("").to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({ "script": script, "args": args });
        self.cmd("POST", "/execute/sync", Some(body)).await
    }

    /// Runs an asynchronous script: it must call `arguments[arguments.length - 1]`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({ "script": script, "args": args });
        self.cmd("POST", "/execute/async", Some(body)).await
    }

    /// Polls `script` until it returns something truthy; panics with `what`
    /// and the page's text after `timeout`.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.js(script, vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.text("main").await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- page text ---\n{}",
                    page.trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `selector` to match; the WebDriver reference of the first
    /// match.
    pub async fn find(&self, selector: &str) -> String {
        let probe = format!(
            "return document.querySelector({}) !== null",
            json!(selector)
        );
        self.wait_js(selector, Duration::from_secs(30), &probe)
            .await;
        let using = json!({ "using": "css selector", "value": selector });
        let v = self.cmd("POST", "/element", Some(using)).await;
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("element id in {v}"))
            .to_string()
    }

    /// Finds `selector` and clicks it like a user would (scrolls, real events).
    pub async fn click(&self, selector: &str) {
        let element = self.find(selector).await;
        // Centre it first: WebDriver scrolls it to the top edge, where the
        // page's sticky header would take the click.
        self.js(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center', inline: 'center'})",
            vec![json!(selector)],
        )
        .await;
        self.cmd("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    /// Clears the input at `selector` and types `text` into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector).await;
        self.cmd("POST", &format!("/element/{element}/clear"), None)
            .await;
        let keys = json!({ "text": text });
        self.cmd("POST", &format!("/element/{element}/value"), Some(keys))
            .await;
    }

    /// `textContent` of the first match of `selector` ("" when none).
    pub async fn text(&self, selector: &str) -> String {
        let text = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                vec![json!(selector)],
            )
            .await;
        text.as_str().unwrap_or("").to_string()
    }

    /// A PNG of the top of the page, saved at `path` (a passing
    /// notification is dismissed first so it hides nothing).
    pub async fn screenshot(&self, path: &Path) {
        self.js(
            "const t = document.getElementById('toast'); if (t) t.hidden = true; window.scrollTo(0, 0);",
            vec![],
        )
        .await;
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("artifact dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session, closing Chromium.
    pub async fn close(mut self) {
        if let Some(session) = self.session.take() {
            let _ = self
                .raw("DELETE", &format!("/session/{session}"), None)
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reached `close`: end the session with a plain
        // blocking request, so Chromium does not outlive the test.
        if let Some(session) = self.session.take()
            && let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with padding, whitespace ignored) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text
        .bytes()
        .filter_map(|c| ALPHABET.iter().position(|&a| a == c))
    {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("iVBORw0K"), b"\x89PNG\r\n");
    assert_eq!(base64_decode("aGk=\n"), b"hi");
}
