//! The operator's side of access control: `leerspoor credentials …`, `leerspoor audit` and
//! `leerspoor erase-agent`. Changes (credentials, erasures) are `LRS_IN` messages
//! (`lrs.in.admin.*`), applied by every store replica in log order; reads ask a store over
//! `lrs.api.admin`. Both with the services' NATS user from the configuration, which is what
//! makes them trusted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHasher};
use base64::Engine as _;
use bus::access::{
    AdminReply, AdminRequest, AuditEntry, CredentialChange, CredentialRecord, CredentialView,
    EraseCommand, Scope,
};
use bus::subjects;
use bus::wire::Verdict;
use clap::{Args, Subcommand};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// An Argon2id hash (PHC string) of a secret, with a fresh salt.
pub fn hash_secret(secret: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("hashing the secret: {err}"))
}

/// A new random secret: 32 bytes from the OS, URL-safe base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Who runs this command, for the audit log.
pub fn cli_actor() -> String {
    // The operator's login name as the shell gives it; services started by systemd have none.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// A credential record ready to send, its secret hashed.
pub fn record(
    key: &str,
    name: &str,
    secret: &str,
    scopes: Vec<Scope>,
    on_behalf_of: Option<Value>,
    requests_per_minute: Option<u32>,
) -> anyhow::Result<CredentialRecord> {
    Ok(CredentialRecord {
        key: key.to_owned(),
        name: name.to_owned(),
        scopes,
        secret_hash: hash_secret(secret)?,
        on_behalf_of,
        requests_per_minute,
        created: String::new(),
        rotated: None,
        revoked: None,
    })
}

/// One admin request to the store; the store's refusals become errors with its message.
pub async fn ask(
    client: &async_nats::Client,
    request: &AdminRequest,
) -> anyhow::Result<AdminReply> {
    Ok(bus::access::request(client, request, Duration::from_secs(30), 0).await?)
}

/// Publishes one change to `LRS_IN` and waits for a store's verdict on it.
pub(crate) async fn through_log(
    client: &async_nats::Client,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: Duration,
) -> anyhow::Result<Verdict> {
    let js = async_nats::jetstream::new(client.clone());
    let watermarks = bus::watermark::Watermarks::new(client.clone());
    let stop = CancellationToken::new();
    let following = tokio::spawn(watermarks.clone().follow(stop.clone()));
    let verdict = bus::watermark::submit(
        &js,
        &watermarks,
        subject,
        async_nats::HeaderMap::new(),
        payload,
        timeout,
    )
    .await;
    stop.cancel();
    let _ = following.await;
    Ok(verdict?)
}

/// Makes a credential change and returns the credential as it is now.
pub async fn change(
    client: &async_nats::Client,
    change: &CredentialChange,
) -> anyhow::Result<CredentialView> {
    let payload = serde_json::to_vec(change)?;
    match through_log(
        client,
        subjects::IN_CREDENTIALS,
        payload,
        Duration::from_secs(30),
    )
    .await?
    {
        Verdict::Credential { credential } => Ok(credential),
        Verdict::Refused { code, message } => anyhow::bail!("refused ({code}): {message}"),
        Verdict::Rejected(rejection) => anyhow::bail!("refused: {}", rejection.message),
        other => anyhow::bail!("unexpected verdict {other:?}"),
    }
}

/// Creates a credential (the tests and `bench` use this too).
pub async fn create(
    client: &async_nats::Client,
    record: CredentialRecord,
    actor: &str,
) -> anyhow::Result<CredentialView> {
    change(
        client,
        &CredentialChange::Create {
            record,
            actor: actor.to_owned(),
        },
    )
    .await
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Creates a credential and prints its secret (once: only a hash is kept).
    Create(CreateArgs),
    /// Lists every credential (never a secret or hash).
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Gives a credential a new secret; the old one stops working at once.
    Rotate {
        key: String,
        /// Read the new secret from standard input instead of generating one.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// Revokes a credential: it authenticates nothing from now on.
    Revoke { key: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The key (Basic auth user name): 1-64 of A-Z a-z 0-9 . _ -
    #[arg(long)]
    pub key: String,
    /// A human name; it appears in the authority of the statements it writes.
    #[arg(long)]
    pub name: String,
    /// Comma-separated: statements/write, statements/read, statements/read/mine, state,
    /// define, profile, all/read, all, summaries/read, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<Scope>,
    /// The agent (JSON) a tool acts for: its statements get a Group authority of the tool
    /// and this agent.
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// Requests per minute (the gateway's default when absent).
    #[arg(long)]
    pub requests_per_minute: Option<u32>,
    /// Read the secret from standard input instead of generating one.
    #[arg(long)]
    pub secret_stdin: bool,
}

pub fn read_secret(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((new_secret(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the secret from standard input")?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(secret.len() >= 12, "a secret needs at least 12 characters");
    Ok((secret, false))
}

pub async fn credentials(
    client: &async_nats::Client,
    command: CredentialsCommand,
) -> anyhow::Result<()> {
    let actor = cli_actor();
    match command {
        CredentialsCommand::Create(args) => {
            let on_behalf_of = args
                .on_behalf_of
                .as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .context("--on-behalf-of is not JSON")?;
            if let Some(agent) = &on_behalf_of {
                anyhow::ensure!(
                    xapi::agent::ifi_key(agent).is_some(),
                    "--on-behalf-of needs an agent with an identifier (mbox, account, ...)"
                );
            }
            let (secret, generated) = read_secret(args.secret_stdin)?;
            let record = record(
                &args.key,
                &args.name,
                &secret,
                args.scopes,
                on_behalf_of,
                args.requests_per_minute,
            )?;
            let view = create(client, record, &actor).await?;
            print_view(&view);
            if generated {
                println!("secret: {secret}");
                println!("(shown once; only its Argon2 hash is kept)");
            }
        }
        CredentialsCommand::List { json } => {
            let AdminReply::Credentials { credentials } =
                ask(client, &AdminRequest::ListCredentials).await?
            else {
                anyhow::bail!("unexpected reply");
            };
            let views: Vec<CredentialView> = credentials.iter().map(CredentialView::from).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                println!("{:<24} {:<28} {:<9} scopes", "key", "name", "status");
                for view in &views {
                    let status = if view.revoked.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    let scopes: Vec<&str> =
                        view.scopes.iter().map(|scope| scope.as_str()).collect();
                    println!(
                        "{:<24} {:<28} {:<9} {}",
                        view.key,
                        view.name,
                        status,
                        scopes.join(",")
                    );
                }
            }
        }
        CredentialsCommand::Rotate { key, secret_stdin } => {
            let (secret, generated) = read_secret(secret_stdin)?;
            let rotate = CredentialChange::Rotate {
                key,
                secret_hash: hash_secret(&secret)?,
                actor,
            };
            print_view(&change(client, &rotate).await?);
            if generated {
                println!("secret: {secret}");
                println!("(shown once; the old secret no longer works)");
            }
        }
        CredentialsCommand::Revoke { key } => {
            print_view(&change(client, &CredentialChange::Revoke { key, actor }).await?);
        }
    }
    Ok(())
}

fn print_view(view: &CredentialView) {
    let scopes: Vec<&str> = view.scopes.iter().map(|scope| scope.as_str()).collect();
    println!("key: {}", view.key);
    println!("name: {}", view.name);
    println!("scopes: {}", scopes.join(","));
    if let Some(revoked) = &view.revoked {
        println!("revoked: {revoked}");
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries after this id.
    #[arg(long)]
    pub after: Option<u64>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

pub async fn audit(client: &async_nats::Client, args: AuditArgs) -> anyhow::Result<()> {
    let request = AdminRequest::Audit {
        after: args.after,
        limit: args.limit,
    };
    let AdminReply::Audit { entries } = ask(client, &request).await? else {
        anyhow::bail!("unexpected reply");
    };
    for AuditEntry {
        id,
        time,
        actor,
        action,
        details,
    } in entries
    {
        println!("{id:>20}  {time}  {actor:<24} {action:<18} {details}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The person, as an xAPI Agent (JSON), e.g. '{"mbox": "mailto:ann@example.org"}'.
    pub agent: String,
    /// Write everything stored about them to this file (JSON) before erasing.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Why (a ticket number): kept in the audit log. Do not name the person.
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn erase(client: &async_nats::Client, args: EraseArgs) -> anyhow::Result<()> {
    let agent: Value = serde_json::from_str(&args.agent).context("AGENT is not JSON")?;
    xapi::Validator::new()?
        .check_agent(&agent, xapi::XapiVersion::V2_0_0)
        .map_err(|violation| anyhow::anyhow!("AGENT is not a valid xAPI Agent: {violation}"))?;
    let person = xapi::agent::ifi_key(&agent)
        .context("AGENT needs an identifier: mbox, mbox_sha1sum, openid or account")?;
    let mut exported = None;
    if let Some(path) = &args.export {
        let export = bus::access::export_of(client, &person, Duration::from_secs(30), 0)
            .await
            .map_err(|err| anyhow::anyhow!("export failed, nothing erased: {err}"))?;
        let count = export["statements"].as_array().map_or(0, Vec::len);
        let bytes = serde_json::to_vec_pretty(&export)?;
        write_durably(path, &bytes)
            .with_context(|| format!("writing the export to {}, nothing erased", path.display()))?;
        println!(
            "exported {count} statements and {} documents to {}",
            export["documents"].as_array().map_or(0, Vec::len),
            path.display()
        );
        exported = Some(count);
    }
    let command = EraseCommand {
        agent,
        actor: cli_actor(),
        reason: args.reason,
    };
    let payload = serde_json::to_vec(&command)?;
    let verdict = through_log(
        client,
        subjects::IN_ERASE,
        payload,
        Duration::from_secs(120),
    )
    .await
    .context("the erasure is queued or not sent; check `leerspoor audit` later")?;
    match verdict {
        Verdict::Erased {
            statements,
            documents,
        } => {
            println!("erased {statements} statements and {documents} documents");
            if exported.is_some_and(|exported| exported != statements) {
                println!(
                    "note: {} statements were exported but {statements} erased (statements arrived in between)",
                    exported.unwrap_or(0)
                );
            }
            Ok(())
        }
        Verdict::Rejected(rejection) => anyhow::bail!("refused: {}", rejection.message),
        other => anyhow::bail!("unexpected verdict {other:?}"),
    }
}

/// Writes and syncs a file, so an export is on disk before anything is erased.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
