//! A local `nats-server` child with JetStream, for one-machine runs and tests.
//!
//! The server writes to its own data folder with `sync_interval: always`, so a JetStream
//! acknowledgement means the message is on disk, not in a page cache.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where to find the `nats-server` binary, in order: `NATS_SERVER_BIN`, the project-local
/// install made by `deploy/install-nats.sh` (`.tools/nats/bin/nats-server` under the current
/// directory or an ancestor), then `PATH`.
pub fn locate_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let mut dir = std::env::current_dir().ok();
    while let Some(current) = dir {
        let candidate = current.join(".tools/nats/bin/nats-server");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = current.parent().map(Path::to_path_buf);
    }
    let path_var = std::env::var_os("PATH")?;
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// A running `nats-server`; killed when dropped.
pub struct LocalServer {
    child: Child,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    #[error("nats-server not found: run deploy/install-nats.sh or set NATS_SERVER_BIN")]
    NotFound,
    #[error("cannot prepare nats data folder {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server exited at start ({status}); see {log}")]
    Exited { status: String, log: PathBuf },
    #[error("nats-server did not report its port within {0:?}; see its log")]
    NoPort(Duration),
}

impl LocalServer {
    /// Starts `nats-server` with JetStream in `data_dir`. `port` 0 picks a free port.
    pub async fn start(data_dir: &Path, port: u16) -> Result<Self, LocalServerError> {
        let port_setting = if port == 0 { -1 } else { i32::from(port) };
        Self::launch(data_dir, port_setting, "", &[]).await
    }

    /// Starts `nats-server` with more configuration of the caller's (e.g. an include of
    /// `deploy/nats-accounts.conf`) and these environment variables, on a free port.
    pub async fn start_with_config(
        data_dir: &Path,
        extra_config: &str,
        environment: &[(&str, &str)],
    ) -> Result<Self, LocalServerError> {
        Self::launch(data_dir, -1, extra_config, environment).await
    }

    async fn launch(
        data_dir: &Path,
        port_setting: i32,
        extra_config: &str,
        environment: &[(&str, &str)],
    ) -> Result<Self, LocalServerError> {
        let binary = locate_binary().ok_or(LocalServerError::NotFound)?;
        let io_err = |source| LocalServerError::DataDir {
            path: data_dir.to_owned(),
            source,
        };
        let store_dir = data_dir.join("jetstream");
        let ports_dir = data_dir.join("ports");
        std::fs::create_dir_all(&store_dir).map_err(io_err)?;
        std::fs::create_dir_all(&ports_dir).map_err(io_err)?;
        // A ports file of an earlier run would be read as ours.
        for entry in std::fs::read_dir(&ports_dir).map_err(io_err)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let config_path = data_dir.join("nats-server.conf");
        let config = format!(
            "listen: \"127.0.0.1:{port_setting}\"\n\
             max_payload: 8MB\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{extra_config}\n",
            store_dir.display()
        );
        std::fs::write(&config_path, config).map_err(io_err)?;
        let log_path = data_dir.join("nats-server.log");
        let log = std::fs::File::create(&log_path).map_err(io_err)?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalServerError::Spawn { binary, source })?;
        let mut server = LocalServer { child, port: 0 };
        server.port = server.wait_for_port(&ports_dir, &log_path).await?;
        Ok(server)
    }

    async fn wait_for_port(
        &mut self,
        ports_dir: &Path,
        log_path: &Path,
    ) -> Result<u16, LocalServerError> {
        let timeout = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalServerError::Exited {
                    status: status.to_string(),
                    log: log_path.to_owned(),
                });
            }
            if let Some(port) = read_ports_file(ports_dir) {
                return Ok(port);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LocalServerError::NoPort(timeout))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Resolves when the server exits by itself: `serve` treats that as fatal.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops the server and waits for it, so its files are closed.
    pub async fn stop(mut self) {
        self.kill().await;
    }

    /// Kills the server in place (tests use this to take NATS away under a running LRS).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// nats-server writes `{"nats": ["nats://127.0.0.1:PORT"], ...}` once it listens.
fn read_ports_file(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
