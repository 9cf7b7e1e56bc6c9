//! Command line. Flags and `LEERSPOOR_*` variables override the TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "leerspoor",
    version,
    about = "Leerspoor: a learning record store on NATS and sled"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    /// TOML configuration file.
    #[arg(long, global = true, env = "LEERSPOOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data folder (sled database, local nats-server files).
    #[arg(long, global = true, env = "LEERSPOOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// NATS to join; `serve` starts its own nats-server when none is given.
    #[arg(long, global = true, env = "LEERSPOOR_NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS user (see deploy/nats-accounts.conf).
    #[arg(long, global = true, env = "LEERSPOOR_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password; better from the environment than on a command line.
    #[arg(
        long,
        global = true,
        env = "LEERSPOOR_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// Port for the nats-server `serve` starts (0: any free port).
    #[arg(long, global = true, env = "LEERSPOOR_NATS_PORT")]
    pub nats_port: Option<u16>,
    /// HTTP listen address of the gateway.
    #[arg(long, global = true, env = "LEERSPOOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The store takes over an LRS_IN other than the one it applied (after NATS's data was
    /// lost): its messages are applied from its first. Once, by hand; README "Recovery".
    #[arg(long, global = true)]
    pub adopt_new_stream: bool,
    /// This process's store or projector replica name (its durable consumer); `main` by
    /// default. Every replica has its own --data-dir.
    #[arg(long, global = true, env = "LEERSPOOR_REPLICA")]
    pub replica: Option<String>,
    /// Every store replica of the deployment, comma-separated (their consumers are made by
    /// the first service to start).
    #[arg(
        long,
        global = true,
        env = "LEERSPOOR_STORE_REPLICAS",
        value_delimiter = ','
    )]
    pub store_replicas: Option<Vec<String>>,
    /// Every projector replica of the deployment, comma-separated.
    #[arg(
        long,
        global = true,
        env = "LEERSPOOR_PROJECTOR_REPLICAS",
        value_delimiter = ','
    )]
    pub projector_replicas: Option<Vec<String>>,
    /// How many NATS servers keep each stream and bucket (3 on a three-node cluster).
    #[arg(long, global = true, env = "LEERSPOOR_STREAM_REPLICAS")]
    pub stream_replicas: Option<usize>,
    /// A new replica (empty --data-dir) starts from a snapshot of a healthy replica of its
    /// kind, then applies the log after it.
    #[arg(long, global = true)]
    pub from_snapshot: bool,
    /// The xAPI versions this deployment speaks, comma-separated (`1.0.3,2.0.0` by default);
    /// a request that names no version is answered in the latest of them.
    #[arg(
        long,
        global = true,
        env = "LEERSPOOR_XAPI_VERSIONS",
        value_delimiter = ','
    )]
    pub xapi_versions: Option<Vec<String>>,
    /// Serve /metrics and /health/* on a listener of their own (a store or projector alone).
    #[arg(long, global = true, env = "LEERSPOOR_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// Where hub nodes connect as NATS leaf nodes, on the nats-server `serve` starts
    /// (e.g. 0.0.0.0:7422; README "Hubs").
    #[arg(long, global = true, env = "LEERSPOOR_LEAF_LISTEN")]
    pub leaf_listen: Option<SocketAddr>,
    /// Log lines as text for people or as JSON objects for log shippers.
    #[arg(long, global = true, env = "LEERSPOOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: nats-server (unless --nats-url), store and gateway.
    Serve,
    /// The HTTP gateway alone, joining --nats-url.
    Gateway,
    /// The store alone, joining --nats-url.
    Store,
    /// The projector alone, joining --nats-url.
    Projector,
    /// The forwarder alone (forwarding targets and webhooks), joining --nats-url.
    Forwarder,
    /// Forwards stored statements to other LRSs.
    #[command(subcommand)]
    Forward(leerspoor::targets::ForwardCommand),
    /// Webhooks: stored statements POSTed, signed, to a URL.
    #[command(subcommand)]
    Webhooks(leerspoor::targets::WebhookCommand),
    /// Maintenance of the running projector: a rebuild, its parked messages, a compaction.
    Project {
        /// Recompute from the store's statements and swap the result in.
        #[arg(long)]
        rebuild: bool,
        /// List the LRS_STORED messages the projector could not read (parked, not skipped).
        #[arg(long)]
        parked: bool,
        /// Apply the parked messages the projector can read now.
        #[arg(long)]
        replay_parked: bool,
        /// Copy the projector's database into a fresh one (without the dead pages sled keeps)
        /// while it goes on applying, and swap it in (kept out when it takes more and nothing
        /// was erased since the last copy); it also does so on its own when its database has
        /// doubled since the last copy and no message came for 30 s.
        #[arg(long)]
        compact: bool,
    },
    /// Copies a stopped node's store and projector databases into fresh ones, without the
    /// dead pages sled keeps (and the bytes of what erasures removed), and swaps them in (the
    /// projector's copy only when it takes less, or after an erasure).
    Compact,
    /// The hub registry: each hub's name, type (technohub, fieldlab) and region.
    #[command(subcommand)]
    Hubs(leerspoor::hubs::HubsCommand),
    /// Runs a hub node: the hub's tools write here, kept at the hub while the central site is
    /// out of reach (`leerspoor hub --hub ID --central-nats URL --data-dir DIR --listen ADDR`);
    /// or `leerspoor hub import-attendance FILE.csv`.
    Hub(leerspoor::hubnode::HubArgs),
    /// Shows a worker, hub or company summary, or a list of them (from the projector).
    Summary(leerspoor::analyst::SummaryArgs),
    /// Publishes realistic demo statements (and voids a few) to a running Leerspoor.
    Demo(leerspoor::demo::DemoArgs),
    /// Creates, lists, rotates and revokes the credentials of xAPI tools, hubs and analysts.
    #[command(subcommand)]
    Credentials(leerspoor::access::CredentialsCommand),
    /// Shows the audit log of admin actions (credential changes, erasures).
    Audit(leerspoor::access::AuditArgs),
    /// Erases everything stored about one person (statements, documents, summaries).
    EraseAgent(leerspoor::access::EraseArgs),
    /// Every store and projector replica: applied sequence, lag and content digest.
    Replicas(leerspoor::replicas::ReplicasArgs),
    /// Copies a running store's and projector's databases (consistent, ingest goes on).
    Backup(leerspoor::backup::BackupArgs),
    /// Brings a stopped replica back from a backup into an empty --data-dir; started, it
    /// applies the log after the backup.
    Restore(leerspoor::backup::RestoreArgs),
    /// Writes stored statements (voided ones too) to an NDJSON file, oldest first.
    Export(leerspoor::transfer::ExportArgs),
    /// Brings statements in from an NDJSON file or another LRS, keeping their stored and
    /// authority; resumable.
    Import(leerspoor::transfer::ImportArgs),
    /// Asks a running Leerspoor whether it is ready (exit 0) or not (exit 1), for health
    /// checks (compose, systemd, scripts).
    Health {
        /// The health endpoint; by default /health/ready on the ops listener, else the gateway's.
        #[arg(long)]
        url: Option<String>,
        /// Keep asking up to this many seconds until it is ready.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Measures ingest throughput and latency against a fresh, durable, in-process Leerspoor.
    ///
    /// The in-process Leerspoor has its own nats-server and databases in a temporary folder
    /// (under TMPDIR): the node options (--nats-url, --data-dir, --config and the like) do not
    /// apply to it. To bench a running Leerspoor, or one on a NATS of your own, use --against.
    Bench(leerspoor::bench::BenchArgs),
}

