//! The files in `deploy/` are exercised, not just shipped: the systemd unit passes `systemd-analyze verify` and its
//! security review, the alert rules pass `promtool check rules` and their
//! unit tests, the Grafana dashboard parses and queries only series that
//! `/metrics` really exposes (its PromQL checked by promtool too), and two
//! replicas serve behind the shipped nginx config — over TLS with a
//! certificate made for the test (`openssl req -x509`, trusted by the test's
//! client only), port 80 redirecting, `limit_req` refusing past its bursts —
//! fail over when one dies and pass request ids through.
//!
//! The tools come from Debian packages (`systemd`, `prometheus` for
//! promtool, `nginx`, `openssl`), which `.ci/run` installs. A test whose tool is
//! missing says so and checks what it can without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fleet::{lookups, start_fleet};
use zsxq_test_support::{Service, StoreKind, TestApp, free_port};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// Whether `tool` runs here (`arg` is its harmless version flag).
fn have(tool: &str, arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!(
            "[deploy] {tool} is not installed: that part of the check is skipped (.ci/run installs it)"
        );
    }
    found
}

/// Runs a command; returns success, stdout and stderr.
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces `from` by `to` in `text`, insisting it is there: a deploy file
/// that changed under the test must break it, not silently skip a rewrite.
fn rewrite(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in the deploy file");
    text.replace(from, to)
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("zsxq-cache@.service");
    for needed in [
        "EnvironmentFile=/etc/zsxq-cache/production.env",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/zsxq-cache",
        "Restart=on-failure",
        "Environment=PORT=%i",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    if !have("systemd-analyze", "--version") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // The real binary where the unit expects the installed one, so verify
    // can check ExecStart; the instance name is the port.
    let unit = rewrite(
        &unit,
        "ExecStart=/usr/local/bin/zsxq-cache",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_zsxq-cache")),
    );
    let path = dir.path().join("zsxq-cache@3013.service");
    std::fs::write(&path, unit).expect("write");
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(ok && err.trim().is_empty(), "verify: {out}{err}");
    let (_, out, err) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path));
    let level = format!("{out}{err}")
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for zsxq-cache@3013.service:")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or_else(|| panic!("no exposure level in: {out}{err}"));
    println!(
        "[deploy] systemd-analyze verify: clean; security exposure {level} (0 = locked down, 10 = open)"
    );
    assert!(level <= 2.0, "exposure {level}");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = read("prometheus/alerts.yml");
    for alert in [
        "ZsxqCacheHitRateLow",
        "ZsxqUpstreamCallsHigh",
        "ZsxqRedisUnreachable",
        "ZsxqUpstreamRefusing",
        "ZsxqTokenRejected",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    if !have("promtool", "--version") {
        return;
    }
    let dir = deploy("prometheus");
    let (ok, out, err) = run(Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir));
    assert!(ok, "{out}{err}");
    println!("[deploy] promtool: alerts.yml checks, alerts.test.yml passes");
}

/// Every sample name a `/metrics` exposition can carry, from its `# TYPE`
/// lines (families not yet incremented have no samples but are declared).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

/// The `zsxq_…` metric names used in `text`.
fn used_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("zsxq_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_query_only_series_the_service_exposes() {
    let dashboard: Value =
        serde_json::from_str(&read("grafana/zsxq-cache.json")).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "zsxq-cache");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "unique ids");
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(panel["gridPos"]["w"].as_u64().is_some());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // A live replica (Redis, fleet budget on) after a little traffic.
    let fleet = start_fleet(StoreKind::Redis, 1, 20, &[]).await;
    let (right, _) = lookups(&fleet, &[(0, 1), (0, 1)]).await;
    assert_eq!(right, 2);
    let exposed = exposed_names(&fleet.exposition(0).await);
    let rules: String = read("prometheus/alerts.yml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [("the dashboard", exprs.join("\n")), ("alerts.yml", rules)] {
        let used = used_names(&text);
        assert!(!used.is_empty());
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{what} queries series /metrics does not expose: {unknown:?}"
        );
    }

    // The PromQL itself, with Grafana's variables filled in, through
    // promtool's parser (as recording rules).
    if !have("promtool", "--version") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("quoted")
        ));
    }
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).expect("write");
    let (ok, out, err) = run(Command::new("promtool").args(["check", "rules"]).arg(&path));
    assert!(ok, "{out}{err}");
    println!(
        "[deploy] dashboard: {} panels, {} queries over {} exposed series names; promtool parses them all",
        panels.len(),
        exprs.len(),
        exposed.len()
    );
}

