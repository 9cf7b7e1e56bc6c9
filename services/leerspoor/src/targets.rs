//! `leerspoor forward …` and `leerspoor webhooks …`: the operator's side of
//! [`bus::targets`]. The forwarder (in `serve`, or `leerspoor forwarder`) delivers.

use bus::targets::{Filter, Kind, Target, Targets};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only statements with this verb IRI (repeat for several).
    #[arg(long = "verb")]
    pub verbs: Vec<String>,
    /// Only statements about this activity id (repeat for several).
    #[arg(long = "activity")]
    pub activities: Vec<String>,
    /// Only statements of this LLO hub (repeat for several).
    #[arg(long = "hub")]
    pub hubs: Vec<String>,
    /// Only statements of this company (LLO company extension; repeat for several).
    #[arg(long = "company")]
    pub companies: Vec<String>,
}

impl FilterArgs {
    fn filter(self) -> Filter {
        Filter {
            verbs: self.verbs,
            activities: self.activities,
            hubs: self.hubs,
            companies: self.companies,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Forwards every statement stored from now on (that passes the filter) to another LRS.
    Add {
        name: String,
        /// The other LRS's xAPI endpoint, e.g. https://lrs.example/xapi.
        #[arg(long)]
        to: String,
        #[arg(long)]
        user: Option<String>,
        /// The other LRS's password, from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// The X-Experience-API-Version to speak.
        #[arg(long, default_value = "1.0.3")]
        version: String,
        /// Statements per POST.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[command(flatten)]
        filter: FilterArgs,
    },
    #[command(flatten)]
    Common(CommonCommand),
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Sends every statement stored from now on (that passes the filter) to a URL, as a POST
    /// of `{"target", "statements"}` signed with `X-Leerspoor-Signature: sha256=<HMAC>`.
    Add {
        name: String,
        #[arg(long)]
        url: String,
        /// The signing secret, from standard input (one is made and shown when not given).
        #[arg(long)]
        secret_stdin: bool,
        /// Statements per POST.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Attempts before a POST's statements go to the dead-letter list.
        #[arg(long, default_value_t = 10)]
        max_attempts: u32,
        #[command(flatten)]
        filter: FilterArgs,
    },
    #[command(flatten)]
    Common(CommonCommand),
}

#[derive(Debug, Subcommand)]
pub enum CommonCommand {
    /// Every target, with how many statements it has still to get and its dead letters.
    List,
    /// Stops delivering to a target and forgets it (its consumer and dead letters too).
    Remove { name: String },
    /// The statements a target gave up on, and why.
    DeadLetters {
        name: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delivers the dead letters again (those delivered leave the list).
    Replay { name: String },
}

fn now() -> String {
    xapi::time::format_timestamp(chrono::Utc::now())
}

pub async fn forward(
    client: &async_nats::Client,
    stream_replicas: usize,
    command: ForwardCommand,
) -> anyhow::Result<()> {
    let targets = Targets::open(client, stream_replicas).await?;
    match command {
        ForwardCommand::Add {
            name,
            to,
            user,
            password_stdin,
            version,
            batch,
            filter,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            anyhow::ensure!(
                xapi::XapiVersion::from_header(&version).is_some(),
                "--version {version:?} is not 1.0.3 or 2.0.0"
            );
            let target = Target {
                name: name.clone(),
                kind: Kind::Lrs {
                    endpoint: to.clone(),
                    user,
                    password,
                    version,
                },
                filter: filter.filter(),
                batch,
                max_attempts: 0,
                created: now(),
                replay_requested: None,
            };
            targets.add(&target).await?;
            println!("forwarding to {to} as {name:?}: every statement stored from now on");
            Ok(())
        }
        ForwardCommand::Common(command) => common(&targets, command).await,
    }
}

pub async fn webhooks(
    client: &async_nats::Client,
    stream_replicas: usize,
    command: WebhookCommand,
) -> anyhow::Result<()> {
    let targets = Targets::open(client, stream_replicas).await?;
    match command {
        WebhookCommand::Add {
            name,
            url,
            secret_stdin,
            batch,
            max_attempts,
            filter,
        } => {
            let (secret, generated) = crate::access::read_secret(secret_stdin)?;
            let target = Target {
                name: name.clone(),
                kind: Kind::Webhook {
                    url: url.clone(),
                    secret: secret.clone(),
                },
                filter: filter.filter(),
                batch,
                max_attempts: max_attempts.max(1),
                created: now(),
                replay_requested: None,
            };
            targets.add(&target).await?;
            println!(
                "webhook {name:?} posts to {url}: every matching statement stored from now on"
            );
            if generated {
                println!("signing secret (shown once): {secret}");
            }
            Ok(())
        }
        WebhookCommand::Common(command) => common(&targets, command).await,
    }
}

async fn common(targets: &Targets, command: CommonCommand) -> anyhow::Result<()> {
    match command {
        CommonCommand::List => {
            for view in targets.views().await? {
                println!(
                    "{}\t{}\t{}\tpending {}\tdead letters {}\tfilter {}",
                    view.name,
                    view.kind,
                    view.url,
                    view.pending.map_or("?".into(), |n| n.to_string()),
                    view.dead_letters.map_or("?".into(), |n| n.to_string()),
                    serde_json::to_string(&view.filter)?
                );
            }
        }
        CommonCommand::Remove { name } => {
            targets.remove(&name).await?;
            println!("removed {name:?}");
        }
        CommonCommand::DeadLetters { name, limit } => {
            anyhow::ensure!(
                targets.get(&name).await?.is_some(),
                "no target named {name:?}"
            );
            for letter in targets.dead_letters(&name, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        CommonCommand::Replay { name } => {
            let count = targets.dead_count(&name).await?;
            targets.request_replay(&name, &now()).await?;
            println!("asked the forwarder to deliver {count} dead letters of {name:?} again");
        }
    }
    Ok(())
}