impl Common {
    /// The configuration file, with environment and flags on top.
    pub fn config(&self) -> anyhow::Result<leerspoor::config::Config> {
        let mut config = leerspoor::config::Config::load(self.config.as_deref())?;
        if let Some(data_dir) = &self.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(url) = &self.nats_url {
            config.nats.url = Some(url.clone());
        }
        if let Some(user) = &self.nats_user {
            config.nats.user = Some(user.clone());
        }
        if let Some(password) = &self.nats_password {
            config.nats.password = Some(password.clone());
        }
        if let Some(port) = self.nats_port {
            config.nats.port = port;
        }
        config.store.adopt_new_stream = self.adopt_new_stream;
        if let Some(replica) = &self.replica {
            config.replicas.name = replica.clone();
        }
        if let Some(stores) = &self.store_replicas {
            config.replicas.stores = stores.clone();
        }
        if let Some(projectors) = &self.projector_replicas {
            config.replicas.projectors = projectors.clone();
        }
        config.replicas.from_snapshot = self.from_snapshot;
        if let Some(copies) = self.stream_replicas {
            config.replicas.stream_replicas = copies;
        }
        if let Some(listen) = self.listen {
            config.gateway.listen = listen;
        }
        if let Some(listen) = self.ops_listen {
            config.ops.listen = Some(listen);
        }
        if let Some(listen) = self.leaf_listen {
            config.hubs.leaf_listen = Some(listen);
        }
        if let Some(versions) = &self.xapi_versions {
            config.gateway.xapi_versions = versions.clone();
        }
        Ok(config)
    }
}
