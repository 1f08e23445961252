//! A small W3C WebDriver client over `reqwest`, enough for the web tests:
//! start `chromedriver` on a free port, open a headless Chromium session,
//! navigate, find and click elements, type, run scripts, take screenshots,
//! and send Chrome DevTools commands through chromedriver's
//! `goog/cdp/execute` extension (downloads, clipboard permission).
//!
//! Why not a client crate: WebDriver is JSON over HTTP and the tests need a
//! dozen of its commands; `reqwest` (already a dependency) speaks it. The
//! maintained client, `fantoccini`, even without its TLS features adds about
//! 35 crates to the build (a second ICU stack, `time`, `cookie`, `hyper`
//! glue) and churns `Cargo.lock` while other branches edit it; driving CDP
//! directly would need a WebSocket crate. This file is the whole cost.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const INSTALL_HINT: &str = "apt-get install -y chromium chromium-driver";

/// Where Chromium and chromedriver are, or a loud explanation of what is missing.
pub struct Programs {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Finds the browser and the driver: `CHROME_BIN` / `CHROMEDRIVER` first,
/// then the usual Debian paths and `PATH`. Panics (never skips) when one is
/// missing, telling how to install it.
pub fn find_programs() -> Programs {
    let chromium = from_env("CHROME_BIN")
        .or_else(|| existing("/usr/lib/chromium/chromium"))
        .or_else(|| on_path(&["chromium", "chromium-browser", "google-chrome"]));
    let chromedriver = from_env("CHROMEDRIVER").or_else(|| on_path(&["chromedriver"]));
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Programs {
            chromium,
            chromedriver,
        },
        (chromium, driver) => {
            let mut missing = Vec::new();
            if chromium.is_none() {
                missing.push("chromium (or set CHROME_BIN)");
            }
            if driver.is_none() {
                missing.push("chromedriver (or set CHROMEDRIVER)");
            }
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
    }
}

fn from_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

fn existing(path: &str) -> Option<PathBuf> {
    Some(PathBuf::from(path)).filter(|p| p.is_file())
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A free local port: bound, read, released (the driver binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A headless Chromium driven through chromedriver. Dropping it ends the
/// session (closing the browser) and stops the driver.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    port: u16,
    session: Option<String>,
    driver: Child,
    /// Profile, downloads and the driver's log live here.
    dir: tempfile::TempDir,
}

/// An element reference of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium with a window of
    /// `width` × `height` CSS pixels.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let programs = find_programs();
        let dir = tempfile::tempdir().expect("temp dir");
        let downloads = dir.path().join("downloads");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let driver = Command::new(&programs.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (install: {INSTALL_HINT})",
                    programs.chromedriver.display()
                )
            });
        let mut browser = Browser {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("http client"),
            base: format!("http://127.0.0.1:{port}"),
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
                    "binary": programs.chromium.display().to_string(),
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
        let answer = browser.raw("POST", "/session", Some(caps)).await;
        let session = match answer {
            Ok(v) => v["sessionId"].as_str().map(str::to_string),
            Err(e) => panic!(
                "chromedriver could not start Chromium: {e}\n--- chromedriver log ---\n{}",
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        browser.session = Some(session.expect("a session id"));
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

    /// One WebDriver command; the `value` of the answer, or the driver's error.
    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let value: Value = response.json().await.map_err(|e| e.to_string())?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{} {path}: {} — {}",
                status.as_u16(),
                value["error"].as_str().unwrap_or("?"),
                value["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let session = self.session.as_deref().expect("an open session");
        self.raw(method, &format!("/session/{session}{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
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
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an asynchronous script: it must call `arguments[arguments.length - 1]`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something truthy; panics with `what`
    /// and the last value after `timeout`.
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
                let page = self
                    .js("return document.querySelector('main').textContent", vec![])
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- page text ---\n{}",
                    page.as_str().unwrap_or("").trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `selector` to match, then returns the first match.
    pub async fn find(&self, selector: &str) -> Element {
        let probe = format!(
            "return document.querySelector({}) !== null",
            Value::String(selector.to_string())
        );
        self.wait_js(selector, Duration::from_secs(30), &probe)
            .await;
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await;
        Element(
            v[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("element id in {v}"))
                .to_string(),
        )
    }

    /// Finds `selector` and clicks it like a user would (scrolls, real events).
    pub async fn click(&self, selector: &str) {
        let e = self.find(selector).await;
        // Centre it first: WebDriver scrolls it to the top edge, where the
        // page's sticky header would take the click.
        self.js(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center', inline: 'center'})",
            vec![json!(selector)],
        )
        .await;
        self.cmd("POST", &format!("/element/{}/click", e.0), None)
            .await;
    }

    /// Clears the input at `selector` and types `text` into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let e = self.find(selector).await;
        self.cmd("POST", &format!("/element/{}/clear", e.0), None)
            .await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// `textContent` of the first match of `selector` ("" when none).
    pub async fn text(&self, selector: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
            vec![json!(selector)],
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
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
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with padding, whitespace ignored) to bytes.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
