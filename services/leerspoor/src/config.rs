//! Typed configuration: defaults < TOML file < `LEERSPOOR_*` environment < flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use gateway::GatewayConfig;
use serde::Deserialize;
use store::StoreConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store's sled database and a local nats-server's files live.
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub gateway: GatewaySection,
    pub store: StoreSection,
    /// Every bound on input (README "Limits"), the same for gateway and store.
    pub limits: xapi::limits::Limits,
    pub replicas: ReplicasSection,
    pub ops: OpsSection,
    pub programme: ProgrammeSection,
    /// The central side of hub nodes (README "Hubs").
    pub hubs: HubsSection,
    /// This process as a hub node (`leerspoor hub`, README "Hubs").
    pub hub: HubSection,
    pub memory: MemorySection,
}

/// Hub nodes connecting to `serve`'s own nats-server as leaf nodes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubsSection {
    /// Where hub nodes connect (e.g. `0.0.0.0:7422`); none: no leaf connections.
    pub leaf_listen: Option<SocketAddr>,
}

/// A hub node (`leerspoor hub`): its hub, the central NATS, its endpoint and credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// The hub this node writes for (`--hub`).
    pub id: Option<String>,
    /// The central NATS's leaf port with this hub's user and password
    /// (`nats-leaf://hub-<id>:SECRET@central.example.nl:7422`, `--central-nats`).
    pub central_nats: Option<String>,
    /// The hub's HTTP endpoint (`--listen`).
    pub listen: SocketAddr,
    /// Days the hub keeps statements in its own stream, sourced or not (0: for ever).
    pub keep_days: u64,
    /// The hub's tools: `[[hub.credentials]] key = "kiosk-1"`, `secret_hash = "$argon2id$…"`
    /// (`leerspoor hub hash-secret`).
    pub credentials: Vec<hub::auth::HubCredential>,
    /// The demo credential `leerspoor:leerspoor` (loopback only): on without a configuration
    /// file.
    #[serde(skip)]
    pub demo_credential: bool,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            id: None,
            central_nats: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            keep_days: 365,
            credentials: Vec::new(),
            demo_credential: false,
        }
    }
}

/// The programme's figures (README "Programme figures").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgrammeSection {
    /// Companies the programme means to reach.
    pub company_target: u64,
    /// A CSV of skill labels: URI, then one column per language (`en`, `nl`).
    pub skill_labels: Option<PathBuf>,
}

impl Default for ProgrammeSection {
    fn default() -> Self {
        ProgrammeSection {
            company_target: 6000,
            skill_labels: None,
        }
    }
}

/// `/metrics` and `/health/*` (README "Operating Leerspoor").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSection {
    /// A listener of their own (e.g. `127.0.0.1:9464`): how a store or projector running
    /// alone is scraped, or a scrape address apart from the public one.
    pub listen: Option<SocketAddr>,
    /// Serve them on the gateway's listener too.
    pub on_gateway: bool,
    /// Messages a store or projector may be behind and still be ready.
    pub ready_max_lag: u64,
}

impl Default for OpsSection {
    fn default() -> Self {
        OpsSection {
            listen: None,
            on_gateway: true,
            ready_max_lag: 10_000,
        }
    }
}

/// Store and projector replicas (README "Replicas and the cluster").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicasSection {
    /// This process's replica name: its store's and projector's durable consumers. Every
    /// replica has a data folder of its own.
    pub name: String,
    /// Every store replica of the deployment: their consumers of `LRS_IN` exist from the
    /// first service's start, so a message stays until each of them applied it.
    pub stores: Vec<String>,
    /// Every projector replica, likewise on `LRS_STORED`.
    pub projectors: Vec<String>,
    /// How many NATS servers keep each stream and bucket: 3 on a three-node cluster.
    pub stream_replicas: usize,
    /// Start this new replica (empty data folder) from a snapshot of a healthy one
    /// (`--from-snapshot`); never from a file.
    #[serde(skip)]
    pub from_snapshot: bool,
}

