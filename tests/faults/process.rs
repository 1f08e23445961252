//! The service binary as a child process: what operators run, with its real
//! signal handling, logs and files. Output (stdout and stderr) is captured in
//! full so tests can grep it.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running `zsxq-cache serve`; killed when dropped.
pub struct Service {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// The variables that point a service at `sim`: its address, its group and
/// its token. Callers add the store and whatever the test is about.
pub fn sim_vars(sim: &zsxq_sim::SimHandle) -> Vec<(&'static str, String)> {
    vec![
        ("ZSXQ_API_BASE", sim.base_url.clone()),
        ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
        ("ZSXQ_ACCESS_TOKEN", "sim-token".to_string()),
    ]
}

/// A free port on 127.0.0.1 (the OS picks; the tiny race with another
/// process binding it first is retried by [`Service::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
    /// Starts `serve` with exactly `vars` (plus `PORT`, `HOST` and `PATH`) in
    /// `workdir` (so no stray `.env` is read) and waits for `/healthz`.
    pub async fn start(workdir: &Path, vars: &[(&str, String)]) -> Service {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(workdir, vars).await {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("service did not start: {last}");
    }

    async fn try_start(workdir: &Path, vars: &[(&str, String)]) -> Result<Service, String> {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zsxq-cache"));
        cmd.arg("serve")
            .current_dir(workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(capture(out, output.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(capture(err, output.clone()));
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut service = Service {
            child,
            addr,
            output,
            readers,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
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
                return Err(format!("no /healthz within 15 s: {}", service.logs()));
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
        let status = Command::new("kill")
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
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
