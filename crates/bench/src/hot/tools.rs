//! The outside tools `bench hot` measures with and against: `wrk` for
//! load, `redis-benchmark` for the floor, nginx with `proxy_cache` as the
//! baseline, and the readers of their output.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use zsxq_test_support::free_port;

use super::report::WrkFigures;

pub(super) fn check_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["wrk", "nginx", "redis-server", "redis-benchmark"]
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "bench hot needs {} on PATH; install with `apt-get install -y wrk nginx redis-server redis-tools`",
            missing.join(", ")
        )
    }
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

pub(super) async fn wait_until_up(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = http.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx with `proxy_cache` in front of one replica.
pub(super) struct Nginx {
    port: u16,
    child: Child,
}

impl Drop for Nginx {
    /// Stops the master with SIGTERM and waits for it, so it takes its
    /// workers down: after the `SIGKILL` of `kill_on_drop` alone, orphaned
    /// workers can keep running after a run, where they would skew whatever
    /// is measured next.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Nginx {
    pub(super) async fn start(dir: &Path, upstream_port: u16) -> anyhow::Result<Self> {
        let port = free_port()?;
        let root = dir.join("nginx");
        for sub in ["cache", "tmp", "logs"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Workers may run as another user when nginx starts as root.
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(dir)
            .status()
            .await;
        let conf = format!(
            r#"worker_processes auto;
worker_rlimit_nofile 65535;
user root;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    proxy_cache_path {root}/cache keys_zone=members:10m;
    upstream service {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The service answers only hosts it serves (ALLOWED_HOSTS).
            proxy_set_header Host $host;
            proxy_cache members;
            proxy_cache_valid 200 10m;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = which("nginx").context("nginx")?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let nginx = Self { port, child };
        wait_until_up(&nginx.url("/healthz")).await?;
        Ok(nginx)
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// Runs wrk and reads its figures.
pub(super) async fn wrk(url: &str, connections: u32, seconds: u64) -> anyhow::Result<WrkFigures> {
    let out = Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .args(["--timeout", "5s"])
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkFigures> {
    let mut f = WrkFigures::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            f.rps = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            f.p50_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            f.p99_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            f.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            f.errors += v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (f.rps > 0.0).then_some(f)
}

/// wrk's `512.00us`, `3.21ms`, `1.02s`.
fn duration_ms(raw: &str) -> Option<f64> {
    let (value, factor) = if let Some(v) = raw.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = raw.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = raw.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    value.trim().parse::<f64>().ok().map(|v| v * factor)
}

/// `redis-benchmark -t get`: requests per second and p50 (ms).
pub(super) async fn redis_benchmark(port: u16, connections: u32) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-t", "get", "-n", "300000", "-q", "-c"])
        .arg(connections.to_string())
        .output()
        .await
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "GET: 98039.22 requests per second, p50=0.271 msec"
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.starts_with("GET:"))
        .with_context(|| format!("reading redis-benchmark's output: {text}"))?;
    let rps = line
        .trim_start_matches("GET:")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("redis-benchmark rps")?;
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Ok((rps, p50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 10s test @ http://127.0.0.1:1/x
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us  300.00us  10.00ms   90.00%
  Latency Distribution
     50%  750.00us
     75%    1.00ms
     90%    1.20ms
     99%    2.50ms
  600000 requests in 10.00s, 400.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  60000.50
Transfer/sec:     40.00MB
";
        let f = parse_wrk(text).unwrap();
        assert_eq!(f.rps, 60000.5);
        assert!((f.p50_ms - 0.75).abs() < 1e-9);
        assert!((f.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(f.errors, 9);
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
    }
}