impl Default for ReplicasSection {
    fn default() -> Self {
        let topology = bus::subjects::Topology::default();
        ReplicasSection {
            name: bus::subjects::MAIN_REPLICA.to_owned(),
            stores: topology.stores,
            projectors: topology.projectors,
            stream_replicas: topology.stream_replicas,
            from_snapshot: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS to join. Without it `serve` starts and supervises its own nats-server.
    pub url: Option<String>,
    /// Port of the nats-server `serve` starts; 0 picks a free one.
    pub port: u16,
    /// NATS user credentials file (`.creds`), if the server requires one.
    pub credentials_file: Option<PathBuf>,
    /// NATS user and password, if the server requires them (see deploy/nats-accounts.conf).
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub listen: SocketAddr,
    /// Requests per minute of a credential that sets no limit of its own.
    pub default_requests_per_minute: u32,
    pub authority_home_page: String,
    pub write_timeout_secs: u64,
    /// The xAPI versions this deployment speaks, e.g. `["1.0.3"]`: a request that names no
    /// version is answered in the latest of them. Both by default.
    pub xapi_versions: Vec<String>,
}

/// `[memory]`: what bounds `serve`'s resident memory besides its buffers: sled's page caches.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySection {
    /// sled's page cache for the store's database, MiB.
    pub store_cache_mb: u64,
    /// sled's page cache for the projector's database, MiB.
    pub projector_cache_mb: u64,
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection {
            store_cache_mb: store::db::DEFAULT_CACHE_BYTES / (1024 * 1024),
            projector_cache_mb: projector::projection::DEFAULT_CACHE_BYTES / (1024 * 1024),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Messages applied under one sled flush and one ack.
    pub max_batch: usize,
    /// Seconds before a message delivered to a store that died is redelivered.
    pub ack_wait_secs: u64,
    /// Create the demo credential `leerspoor:leerspoor` (every scope) if the store has no
    /// credential at all. On when Leerspoor runs without a configuration file.
    pub demo_credential: bool,
    /// A credential to create if the store has none (tests and `bench`; not from files).
    #[serde(skip)]
    pub bootstrap: Option<bus::access::CredentialRecord>,
    /// Take over an `LRS_IN` other than the one the store applied (`--adopt-new-stream`, once,
    /// by an operator: README "Recovery"); never from a file.
    #[serde(skip)]
    pub adopt_new_stream: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            nats: NatsConfig::default(),
            gateway: GatewaySection::default(),
            store: StoreSection::default(),
            limits: xapi::limits::Limits::default(),
            replicas: ReplicasSection::default(),
            ops: OpsSection::default(),
            programme: ProgrammeSection::default(),
            hubs: HubsSection::default(),
            hub: HubSection::default(),
            memory: MemorySection::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            port: 4222,
            credentials_file: None,
            user: None,
            password: None,
        }
    }
}

impl Default for GatewaySection {
    fn default() -> Self {
        let defaults = GatewayConfig::default();
        GatewaySection {
            listen: defaults.listen,
            default_requests_per_minute: defaults.default_requests_per_minute,
            authority_home_page: defaults.authority_home_page,
            write_timeout_secs: defaults.write_timeout.as_secs(),
            xapi_versions: defaults
                .versions
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            max_batch: 256,
            ack_wait_secs: 5,
            demo_credential: false,
            bootstrap: None,
            adopt_new_stream: false,
        }
    }
}

/// The credential `serve` creates when run without a configuration file on a store with no
/// credentials, so the first README command gives a working LRS. Announced loudly.
pub const DEMO_KEY: &str = "leerspoor";
pub const DEMO_SECRET: &str = "leerspoor";

impl Config {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            let mut config = Config::default();
            config.store.demo_credential = true;
            config.hub.demo_credential = true;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// The NATS to talk to: the configured one, or the one `serve` starts on this machine.
    pub fn nats_url_or_local(&self) -> String {
        self.nats
            .url
            .clone()
            .unwrap_or_else(|| format!("nats://127.0.0.1:{}", self.nats.port))
    }

    /// The deployment's replicas, checked.
    pub fn topology(&self) -> anyhow::Result<bus::subjects::Topology> {
        let replicas = &self.replicas;
        for name in std::iter::once(&replicas.name)
            .chain(&replicas.stores)
            .chain(&replicas.projectors)
        {
            bus::subjects::check_replica_name(name).map_err(anyhow::Error::msg)?;
        }
        anyhow::ensure!(
            !replicas.stores.is_empty() && !replicas.projectors.is_empty(),
            "replicas.stores and replicas.projectors each name one replica at least"
        );
        anyhow::ensure!(
            (1..=5).contains(&replicas.stream_replicas),
            "replicas.stream_replicas is 1 to 5 (NATS keeps at most 5 copies)"
        );
        Ok(bus::subjects::Topology {
            stores: replicas.stores.clone(),
            projectors: replicas.projectors.clone(),
            stream_replicas: replicas.stream_replicas,
        })
    }

    pub fn gateway(&self) -> anyhow::Result<GatewayConfig> {
        Ok(GatewayConfig {
            listen: self.gateway.listen,
            default_requests_per_minute: self.gateway.default_requests_per_minute.max(1),
            authority_home_page: self.gateway.authority_home_page.clone(),
            limits: self.limits.clone(),
            write_timeout: Duration::from_secs(self.gateway.write_timeout_secs),
            topology: self.topology()?,
            versions: gateway::version::Versions::parse(&self.gateway.xapi_versions)
                .map_err(anyhow::Error::msg)?,
            programme: gateway::Programme {
                company_target: self.programme.company_target,
                skill_labels: match &self.programme.skill_labels {
                    Some(path) => {
                        gateway::labels::SkillLabels::load(path).map_err(anyhow::Error::msg)?
                    }
                    None => gateway::labels::SkillLabels::default(),
                },
            },
        })
    }

    /// The projector shares the store's batching and redelivery settings.
    pub fn projector(&self) -> anyhow::Result<projector::ProjectorConfig> {
        Ok(projector::ProjectorConfig {
            data_dir: self.data_dir.clone(),
            max_batch: self.store.max_batch.max(1),
            ack_wait: Duration::from_secs(self.store.ack_wait_secs.max(1)),
            replica: self.replicas.name.clone(),
            topology: self.topology()?,
            from_snapshot: self.replicas.from_snapshot,
            cache_bytes: self.memory.projector_cache_mb.max(1) * 1024 * 1024,
        })
    }

