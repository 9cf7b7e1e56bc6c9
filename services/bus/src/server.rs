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

/// How to run a local `nats-server`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// 0 picks a free port (kept for restarts).
    pub port: u16,
    /// The largest message the server accepts.
    pub max_payload: usize,
    /// A user and password every client must give (`serve`'s own server), or none.
    pub user: Option<(String, String)>,
    /// More configuration (e.g. an include of `deploy/nats-accounts.conf`).
    pub extra_config: String,
    /// Environment of the server process (passwords the extra configuration names).
    pub environment: Vec<(String, String)>,
    /// The JetStream domain (a hub node's `hub-<hub>`), or none.
    pub jetstream_domain: Option<String>,
    /// Where hub nodes connect as leaf nodes; port 0 picks a free one (kept for restarts).
    pub leaf_listen: Option<std::net::SocketAddr>,
    /// A folder of `<hub>.password` files: each is a hub's NATS user with the permissions of
    /// its leaf connection ([`crate::leaf::central_user_entry`]), re-read on
    /// [`LocalServer::reload`].
    pub hub_users_dir: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            port: 0,
            max_payload: 8 * 1024 * 1024,
            user: None,
            extra_config: String::new(),
            environment: Vec::new(),
            jetstream_domain: None,
            leaf_listen: None,
            hub_users_dir: None,
        }
    }
}

/// A running `nats-server`; killed when dropped.
pub struct LocalServer {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    options: LocalOptions,
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
    #[error("nats-server is not running")]
    NotRunning,
}

impl LocalServer {
    /// Starts `nats-server` with JetStream in `data_dir`. `port` 0 picks a free port.
    pub async fn start(data_dir: &Path, port: u16) -> Result<Self, LocalServerError> {
        Self::start_with(
            data_dir,
            LocalOptions {
                port,
                ..LocalOptions::default()
            },
        )
        .await
    }

    /// Starts `nats-server` with more configuration of the caller's (e.g. an include of
    /// `deploy/nats-accounts.conf`) and these environment variables, on a free port.
    pub async fn start_with_config(
        data_dir: &Path,
        extra_config: &str,
        environment: &[(&str, &str)],
    ) -> Result<Self, LocalServerError> {
        Self::start_with(
            data_dir,
            LocalOptions {
                extra_config: extra_config.to_owned(),
                environment: environment
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
                ..LocalOptions::default()
            },
        )
        .await
    }

    pub async fn start_with(
        data_dir: &Path,
        options: LocalOptions,
    ) -> Result<Self, LocalServerError> {
        let mut options = options;
        if let Some(listen) = options.leaf_listen.filter(|listen| listen.port() == 0) {
            // nats-server does not report a leaf port it picked; hub nodes must find it again
            // after a restart.
            let free = std::net::TcpListener::bind(listen)
                .and_then(|listener| listener.local_addr())
                .map_err(|source| LocalServerError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                })?;
            options.leaf_listen = Some(free);
        }
        let (child, port) = launch(data_dir, &options).await?;
        Ok(LocalServer {
            child,
            port,
            data_dir: data_dir.to_owned(),
            // A restart takes the same port, so clients reconnect to where they were.
            options: LocalOptions { port, ..options },
        })
    }

    /// Starts the server again after it exited (or was killed): same port, same data.
    pub async fn restart(&mut self) -> Result<(), LocalServerError> {
        let _ = self.child.kill().await;
        let (child, port) = launch(&self.data_dir, &self.options).await?;
        self.child = child;
        self.port = port;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where hub nodes connect as leaf nodes, if they may.
    pub fn leaf_addr(&self) -> Option<std::net::SocketAddr> {
        self.options.leaf_listen
    }

    /// Writes the configuration again (the hub users of `hub_users_dir` as they are now) and
    /// has the running server reload it: connections stay up.
    pub async fn reload(&self) -> Result<(), LocalServerError> {
        write_config(&self.data_dir, &self.options, self.port)?;
        let Some(pid) = self.child.id() else {
            return Err(LocalServerError::NotRunning);
        };
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await
            .map_err(|source| LocalServerError::Spawn {
                binary: PathBuf::from("kill"),
                source,
            })?;
        if !status.success() {
            return Err(LocalServerError::NotRunning);
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Resolves when the server exits by itself.
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

/// Writes a configuration file readable by its owner only (it may hold a password).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
}

/// A JSON string literal (nats-server's configuration accepts JSON strings).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Writes `nats-server.conf` in `data_dir` (mode 0600: it holds passwords). `port` 0 lets the
/// server pick one.
fn write_config(
    data_dir: &Path,
    options: &LocalOptions,
    port: u16,
) -> Result<(), LocalServerError> {
    let io_err = |source| LocalServerError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let store_dir = data_dir.join("jetstream");
    let port_setting = if port == 0 { -1 } else { i32::from(port) };
    let mut users = Vec::new();
    if let Some((user, password)) = &options.user {
        users.push(format!(
            "{{user: {}, password: {}}}",
            quoted(user),
            quoted(password)
        ));
    }
    if let Some(dir) = &options.hub_users_dir {
        users.extend(
            hub_users(dir)
                .map_err(io_err)?
                .iter()
                .map(|(hub, password)| crate::leaf::central_user_entry(hub, password)),
        );
    }
    let authorization = if users.is_empty() {
        String::new()
    } else {
        format!(
            "authorization {{\n  users: [\n    {}\n  ]\n}}\n",
            users.join("\n    ")
        )
    };
    let domain = options
        .jetstream_domain
        .as_ref()
        .map(|domain| format!("  domain: {}\n", quoted(domain)))
        .unwrap_or_default();
    let leafnodes = options
        .leaf_listen
        .map(|listen| {
            format!(
                "leafnodes {{\n  listen: {}\n}}\n",
                quoted(&listen.to_string())
            )
        })
        .unwrap_or_default();
    let config = format!(
        "listen: \"127.0.0.1:{port_setting}\"\n\
         max_payload: {}\n\
         jetstream {{\n  store_dir: {}\n  sync_interval: always\n{domain}}}\n{authorization}{leafnodes}{}\n",
        options.max_payload,
        quoted(&store_dir.display().to_string()),
        options.extra_config,
    );
    write_private(&data_dir.join("nats-server.conf"), &config).map_err(io_err)
}

/// The hubs of `dir` (`<hub>.password` files) and their passwords, by hub id.
fn hub_users(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut users = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(users),
        Err(err) => return Err(err),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(hub) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".password"))
        else {
            continue;
        };
        if crate::leaf::check_hub_id(hub).is_err() {
            tracing::warn!(file = %path.display(), "not a hub id; ignored");
            continue;
        }
        let password = std::fs::read_to_string(&path)?.trim().to_owned();
        if !password.is_empty() {
            users.push((hub.to_owned(), password));
        }
    }
    users.sort();
    Ok(users)
}

