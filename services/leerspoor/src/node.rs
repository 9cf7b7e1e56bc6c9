//! Starting the parts of Leerspoor in this process and running them until shutdown.

use std::net::SocketAddr;

use anyhow::Context as _;
use bus::server::LocalServer;
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
}

/// A started process: its services are built (ports bound, sled open, streams ready).
pub struct Node {
    /// The nats-server child when this process started one (`serve` without a URL).
    nats_server: Option<LocalServer>,
    nats_url: String,
    gateway: Option<Gateway>,
    store: Option<Store>,
    projector: Option<Projector>,
}

impl Node {
    pub async fn start(config: Config, parts: Parts) -> anyhow::Result<Node> {
        let (nats_server, nats_url) = match (&config.nats.url, parts) {
            (Some(url), _) => (None, url.clone()),
            (None, Parts::All) => {
                let nats_dir = config.data_dir.join("nats");
                let server = LocalServer::start(&nats_dir, config.nats.port)
                    .await
                    .context("starting the local nats-server")?;
                let url = server.url();
                tracing::info!(%url, dir = %nats_dir.display(), "started nats-server with jetstream");
                (Some(server), url)
            }
            (None, _) => anyhow::bail!("--nats-url is required to run one part alone"),
        };
        let client = connect(&config, &nats_url).await?;
        let store = match parts {
            Parts::All | Parts::Store => Some(Store::build(client.clone(), config.store()?).await?),
            Parts::Gateway | Parts::Projector => None,
        };
        let projector = match parts {
            Parts::All | Parts::Projector => {
                Some(Projector::build(client.clone(), config.projector()).await?)
            }
            _ => None,
        };
        let gateway = match parts {
            Parts::All | Parts::Gateway => {
                Some(Gateway::build(client.clone(), config.gateway()).await?)
            }
            Parts::Store | Parts::Projector => None,
        };
        Ok(Node {
            nats_server,
            nats_url,
            gateway,
            store,
            projector,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(Gateway::local_addr)
    }

    pub fn nats_url(&self) -> &str {
        &self.nats_url
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
        let mut nats_server = self.nats_server;
        let supervise = async {
            let Some(server) = nats_server.as_mut() else {
                return Ok(());
            };
            tokio::select! {
                _ = shutdown.cancelled() => Ok(()),
                status = server.exited() => {
                    shutdown.cancel();
                    Err(anyhow::anyhow!("nats-server exited unexpectedly: {status:?}"))
                }
            }
        };
        let (gateway_result, store_result, projector_result, nats_result) =
            tokio::join!(gateway, store, projector, supervise);
        // Services are down and sled is flushed: now the bus may go.
        if let Some(server) = nats_server {
            server.stop().await;
        }
        gateway_result
            .and(store_result)
            .and(projector_result)
            .and(nats_result)
    }
}

/// Connects to NATS as the services' user of the configuration. Hubs may read `_INBOX.>` for
/// their own publish acknowledgements; the services' replies (statements, documents,
/// summaries, credentials) go to an inbox no hub may read.
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
    options
        .connect(nats_url)
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
