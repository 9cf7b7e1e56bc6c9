//! Starting the parts of Leerspoor in this process and running them until shutdown.

use std::net::SocketAddr;

use anyhow::Context as _;
use bus::server::{LocalOptions, LocalServer};
use gateway::Gateway;
use projector::Projector;
use store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    All,
    Gateway,
    Store,
    Projector,
    Forwarder,
}

/// A started process: its services are built (ports bound, sled open, streams ready).
pub struct Node {
    /// The nats-server child when this process started one (`serve` without a URL).
    nats_server: Option<LocalServer>,
    nats_url: String,
    gateway: Option<Gateway>,
    store: Option<Store>,
    projector: Option<Projector>,
    forwarder: Option<forwarder::Forwarder>,
    /// `/metrics` and `/health/*` on a listener of their own (`[ops] listen`).
    ops: Option<(gateway::ops::Ops, tokio::net::TcpListener)>,
    /// Who answers the hub users' requests, and where the users are kept (with a server of
    /// this process's own that takes leaf connections).
    leaf_users: Option<(async_nats::Client, std::path::PathBuf)>,
}

impl Node {
    pub async fn start(config: Config, parts: Parts) -> anyhow::Result<Node> {
        let mut config = config;
        // A configuration error is said before anything starts.
        let gateway_config = match parts {
            Parts::All | Parts::Gateway => Some(config.gateway()?),
            Parts::Store | Parts::Projector | Parts::Forwarder => None,
        };
        let (nats_server, nats_url) = match (&config.nats.url, parts) {
            (Some(url), _) => (None, url.clone()),
            (None, Parts::All) => {
                let nats_dir = config.data_dir.join("nats");
                // Other users of this machine must not be able to publish to lrs.in.http or
                // lrs.api.admin: the server takes only the password kept in the data folder.
                let password = local_password(&config.data_dir)?;
                let options = LocalOptions {
                    port: config.nats.port,
                    user: Some((LOCAL_USER.to_owned(), password.clone())),
                    leaf_listen: config.hubs.leaf_listen,
                    hub_users_dir: Some(hub_users_dir(&config.data_dir)),
                    ..LocalOptions::default()
                };
                let server = LocalServer::start_with(&nats_dir, options)
                    .await
                    .context("starting the local nats-server")?;
                let url = server.url();
                tracing::info!(%url, dir = %nats_dir.display(), "started nats-server with jetstream");
                config.nats.user = Some(LOCAL_USER.to_owned());
                config.nats.password = Some(password);
                (Some(server), url)
            }
            (None, _) => anyhow::bail!("--nats-url is required to run one part alone"),
        };
        let client = connect(&config, &nats_url).await?;
        let store = match parts {
            Parts::All | Parts::Store => Some(Store::build(client.clone(), config.store()?).await?),
            Parts::Gateway | Parts::Projector | Parts::Forwarder => None,
        };
        let projector = match parts {
            Parts::All | Parts::Projector => {
                Some(Projector::build(client.clone(), config.projector()?).await?)
            }
            _ => None,
        };
        let forwarder = match parts {
            Parts::All | Parts::Forwarder => Some(
                forwarder::Forwarder::build(
                    client.clone(),
                    forwarder::ForwarderConfig {
                        stream_replicas: config.replicas.stream_replicas,
                        ..forwarder::ForwarderConfig::default()
                    },
                )
                .await?,
            ),
            _ => None,
        };
        let runs = |part: Parts| parts == Parts::All || parts == part;
        let policy = bus::health::ReadyPolicy::for_parts(
            &config.topology()?,
            &config.replicas.name,
            runs(Parts::Store),
            runs(Parts::Projector),
            runs(Parts::Gateway),
            config.ops.ready_max_lag,
        );
        let ops = gateway::ops::Ops::new(client.clone(), policy);
        let gateway = match gateway_config {
            Some(gateway_config) => {
                let mut gateway = Gateway::build(client.clone(), gateway_config).await?;
                // In one process, reads go to the store and the projector beside the gateway
                // without the trip through nats-server (BENCHMARKS.md, the thirty-sixth round).
                if let Some(store) = &store {
                    gateway = gateway.with_store_here(store.here());
                }
                if let Some(projector) = &projector {
                    gateway = gateway.with_projector_here(projector.here());
                }
                Some(if config.ops.on_gateway {
                    gateway.with_ops(ops.clone())
                } else {
                    gateway
                })
            }
            None => None,
        };
        let ops = match config.ops.listen {
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the ops listener on {listen}"))?;
                Some((ops, listener))
            }
            None => None,
        };
        let leaf_users = nats_server
            .as_ref()
            .and_then(LocalServer::leaf_addr)
            .map(|_| (client.clone(), hub_users_dir(&config.data_dir)));
        Ok(Node {
            leaf_users,
            nats_server,
            nats_url,
            gateway,
            store,
            projector,
            forwarder,
            ops,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(Gateway::local_addr)
    }

    /// Where `/metrics` and `/health/*` are served apart from the gateway, if they are.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops
            .as_ref()
            .and_then(|(_, listener)| listener.local_addr().ok())
    }

    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// Where hub nodes connect as leaf nodes (`[hubs] leaf_listen` on `serve`'s own server).
    pub fn leaf_addr(&self) -> Option<SocketAddr> {
        self.nats_server.as_ref().and_then(LocalServer::leaf_addr)
    }

