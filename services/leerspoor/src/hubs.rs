//! `leerspoor hubs`: the hub registry (what each hub is, its name and region), kept by the
//! store through `LRS_IN` ([`bus::hubs`]).

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
            if json {
                println!("{}", serde_json::to_string_pretty(&hubs)?);
            } else {
                println!("{:<20} {:<10} {:<16} name", "id", "type", "region");
                for hub in &hubs {
                    println!(
                        "{:<20} {:<10} {:<16} {}",
                        hub.id, hub.kind, hub.region, hub.name
                    );
                }
            }
        }
    }
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
