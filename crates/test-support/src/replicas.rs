//! Several replicas of the service in this process, each on its own port,
//! as a load balancer would see them: the fleet tests of `tests/api` and
//! `tests/scale` start theirs here.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use zsxq_cache::config::Config;
use zsxq_cache::startup::Application;

/// Running replicas; dropping this stops them (gracefully, as SIGTERM would).
#[derive(Debug, Default)]
pub struct Replicas {
    stops: Vec<oneshot::Sender<()>>,
}

impl Replicas {
    /// Starts `n` replicas of `config` on free loopback ports; returns their
    /// addresses, in start order, and the handle that stops them.
    pub async fn start(config: &Config, n: usize) -> anyhow::Result<(Vec<SocketAddr>, Replicas)> {
        let mut addrs = Vec::with_capacity(n);
        let mut running = Replicas::default();
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let app = Application::build(config.clone(), listener).await?;
            addrs.push(app.local_addr()?);
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(app.run(async {
                let _ = stopped.await;
            }));
            running.stops.push(stop);
        }
        Ok((addrs, running))
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}