    /// Runs every part until `shutdown` (or until one fails, which stops the others).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // A part that runs here stops the others when it ends; an absent part ends at once
        // and must not.
        let gateway = async {
            match self.gateway {
                Some(gateway) => stop_all_on_exit(gateway.run(shutdown.clone()), &shutdown).await,
                None => Ok(()),
            }
        };
        let store = async {
            match self.store {
                Some(store) => stop_all_on_exit(store.run(shutdown.clone()), &shutdown).await,
                None => Ok(()),
            }
        };
        let projector = async {
            match self.projector {
                Some(projector) => {
                    stop_all_on_exit(projector.run(shutdown.clone()), &shutdown).await
                }
                None => Ok(()),
            }
        };
        let forwarder = async {
            match self.forwarder {
                Some(forwarder) => {
                    stop_all_on_exit(forwarder.run(shutdown.clone()), &shutdown).await
                }
                None => Ok(()),
            }
        };
        let ops = async {
            match self.ops {
                Some((ops, listener)) => ops.serve(listener, shutdown.clone()).await,
                None => Ok(()),
            }
        };
        let mut nats_server = self.nats_server;
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<Reload>(4);
        let leaf_users = async {
            match &self.leaf_users {
                Some((client, dir)) => serve_leaf_users(client, dir, reload_tx, &shutdown).await,
                None => Ok(()),
            }
        };
        let supervise = async {
            let Some(server) = nats_server.as_mut() else {
                return Ok(());
            };
            supervise(server, &mut reload_rx, &shutdown).await;
            Ok::<(), anyhow::Error>(())
        };
        let (
            gateway_result,
            store_result,
            projector_result,
            nats_result,
            ops_result,
            forwarder_result,
            leaf_result,
        ) = tokio::join!(gateway, store, projector, supervise, ops, forwarder, leaf_users);
        // Services are down and sled is flushed: now the bus may go.
        if let Some(server) = nats_server {
            server.stop().await;
        }
        gateway_result
            .and(store_result)
            .and(projector_result)
            .and(nats_result)
            .and(ops_result)
            .and(forwarder_result)
            .and(leaf_result)
    }
}

/// Keeps a nats-server of this process running (restarted when it exits) until `shutdown`.
pub(crate) async fn keep_running(server: &mut LocalServer, shutdown: &CancellationToken) {
    let (_, mut no_reloads) = tokio::sync::mpsc::channel::<Reload>(1);
    supervise(server, &mut no_reloads, shutdown).await;
}

/// A request to reload the nats-server's configuration, answered when done.
type Reload = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Where `serve` keeps the passwords of the hubs' NATS users (`<hub>.password`, mode 0600).
pub fn hub_users_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("nats").join("hubs")
}