    pub fn store(&self) -> anyhow::Result<StoreConfig> {
        let bootstrap_credential = if let Some(record) = &self.store.bootstrap {
            Some(record.clone())
        } else if self.store.demo_credential && !self.gateway.listen.ip().is_loopback() {
            // A well-known secret on an address others can reach would be an open door.
            tracing::warn!(
                listen = %self.gateway.listen,
                "no demo credential: the gateway listens beyond this machine; create one with `leerspoor credentials create`"
            );
            None
        } else if self.store.demo_credential {
            Some(crate::access::record(
                DEMO_KEY,
                "Leerspoor demo",
                DEMO_SECRET,
                bus::access::Scope::EVERY.to_vec(),
                None,
                None,
            )?)
        } else {
            None
        };
        Ok(StoreConfig {
            data_dir: self.data_dir.clone(),
            max_batch: self.store.max_batch.max(1),
            ack_wait: Duration::from_secs(self.store.ack_wait_secs.max(1)),
            bootstrap_credential,
            limits: self.limits.clone(),
            adopt_new_stream: self.store.adopt_new_stream,
            from_snapshot: self.replicas.from_snapshot,
            replica: self.replicas.name.clone(),
            topology: self.topology()?,
            cache_bytes: self.memory.store_cache_mb.max(1) * 1024 * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_configuration_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/leerspoor.toml");
        let config = Config::load(Some(&example)).expect("deploy/leerspoor.toml is valid");
        assert!(!config.store.demo_credential);
    }

    #[test]
    fn the_demo_credential_is_made_only_for_a_loopback_gateway() {
        let mut config = Config::load(None).expect("defaults");
        assert!(config
            .store()
            .expect("store")
            .bootstrap_credential
            .is_some());
        config.gateway.listen = "0.0.0.0:8080".parse().expect("addr");
        assert!(config
            .store()
            .expect("store")
            .bootstrap_credential
            .is_none());
        config.gateway.listen = "[::1]:8080".parse().expect("addr");
        assert!(config
            .store()
            .expect("store")
            .bootstrap_credential
            .is_some());
    }

    #[test]
    fn limits_come_from_their_own_section() {
        let parsed: Config =
            toml::from_str("[limits]\nstatements_per_request = 50\n").expect("valid config");
        assert_eq!(parsed.limits.statements_per_request, 50);
        assert_eq!(
            parsed.limits.body_bytes,
            xapi::limits::Limits::default().body_bytes
        );
        assert!(toml::from_str::<Config>("[limits]\nbogus = 1\n").is_err());
    }

    #[test]
    fn replicas_are_named_and_counted() {
        let parsed: Config = toml::from_str(
            "[replicas]\nname = \"b\"\nstores = [\"a\", \"b\"]\nprojectors = [\"a\"]\nstream_replicas = 3\n",
        )
        .expect("valid config");
        let topology = parsed.topology().expect("topology");
        assert_eq!(topology.stores, ["a", "b"]);
        assert_eq!(topology.stream_replicas, 3);
        assert_eq!(parsed.store().expect("store").replica, "b");
        let defaults = Config::load(None).expect("defaults");
        assert_eq!(
            defaults.topology().expect("topology"),
            bus::subjects::Topology::default()
        );
        let bad: Config = toml::from_str("[replicas]\nname = \"B.1\"\n").expect("parses");
        assert!(bad.topology().is_err());
        let bad: Config = toml::from_str("[replicas]\nstream_replicas = 7\n").expect("parses");
        assert!(bad.topology().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<Config, _> = toml::from_str("data_dir = \"x\"\nlisten = \"y\"\n");
        assert!(parsed.is_err());
    }

    #[test]
    fn sections_override_defaults() {
        let parsed: Config = toml::from_str(
            "[gateway]\nlisten = \"127.0.0.1:9000\"\ndefault_requests_per_minute = 60\n",
        )
        .expect("valid config");
        assert_eq!(parsed.gateway.listen.port(), 9000);
        assert_eq!(parsed.gateway.default_requests_per_minute, 60);
        assert!(!parsed.store.demo_credential, "only without a file");
        assert_eq!(parsed.store.max_batch, 256);
    }

    #[test]
    fn the_hub_node_example_configuration_is_valid() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/hub/leerspoor-hub.toml");
        let config = Config::load(Some(&example)).expect("deploy/hub/leerspoor-hub.toml is valid");
        assert_eq!(config.hub.id.as_deref(), Some("eindhoven"));
        assert_eq!(config.hub.credentials.len(), 2);
        assert!(!config.hub.demo_credential, "only without a file");
        assert!(Config::load(None).expect("defaults").hub.demo_credential);
        let central: Config =
            toml::from_str("[hubs]\nleaf_listen = \"0.0.0.0:7422\"\n").expect("valid config");
        assert_eq!(central.hubs.leaf_listen.map(|addr| addr.port()), Some(7422));
    }
}
