//! `leerspoor hub`: a hub node (its own nats-server as a leaf node of the central NATS, the
//! hub's stream, the hub's HTTP endpoint), and its commands `import-attendance` and
//! `hash-secret`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bus::server::{LocalOptions, LocalServer};
use hub::attendance::{AttendanceOptions, RefusedRow};
use hub::auth::HubCredential;
use hub::{HubConfig, HubEndpoint};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HubArgs {
    #[command(subcommand)]
    pub command: Option<HubCommand>,
    /// The hub this node writes for (its id in the registry and in its statements).
    #[arg(long, env = "LEERSPOOR_HUB")]
    pub hub: Option<String>,
    /// The central NATS's leaf port, with the hub's user and password:
    /// nats-leaf://hub-ID:SECRET@central.example.nl:7422 (`leerspoor hubs add` prints it).
    #[arg(long, env = "LEERSPOOR_HUB_CENTRAL_NATS", hide_env_values = true)]
    pub central_nats: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Turns a kiosk's attendance CSV into `attended` statements, written through a hub node.
    ImportAttendance(ImportArgs),
    /// Prints the Argon2id hash of a secret read from standard input, for [[hub.credentials]].
    HashSecret,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV: worker, session, check_in, check_out, and optionally company, name,
    /// session_name, learner_group.
    pub file: PathBuf,
    /// The hub node's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    pub url: String,
    /// The hub credential's key.
    #[arg(long, default_value = crate::config::DEMO_KEY)]
    pub user: String,
    /// Its secret; better from the environment.
    #[arg(
        long,
        env = "LEERSPOOR_HUB_SECRET",
        hide_env_values = true,
        default_value = crate::config::DEMO_SECRET
    )]
    pub password: String,
    /// Statements per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// The sessions' activity ids start with this (default: the LLO hub sessions base).
    #[arg(long)]
    pub session_base: Option<String>,
    /// The homePage of workers identified by an id of the hub's own.
    #[arg(long)]
    pub account_home_page: Option<String>,
    /// Convert and report only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A running hub node: its nats-server and its endpoint.
pub struct HubNode {
    server: LocalServer,
    endpoint: HubEndpoint,
    hub: String,
    client: async_nats::Client,
}