/// Writes a hub's password file in `dir` (mode 0600), replacing an earlier one.
pub fn write_hub_user(dir: &Path, hub: &str, password: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_private(&dir.join(format!("{hub}.password")), password)
}

/// Removes a hub's password file, if there is one.
pub fn remove_hub_user(dir: &Path, hub: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(format!("{hub}.password"))) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

async fn launch(data_dir: &Path, options: &LocalOptions) -> Result<(Child, u16), LocalServerError> {
    let binary = locate_binary().ok_or(LocalServerError::NotFound)?;
    let io_err = |source| LocalServerError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let store_dir = data_dir.join("jetstream");
    let ports_dir = data_dir.join("ports");
    std::fs::create_dir_all(&store_dir).map_err(io_err)?;
    std::fs::create_dir_all(&ports_dir).map_err(io_err)?;
    let config_path = data_dir.join("nats-server.conf");
    // A ports file of an earlier run would be read as ours; and the server that wrote it may
    // still run, orphaned by a `kill -9` of its parent, on the same JetStream files.
    for entry in std::fs::read_dir(&ports_dir).map_err(io_err)?.flatten() {
        stop_leftover(&entry.path(), &config_path).await;
        let _ = std::fs::remove_file(entry.path());
    }
    write_config(data_dir, options, options.port)?;
    let log_path = data_dir.join("nats-server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err)?;
    let mut child = Command::new(&binary)
        .arg("-c")
        .arg(&config_path)
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .envs(
            options
                .environment
                .iter()
                .map(|(name, value)| (name, value)),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LocalServerError::Spawn { binary, source })?;
    let port = wait_for_port(&mut child, &ports_dir, &log_path).await?;
    Ok((child, port))
}

/// Stops the nats-server that wrote `ports_file` (`nats-server_<pid>.ports`) if it still runs
/// with our configuration file: a server left behind when its parent was killed, holding the
/// port and the JetStream files the new one needs.
async fn stop_leftover(ports_file: &Path, config_path: &Path) {
    let pid = ports_file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.rsplit('_').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    let Some(pid) = pid else {
        return;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let ours = std::fs::read(proc_dir.join("cmdline"))
        .map(|cmdline| {
            let config = config_path.as_os_str().as_encoded_bytes();
            cmdline.windows(config.len()).any(|window| window == config)
        })
        .unwrap_or(false);
    if !ours {
        return;
    }
    tracing::warn!(pid, "stopping a nats-server left running by an earlier run");
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc_dir.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !proc_dir.exists() {
            return;
        }
    }
}

async fn wait_for_port(
    child: &mut Child,
    ports_dir: &Path,
    log_path: &Path,
) -> Result<u16, LocalServerError> {
    let timeout = Duration::from_secs(20);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
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

/// nats-server writes `{"nats": ["nats://127.0.0.1:PORT"], ...}` once it listens.
fn read_ports_file(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