/// A running nginx, stopped (gracefully, then for good) when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The name the shipped site file serves, as production.env.example's
/// ALLOWED_HOSTS says.
const SITE: &str = "zsxq-cache.example.com";

/// The read token the replicas of the deploy test require.
const READ: &str = "deploy-read-token-0123456789";

/// A self-signed certificate for [`SITE`] in `dir`: (certificate, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("site.crt"), dir.join("site.key"));
    let (ok, out, err) = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={SITE}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{SITE}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    assert!(ok, "openssl req -x509: {out}{err}");
    (crt, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_the_shipped_nginx_config_share_the_load_and_fail_over() {
    if !have("nginx", "-v") || !have("openssl", "version") {
        return;
    }
    let env = TestApp::builder()
        .store(StoreKind::Redis)
        .members(60)
        .var("FLEET_SIZE_HINT", "2")
        .var("LOG_FORMAT", "json")
        .var("ALLOWED_HOSTS", SITE)
        .var("READ_TOKEN", READ)
        .environment()
        .await
        .expect("environment");
    let (sim, dir) = (&env.sim, env.dir());
    let env_example = read("production.env.example");
    assert!(
        env_example.contains(&format!("ALLOWED_HOSTS={SITE}")),
        "production.env.example names the site nginx serves"
    );
    let mut a = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let b = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;

    // The shipped site file, with the test's ports and paths, inside a
    // minimal main configuration.
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("dir");
    let prefix = nginx_dir.display().to_string();
    let (crt, key) = self_signed(&nginx_dir);
    let (http_port, https_port) = (
        free_port().expect("a free port"),
        free_port().expect("a free port"),
    );
    let mut site = read("nginx.conf");
    site = rewrite(&site, "127.0.0.1:3013", &a.addr.to_string());
    site = rewrite(&site, "127.0.0.1:3014", &b.addr.to_string());
    site = rewrite(
        &site,
        "listen 80;",
        &format!("listen 127.0.0.1:{http_port};"),
    );
    site = rewrite(
        &site,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{https_port} ssl;"),
    );
    site = rewrite(
        &site,
        "/etc/nginx/tls/zsxq-cache.example.com.crt",
        &crt.display().to_string(),
    );
    site = rewrite(
        &site,
        "/etc/nginx/tls/zsxq-cache.example.com.key",
        &key.display().to_string(),
    );
    site = rewrite(&site, "/var/log/nginx", &prefix);
    std::fs::write(nginx_dir.join("zsxq-cache.conf"), site).expect("write");
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n  \
         fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  \
         include {prefix}/zsxq-cache.conf;\n}}\n"
    );
    let conf = nginx_dir.join("nginx.conf");
    std::fs::write(&conf, main).expect("write");
    let nginx_args = |cmd: &mut Command| {
        cmd.arg("-p")
            .arg(&nginx_dir)
            .arg("-e")
            .arg(nginx_dir.join("error.log"))
            .arg("-c")
            .arg(&conf);
    };
    let mut check = Command::new("nginx");
    nginx_args(&mut check);
    let (ok, out, err) = run(check.arg("-t"));
    assert!(ok, "nginx -t: {out}{err}");
    let mut serve = Command::new("nginx");
    nginx_args(&mut serve);
    let _nginx = Nginx(
        serve
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts"),
    );
    // The client trusts the test's own certificate (and nothing else new),
    // and reaches the site's name at nginx's TLS port.
    let pem = std::fs::read(&crt).expect("certificate");
    let tls_addr = std::net::SocketAddr::from(([127, 0, 0, 1], https_port));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .resolve(SITE, tls_addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let front = format!("https://{SITE}:{https_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{front}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain HTTP only redirects to HTTPS, keeping the address.
    let plain = http
        .get(format!("http://127.0.0.1:{http_port}/api/users/1?x=1"))
        .header("host", SITE)
        .send()
        .await
        .expect("port 80 answers");
    assert_eq!(plain.status(), 301);
    assert_eq!(
        plain.headers()["location"],
        format!("https://{SITE}/api/users/1?x=1").as_str()
    );
    // A client that does not trust the certificate gets nowhere.
    let stranger = reqwest::Client::builder()
        .resolve(SITE, tls_addr)
        .build()
        .expect("client");
    assert!(
        stranger
            .get(format!("{front}/healthz"))
            .send()
            .await
            .is_err()
    );
    // The read token is needed through nginx too.
    let anonymous = http
        .get(format!("{front}/api/users"))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), 401);

    let lookup = |i: usize, id: Option<&'static str>| {
        let m = &sim.data.members[i];
        let mut req = http
            .get(format!("{front}/api/users/{}", m.user_id))
            .bearer_auth(READ);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        let number = m.number;
        async move {
            let resp = req.send().await.expect("through nginx");
            let echoed = resp.headers().get("x-request-id").cloned();
            let body: Value = resp.json().await.expect("json");
            (body["data"]["number"].as_u64() == Some(number), echoed)
        }
    };
    let ready: Value = http
        .get(format!("{front}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["data"]["upstream"]["fleet"], "shared", "{ready}");
    let mut right = 0;
    for i in 0..20 {
        right += usize::from(lookup(i, None).await.0);
    }
    assert_eq!(right, 20);
    let (ok, echoed) = lookup(20, Some("via-nginx-0042")).await;
    assert!(ok);
    assert_eq!(echoed.expect("echoed"), "via-nginx-0042");
    let (_, made_up) = lookup(21, None).await;
    let made_up = made_up.expect("an id").to_str().expect("ascii").to_string();
    assert!(
        made_up.len() == 32 && made_up.bytes().all(|b| b.is_ascii_hexdigit()),
        "nginx's $request_id reaches the replica and comes back: {made_up}"
    );
    let metrics = http
        .get(format!("{front}/metrics"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        metrics.status(),
        403,
        "/metrics is not served through the balancer"
    );

    // Both replicas took a share.
    let served = |addr: std::net::SocketAddr| {
        let http = reqwest::Client::new();
        async move {
            let text = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("body");
            text.lines()
                .filter(|l| {
                    l.starts_with("zsxq_http_requests_total{route=\"/api/users/{user_id}\"")
                        && l.contains("status=\"200\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let (on_a, on_b) = (served(a.addr).await, served(b.addr).await);
    assert!(on_a > 0.0 && on_b > 0.0, "a {on_a}, b {on_b}");
    assert_eq!(on_a + on_b, 22.0);

    // One replica dies: nginx retries on the other, nobody notices.
    a.kill();
    let mut right = 0;
    for i in 22..42 {
        right += usize::from(lookup(i, None).await.0);
    }
    let access =
        std::fs::read_to_string(nginx_dir.join("zsxq-cache.access.log")).unwrap_or_default();
    println!(
        "[deploy] nginx over TLS: 22 lookups over 2 replicas (a {on_a}, b {on_b}); after killing a, {right}/20 answered; \
         access log lines with request_id=via-nginx-0042: {}",
        access.matches("request_id=via-nginx-0042").count()
    );
    assert_eq!(right, 20, "failover to the surviving replica");
    assert!(access.contains("request_id=via-nginx-0042"));
    assert!(
        b.logs().contains("\"request_id\":\"via-nginx-0042\"")
            || a.logs().contains("\"request_id\":\"via-nginx-0042\""),
        "the replica's JSON log line carries the id nginx passed"
    );

    // limit_req: the admin paths allow a burst of 5 (then 6 a minute), the
    // API a burst of 50 (then 10 a second); past them nginx answers 429 in
    // the envelope, and the replica never sees the request.
    let mut admin = Vec::new();
    for _ in 0..12 {
        let r = http
            .delete(format!("{front}/api/users/cache"))
            .send()
            .await
            .expect("answers");
        let status = r.status().as_u16();
        let retry_after = r.headers().contains_key("retry-after");
        let body: Value = r.json().await.expect("an envelope");
        assert_eq!(body["code"], status, "{body}");
        if status == 429 {
            assert!(
                retry_after && body["data"].is_null() && body["timestamp"].as_i64() > Some(0),
                "{body}"
            );
        }
        admin.push(status);
    }
    let refused = admin.iter().filter(|s| **s == 429).count();
    assert!(
        (6..=7).contains(&refused) && admin[..5].iter().all(|s| *s != 429),
        "the admin burst is 5: {admin:?}"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let req = http
            .get(format!(
                "{front}/api/users/{}",
                sim.data.members[i % 40].user_id
            ))
            .bearer_auth(READ);
        tasks.spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) });
    }
    let burst = tasks.join_all().await;
    let api_refused = burst.iter().filter(|s| **s == 429).count();
    let api_ok = burst.iter().filter(|s| **s == 200).count();
    println!(
        "[deploy] limit_req: admin {admin:?}; 150 concurrent lookups: {api_ok} answered, {api_refused} refused"
    );
    assert_eq!(api_ok + api_refused, 150, "{burst:?}");
    // (The lookups above spent part of the burst already.)
    assert!(api_refused > 0 && api_ok > 0, "{burst:?}");
}
