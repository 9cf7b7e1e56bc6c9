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

/// A TCP link a test can cut and restore (a hub's line to the central site): connections to
/// [`Link::addr`] are forwarded to the target while the link is up; [`Link::cut`] closes every
/// open connection and refuses new ones until [`Link::restore`].
pub struct Link {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn start(target: std::net::SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link's port");
        let addr = listener.local_addr().expect("the link's address");
        let (up, _) = tokio::sync::watch::channel(true);
        let state = up.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut down = state.subscribe();
                if !*down.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Link {
            addr,
            up,
            accepting,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
