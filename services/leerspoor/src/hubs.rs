//! `leerspoor hubs`: the hub registry (what each hub is, its name and region), kept by the
//! store through `LRS_IN` ([`bus::hubs`]); and the hub nodes `LRS_IN` sources from
//! ([`bus::leaf`]): `add`, `remove`, and their lag and last contact in `list`.

use std::time::Duration;

use bus::access::{AdminReply, AdminRequest};
use bus::hubs::{HubChange, HubEntry, HubType};
use bus::subjects;
use bus::wire::Verdict;

#[derive(Debug, clap::Subcommand)]
pub enum HubsCommand {
    /// Registers a hub, or changes what is registered about it.
    Set {
        /// The hub's id: the value of the LLO hub extension in its statements.
        id: String,
        #[arg(long)]
        name: String,
        /// technohub or fieldlab.
        #[arg(long = "type")]
        kind: HubType,
        /// The region the hub serves (e.g. Brabant, Limburg).
        #[arg(long)]
        region: String,
    },
    /// Lists the registered hubs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Takes a hub out of the registry (its statements and summaries stay).
    Delete { id: String },
    /// Lets a hub node in: `LRS_IN` sources from its stream (through its JetStream domain
    /// `hub-ID`), and its leaf connection gets a NATS user of its own (on `serve`'s server;
    /// for another NATS the user's configuration is printed).
    Add {
        id: String,
        /// How hub nodes reach the central leaf port, for the printed command
        /// (e.g. central.example.nl:7422).
        #[arg(long, default_value = "CENTRAL:7422")]
        leaf_address: String,
        /// Read the hub's NATS password from standard input instead of making one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Stops sourcing from a hub node and removes its NATS user. Refused while the hub has
    /// statements not yet sourced, unless --force.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &async_nats::Client, command: HubsCommand) -> anyhow::Result<()> {
    match command {
        HubsCommand::Set {
            id,
            name,
            kind,
            region,
        } => {
            let hub = HubEntry {
                id,
                name,
                kind,
                region,
            };
            hub.check().map_err(anyhow::Error::msg)?;
            change(client, &HubChange::Set { hub: hub.clone() }).await?;
            println!(
                "hub {} registered: {} ({}, {})",
                hub.id, hub.name, hub.kind, hub.region
            );
        }
        HubsCommand::Delete { id } => {
            change(client, &HubChange::Delete { id: id.clone() }).await?;
            println!("hub {id} is no longer registered");
        }
        HubsCommand::List { json } => {
            let hubs = list(client).await?;
            let js = async_nats::jetstream::new(client.clone());
            let sources = bus::leaf::sources(&js).await?;
            let rows = overview(&hubs, &sources);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<20} {:<10} {:<16} {:<10} {:>8} {:<14} name",
                    "id", "type", "region", "hub node", "behind", "last contact"
                );
                for row in &rows {
                    let (node, behind, contact) = match &row.node {
                        Some(node) => (
                            "sourced",
                            node.behind.to_string(),
                            node.last_contact_secs
                                .map_or("not yet".to_owned(), |secs| format!("{secs} s ago")),
                        ),
                        None => ("-", "-".into(), "-".into()),
                    };
                    println!(
                        "{:<20} {:<10} {:<16} {:<10} {:>8} {:<14} {}",
                        row.id,
                        row.kind.as_deref().unwrap_or("-"),
                        row.region.as_deref().unwrap_or("-"),
                        node,
                        behind,
                        contact,
                        row.name.as_deref().unwrap_or("(not registered)"),
                    );
                }
            }
        }
        HubsCommand::Add {
            id,
            leaf_address,
            password_stdin,
        } => add(client, &id, &leaf_address, password_stdin).await?,
        HubsCommand::Remove { id, force } => remove(client, &id, force).await?,
    }
    Ok(())
}

/// One hub in `hubs list`: what the registry says, and how far its hub node is sourced.
#[derive(Debug, serde::Serialize)]
pub struct HubRow {
    pub id: String,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub region: Option<String>,
    /// The hub node `LRS_IN` sources from, if any.
    pub node: Option<NodeStatus>,
}

#[derive(Debug, serde::Serialize)]
pub struct NodeStatus {
    /// Statements at the hub (messages of its stream) not yet in `LRS_IN`, at last contact.
    pub behind: u64,
    /// Seconds since the central site last heard from the hub node; none: not since the
    /// central NATS started.
    pub last_contact_secs: Option<u64>,
}

