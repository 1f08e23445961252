//! The service binary as a child process, for what only a process has: its
//! real signal handling (SIGTERM, kill -9), its logs and its own resident
//! memory. It is configured with the variables of a [`TestEnv`], the same
//! map the in-process app reads. Output (stdout and stderr) is captured in
//! full so tests can grep it.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::TestEnv;
use crate::net::free_port;

/// How long a fresh process gets to answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many ports [`Service::start`] tries: another process can bind the
/// port between our probe and the service's bind.
const START_ATTEMPTS: usize = 3;

/// A running `serve`; killed when dropped.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn capture(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut out) = into.lock() {
                out.extend_from_slice(&buf[..n]);
            }
        }
    })
}

impl Service {
    /// Runs `program serve` with the variables of `env` and `extra` on top
    /// (`""` removes one), plus `PORT`, `HOST` and `PATH` and nothing else,
    /// in the run's directory (so no stray `.env` is read), and waits for
    /// `/healthz`. `program` is the service binary
    /// (`env!("CARGO_BIN_EXE_zsxq-cache")`) or one that serves the same way.
    pub async fn start(
        program: impl AsRef<Path>,
        env: &TestEnv,
        extra: &[(&str, String)],
    ) -> Service {
        Self::try_start(program.as_ref(), env, extra)
            .await
            .unwrap_or_else(|e| panic!("service did not start: {e}"))
    }

    /// As [`start`](Self::start), for callers that report errors themselves.
    pub async fn try_start(
        program: &Path,
        env: &TestEnv,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(program, env, extra).await {
                Ok(service) => return Ok(service),
                Err(e) => last = e,
            }
        }
        anyhow::bail!("{}: {last}", program.display())
    }

    async fn start_once(
        program: &Path,
        env: &TestEnv,
        extra: &[(&str, String)],
    ) -> Result<Service, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut cmd = env.command_with(program, extra);
        cmd.arg("serve")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(capture(out, output.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(capture(err, output.clone()));
        }
        let mut service = Service {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            output,
            readers,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!("exited with {status}: {}", service.logs()));
            }
            let ok = http
                .get(service.url("/healthz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return Ok(service);
            }
            if Instant::now() > deadline {
                service.kill();
                return Err(format!(
                    "no /healthz within {READY_TIMEOUT:?}: {}",
                    service.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers drain what is left.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything printed so far, stdout and stderr interleaved.
    pub fn logs(&self) -> String {
        self.output
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// The process's resident memory in MiB (`VmRSS`).
    pub fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
        Some(kib / 1024.0)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