/// Answers [`bus::subjects::API_LEAF_USERS`]: adds or removes a hub's NATS user on the
/// nats-server this process runs, and has the server reload its configuration.
async fn serve_leaf_users(
    client: &async_nats::Client,
    dir: &std::path::Path,
    reload: tokio::sync::mpsc::Sender<Reload>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    use bus::leaf::{LeafUserReply, LeafUserRequest};
    use futures::StreamExt as _;
    let mut requests = client
        .subscribe(bus::subjects::API_LEAF_USERS)
        .await
        .context("subscribing to the hub users' requests")?;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = requests.next() => match message {
                Some(message) => message,
                None => return Ok(()),
            },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let changed = match serde_json::from_slice::<LeafUserRequest>(&message.payload) {
            Err(err) => Err(format!("not a hub user request: {err}")),
            Ok(LeafUserRequest::Add { hub, password }) => {
                bus::leaf::check_hub_id(&hub).and_then(|()| {
                    if password.len() < 16 {
                        return Err("a hub's password has 16 characters at least".into());
                    }
                    bus::server::write_hub_user(dir, &hub, &password).map_err(|err| err.to_string())
                })
            }
            Ok(LeafUserRequest::Remove { hub }) => bus::leaf::check_hub_id(&hub).and_then(|()| {
                bus::server::remove_hub_user(dir, &hub).map_err(|err| err.to_string())
            }),
        };
        let result = match changed {
            Ok(()) => {
                let (done, reloaded) = tokio::sync::oneshot::channel();
                if reload.send(done).await.is_err() {
                    Err("the nats-server is not supervised any more".to_owned())
                } else {
                    reloaded
                        .await
                        .unwrap_or_else(|_| Err("the reload was not answered".into()))
                }
            }
            Err(err) => Err(err),
        };
        let reply = match result {
            Ok(()) => LeafUserReply::Done,
            Err(message) => LeafUserReply::Refused { message },
        };
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(err) = client.publish(reply_to, payload.into()).await {
            tracing::warn!(error = %err, "cannot answer a hub user request");
        }
    }
}

/// Keeps `serve`'s own nats-server running: when it exits, it is started again on the same
/// port with the same data (after 1 s, then up to 30 s while it keeps failing), and the
/// services, whose clients reconnect by themselves, carry on. Reloads its configuration when
/// asked (a hub user added or removed).
async fn supervise(
    server: &mut LocalServer,
    reloads: &mut tokio::sync::mpsc::Receiver<Reload>,
    shutdown: &CancellationToken,
) {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let status = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(done) = reloads.recv() => {
                let result = server.reload().await.map_err(|err| err.to_string());
                match &result {
                    Ok(()) => tracing::info!("nats-server reloaded its configuration (hub users)"),
                    Err(err) => tracing::error!(error = %err, "nats-server did not reload"),
                }
                let _ = done.send(result);
                continue;
            }
            status = server.exited() => status,
        };
        tracing::error!(?status, "nats-server exited; starting it again");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match server.restart().await {
                Ok(()) => {
                    tracing::warn!(url = %server.url(), "nats-server is running again");
                    pause = std::time::Duration::from_secs(1);
                    break;
                }
                Err(err) => {
                    pause = (pause * 2).min(std::time::Duration::from_secs(30));
                    tracing::error!(error = %err, retry_in = ?pause, "nats-server did not start");
                }
            }
        }
    }
}

/// The NATS user of `serve`'s own nats-server.
pub const LOCAL_USER: &str = "leerspoor";

/// Where `serve` keeps the password of its own nats-server (mode 0600).
pub fn local_password_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("nats").join("leerspoor.password")
}

/// The password of `serve`'s own nats-server: made once (32 random bytes), then read back.
fn local_password(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = local_password_path(data_dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let password = crate::access::new_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, password.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(password)
}

/// The local nats-server's user and password, when `serve` made one in this data folder
/// (what the operator's commands use without other NATS credentials).
pub fn local_credentials(data_dir: &std::path::Path) -> Option<(String, String)> {
    let password = std::fs::read_to_string(local_password_path(data_dir)).ok()?;
    let password = password.trim();
    (!password.is_empty()).then(|| (LOCAL_USER.to_owned(), password.to_owned()))
}

/// Connects to NATS as the services' user of the configuration. Hubs may read `_INBOX.>` for
/// their own publish acknowledgements; the services' replies (statements, documents,
/// summaries, credentials) go to an inbox no hub may read. `nats_url` may name several
/// servers of a cluster, comma-separated.
pub async fn connect(config: &Config, nats_url: &str) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name("leerspoor")
        .custom_inbox_prefix("_LRS_INBOX");
    if let (Some(user), Some(password)) = (&config.nats.user, &config.nats.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(path) = &config.nats.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?;
    }
    // A cluster is named by several URLs, comma-separated: the client starts with whichever
    // answers and learns the others from the servers.
    let servers = nats_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .with_context(|| format!("{url:?} is not a NATS URL"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    options
        .connect(servers)
        .await
        .with_context(|| format!("NATS unreachable at {nats_url}"))
}

async fn stop_all_on_exit(
    part: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let result = part.await;
    shutdown.cancel();
    result
}