/// The registry and the sourced hub nodes side by side, by hub id.
pub fn overview(hubs: &[HubEntry], sources: &[bus::leaf::SourceStatus]) -> Vec<HubRow> {
    let mut rows: Vec<HubRow> = hubs
        .iter()
        .map(|hub| HubRow {
            id: hub.id.clone(),
            name: Some(hub.name.clone()),
            kind: Some(hub.kind.to_string()),
            region: Some(hub.region.clone()),
            node: None,
        })
        .collect();
    for source in sources {
        let status = NodeStatus {
            behind: source.lag,
            last_contact_secs: source.last_active.map(|active| active.as_secs()),
        };
        match rows.iter_mut().find(|row| row.id == source.hub) {
            Some(row) => row.node = Some(status),
            None => rows.push(HubRow {
                id: source.hub.clone(),
                name: None,
                kind: None,
                region: None,
                node: Some(status),
            }),
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// Asks the node running the central nats-server to change a hub's NATS user; false when no
/// such node answers (the NATS is run some other way).
async fn leaf_user(
    client: &async_nats::Client,
    request: &bus::leaf::LeafUserRequest,
) -> anyhow::Result<bool> {
    let payload = serde_json::to_vec(request)?;
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subjects::API_LEAF_USERS, payload.into()),
    )
    .await;
    let reply = match asked {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Ok(false)
        }
        Ok(Err(err)) => anyhow::bail!("asking for the hub's NATS user: {err}"),
        Err(_) => anyhow::bail!("the central node did not answer about the hub's NATS user"),
    };
    match serde_json::from_slice(&reply.payload)? {
        bus::leaf::LeafUserReply::Done => Ok(true),
        bus::leaf::LeafUserReply::Refused { message } => anyhow::bail!("refused: {message}"),
    }
}

/// Lets a hub node in: its NATS user (when the central nats-server is `serve`'s own: `made`)
/// and `LRS_IN`'s source of its stream (`added`, false when it was there).
pub async fn let_in(
    client: &async_nats::Client,
    hub: &str,
    password: &str,
) -> anyhow::Result<(bool, bool)> {
    let made = make_user(client, hub, password).await?;
    let js = async_nats::jetstream::new(client.clone());
    let added = bus::leaf::add_source(&js, hub).await?;
    Ok((added, made))
}

/// Gives a hub its NATS user on `serve`'s nats-server, without sourcing from it yet.
pub async fn make_user(
    client: &async_nats::Client,
    hub: &str,
    password: &str,
) -> anyhow::Result<bool> {
    leaf_user(
        client,
        &bus::leaf::LeafUserRequest::Add {
            hub: hub.to_owned(),
            password: password.to_owned(),
        },
    )
    .await
}

async fn add(
    client: &async_nats::Client,
    hub: &str,
    leaf_address: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    bus::leaf::check_hub_id(hub).map_err(anyhow::Error::msg)?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        crate::access::new_secret()
    };
    anyhow::ensure!(
        password.len() >= 16,
        "a hub's NATS password has 16 characters at least"
    );
    let (added, made) = let_in(client, hub, &password).await?;
    println!(
        "hub {hub}: LRS_IN {} its stream {} (JetStream domain {})",
        if added {
            "now sources"
        } else {
            "already sourced"
        },
        subjects::hub_stream(hub),
        subjects::hub_domain(hub)
    );
    let user = subjects::hub_user(hub);
    if made {
        println!("NATS user {user} made on the central nats-server");
    } else {
        println!(
            "This NATS is not run by `leerspoor serve` with [hubs] leaf_listen: add this user to \
             its authorization users and reload it (deploy/nats-accounts.conf):\n  {}",
            bus::leaf::central_user_entry(hub, &password)
        );
    }
    if !password_stdin {
        println!(
            "On the hub (keep the URL secret; it is shown once):\n  leerspoor hub --hub {hub} \
             --central-nats nats-leaf://{user}:{password}@{leaf_address} --data-dir DIR --listen ADDR"
        );
    }
    Ok(())
}

async fn remove(client: &async_nats::Client, hub: &str, force: bool) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let sources = bus::leaf::sources(&js).await?;
    if let Some(source) = sources.iter().find(|source| source.hub == hub) {
        anyhow::ensure!(
            force || source.lag == 0,
            "hub {hub} has {} statement messages not yet sourced; wait for them or use --force",
            source.lag
        );
    }
    let removed = bus::leaf::remove_source(&js, hub).await?;
    let user_removed = leaf_user(
        client,
        &bus::leaf::LeafUserRequest::Remove {
            hub: hub.to_owned(),
        },
    )
    .await?;
    println!(
        "hub {hub}: {}{}",
        if removed {
            "LRS_IN no longer sources its stream"
        } else {
            "LRS_IN did not source its stream"
        },
        if user_removed {
            "; its NATS user is removed"
        } else {
            ""
        }
    );
    Ok(())
}

/// The registry as the store has it.
pub async fn list(client: &async_nats::Client) -> anyhow::Result<Vec<HubEntry>> {
    match crate::access::ask(client, &AdminRequest::ListHubs).await? {
        AdminReply::Hubs { hubs } => Ok(hubs),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

/// Makes one registry change and waits until the store applied it.
pub async fn change(client: &async_nats::Client, change: &HubChange) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(change)?;
    let verdict =
        crate::access::through_log(client, subjects::IN_HUBS, payload, Duration::from_secs(30))
            .await?;
    match verdict {
        Verdict::Applied => Ok(()),
        Verdict::Refused { code, message } => anyhow::bail!("refused ({code}): {message}"),
        Verdict::Rejected(rejection) => anyhow::bail!("refused: {}", rejection.message),
        other => anyhow::bail!("unexpected verdict {other:?}"),
    }
}
