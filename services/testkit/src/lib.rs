//! Test harness: a real `nats-server` on a random port in a temp dir, and `wait_until`.

use std::future::Future;
use std::time::{Duration, Instant};

pub use bus::server::{LocalOptions, LocalServer};

/// A throwaway nats-server with JetStream; its data dir and process go away on drop.
pub struct Nats {
    pub server: LocalServer,
    pub dir: tempfile::TempDir,
}

impl Nats {
    pub async fn start() -> Nats {
        let dir = tempfile::tempdir().expect("temp dir for nats");
        let server = LocalServer::start(dir.path(), 0)
            .await
            .expect("start nats-server (run deploy/install-nats.sh or set NATS_SERVER_BIN)");
        Nats { server, dir }
    }

    /// A server with other settings (a small `max_payload`, say).
    pub async fn start_with(options: LocalOptions) -> Nats {
        let dir = tempfile::tempdir().expect("temp dir for nats");
        let server = LocalServer::start_with(dir.path(), options)
            .await
            .expect("start nats-server (run deploy/install-nats.sh or set NATS_SERVER_BIN)");
        Nats { server, dir }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Kills the server and starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.server.kill().await;
        self.server
            .restart()
            .await
            .expect("nats-server starts again");
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
/// This is how tests wait for asynchronous effects: never a bare sleep.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