impl HubNode {
    /// Starts the hub's nats-server (JetStream domain `hub-<hub>`, a leaf node of
    /// `central_nats`), makes the hub's stream and binds the endpoint.
    pub async fn start(config: &Config) -> anyhow::Result<HubNode> {
        let section = &config.hub;
        let hub = section
            .id
            .clone()
            .context("a hub node needs --hub ID (or [hub] id)")?;
        bus::leaf::check_hub_id(&hub).map_err(anyhow::Error::msg)?;
        let central = section.central_nats.clone().context(
            "a hub node needs --central-nats nats-leaf://hub-ID:SECRET@central:7422 (or [hub] central_nats)",
        )?;
        anyhow::ensure!(
            ["nats-leaf://", "tls://", "ws://", "wss://", "nats://"]
                .iter()
                .any(|scheme| central.starts_with(scheme)),
            "--central-nats is a leaf URL (nats-leaf://, tls://, ws:// or wss://)"
        );
        let credentials = credentials(config)?;
        let nats_dir = config.data_dir.join("nats");
        // Only this process talks to the hub's nats-server (it listens on loopback).
        let password = crate::access::new_secret();
        let options = LocalOptions {
            port: 0,
            user: Some((crate::node::LOCAL_USER.to_owned(), password.clone())),
            jetstream_domain: Some(bus::subjects::hub_domain(&hub)),
            extra_config: format!(
                "server_name: {}\n{}",
                serde_json::Value::String(bus::subjects::hub_domain(&hub)),
                bus::leaf::hub_leaf_config(&central)
            ),
            max_payload: config.limits.hub_message_bytes + bus::HEADROOM,
            ..LocalOptions::default()
        };
        let server = LocalServer::start_with(&nats_dir, options)
            .await
            .context("starting the hub's nats-server")?;
        let client = async_nats::ConnectOptions::new()
            .name("leerspoor-hub")
            .user_and_password(crate::node::LOCAL_USER.to_owned(), password)
            .connect(server.url())
            .await
            .context("connecting to the hub's nats-server")?;
        let keep = Duration::from_secs(section.keep_days.saturating_mul(24 * 3600));
        hub::ensure_stream(&async_nats::jetstream::new(client.clone()), &hub, keep).await?;
        let endpoint = HubEndpoint::build(
            client.clone(),
            HubConfig {
                hub: hub.clone(),
                listen: section.listen,
                credentials,
                limits: config.limits.clone(),
                publish_timeout: Duration::from_secs(10),
            },
        )
        .await?;
        tracing::info!(%hub, nats = %server.url(), "hub node started");
        Ok(HubNode {
            server,
            endpoint,
            hub,
            client,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    pub fn nats_url(&self) -> String {
        self.server.url()
    }

    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// This node's connection to the hub's nats-server (what its endpoint publishes with).
    pub fn nats_client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// Runs until `shutdown`; the nats-server is restarted if it exits.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut server = self.server;
        let endpoint = self.endpoint.run(shutdown.clone());
        let supervise = async {
            crate::node::keep_running(&mut server, &shutdown).await;
        };
        let (result, ()) = tokio::join!(
            async {
                let result = endpoint.await;
                shutdown.cancel();
                result
            },
            supervise
        );
        server.stop().await;
        result
    }
}

/// The hub's credentials: from its configuration, or the demo credential on loopback.
fn credentials(config: &Config) -> anyhow::Result<Vec<HubCredential>> {
    let section = &config.hub;
    if !section.credentials.is_empty() {
        return Ok(section.credentials.clone());
    }
    anyhow::ensure!(
        section.demo_credential,
        "no [[hub.credentials]] in the configuration: the hub's tools could not write"
    );
    anyhow::ensure!(
        section.listen.ip().is_loopback(),
        "the demo credential {}:{} is for a loopback listener only; give [[hub.credentials]] \
         in a configuration file to listen on {}",
        crate::config::DEMO_KEY,
        crate::config::DEMO_SECRET,
        section.listen
    );
    tracing::warn!(
        "demo credential {}:{} for the hub's tools (loopback only)",
        crate::config::DEMO_KEY,
        crate::config::DEMO_SECRET
    );
    Ok(vec![HubCredential {
        key: crate::config::DEMO_KEY.to_owned(),
        secret_hash: crate::access::hash_secret(crate::config::DEMO_SECRET)?,
    }])
}

/// `leerspoor hub hash-secret`: a line from standard input, hashed.
pub fn hash_secret() -> anyhow::Result<()> {
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .context("reading the secret from standard input")?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        secret.len() >= 12,
        "a hub credential's secret has 12 characters at least"
    );
    println!("{}", crate::access::hash_secret(secret)?);
    Ok(())
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows: usize,
    pub written: usize,
    pub refused: Vec<RefusedRow>,
}

/// `leerspoor hub import-attendance`: converts, then writes in batches through the hub node,
/// with a progress bar; a statement the node refuses is reported with its row, and the rest of
/// its batch is written. Running it again is safe: the ids come from the rows.
pub async fn import_attendance(args: &ImportArgs) -> anyhow::Result<ImportReport> {
    let http = reqwest::Client::new();
    let url = args.url.trim_end_matches('/');
    let about: Value = http
        .get(format!("{url}/xapi/about"))
        .send()
        .await
        .with_context(|| format!("the hub node at {url} does not answer"))?
        .json()
        .await
        .context("the hub node's /xapi/about is not JSON")?;
    let hub = about["extensions"][hub::HUB_NODE_EXTENSION]["hub"]
        .as_str()
        .with_context(|| format!("{url} is not a Leerspoor hub node"))?
        .to_owned();
    let mut options = AttendanceOptions::for_hub(&hub);
    if let Some(base) = &args.session_base {
        options.session_base = base.clone();
    }
    if let Some(home_page) = &args.account_home_page {
        options.account_home_page = home_page.clone();
    }
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let validator = xapi::Validator::new()?;
    let conversion = hub::attendance::convert(std::io::BufReader::new(file), &options, &validator)
        .map_err(|err| anyhow::anyhow!("{}: {err}", args.file.display()))?;
    let mut report = ImportReport {
        rows: conversion.statements.len() + conversion.refused.len(),
        written: 0,
        refused: conversion.refused,
    };
    if args.dry_run {
        return Ok(report);
    }
    let progress = indicatif::ProgressBar::new(conversion.statements.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} statements  {per_sec}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for chunk in conversion.statements.chunks(args.batch.max(1)) {
        let mut batch = chunk.to_vec();
        while !batch.is_empty() {
            let body: Vec<&Value> = batch.iter().map(|row| &row.statement).collect();
            let response = http
                .post(format!("{url}/xapi/statements"))
                .basic_auth(&args.user, Some(&args.password))
                .header("X-Experience-API-Version", "2.0.0")
                .json(&body)
                .send()
                .await
                .with_context(|| format!("writing to {url}"))?;
            let status = response.status();
            if status.is_success() {
                report.written += batch.len();
                progress.inc(batch.len() as u64);
                break;
            }
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let message = answer["message"].as_str().unwrap_or("no reason given");
            match answer["statement"].as_u64().map(|at| at as usize) {
                Some(at) if status.as_u16() == 400 && at < batch.len() => {
                    let row = batch.remove(at);
                    report.refused.push(RefusedRow {
                        line: row.line,
                        reason: format!("refused by the hub node: {message}"),
                    });
                }
                _ => {
                    progress.abandon();
                    anyhow::bail!(
                        "the hub node refused a batch ({status}): {message}; {} of {} \
                         statements were written; running the import again is safe",
                        report.written,
                        conversion.statements.len()
                    );
                }
            }
        }
    }
    progress.finish_and_clear();
    report.refused.sort_by_key(|row| row.line);
    Ok(report)
}

/// Prints an import's outcome: counts, then each refused row with its line and reason.
pub fn print_report(file: &std::path::Path, report: &ImportReport, dry_run: bool) {
    let verb = if dry_run { "would write" } else { "wrote" };
    println!(
        "{}: {} rows; {verb} {} attended statements; refused {} rows",
        file.display(),
        report.rows,
        if dry_run {
            report.rows - report.refused.len()
        } else {
            report.written
        },
        report.refused.len()
    );
    for row in &report.refused {
        println!("  line {}: {}", row.line, row.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_credential_is_for_a_loopback_hub_node_without_a_configuration_file() {
        let mut config = Config::load(None).expect("defaults");
        let demo = credentials(&config).expect("loopback");
        assert_eq!(demo.len(), 1);
        assert_eq!(demo[0].key, crate::config::DEMO_KEY);
        config.hub.listen = "0.0.0.0:8090".parse().expect("addr");
        let refused = credentials(&config).expect_err("beyond loopback");
        assert!(refused.to_string().contains("loopback"), "{refused}");
        config.hub.demo_credential = false;
        assert!(credentials(&config).is_err(), "a file without credentials");
        config.hub.credentials = vec![HubCredential {
            key: "kiosk".into(),
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        }];
        let configured = credentials(&config).expect("from the file");
        assert_eq!(configured[0].key, "kiosk");
    }
}
