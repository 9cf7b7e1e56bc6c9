//! `leerspoor backup` and `leerspoor restore`: a consistent copy of a running store's and
//! projector's databases, taken without stopping ingest, and a replica brought back from it.
//!
//! A backup asks a store replica and a projector replica for a snapshot (the replica writes
//! it between two batches, so each is its database at one stream sequence: see
//! [`bus::snapshot`]) and keeps both files with `backup.json`, which names the sequences.
//!
//! What makes a restore catch up is the log: the backup leaves a durable consumer
//! `backup-<sequence>` on `LRS_IN` and on `LRS_STORED` starting right after the sequences it
//! took, so the streams (interest retention) keep every message after the latest backup
//! until the next backup moves the consumer on. A restore loads the files into an empty data
//! folder and makes the replica's consumers start after the backup's sequences; started, the
//! replica applies the log from there and ends where the others are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bus::snapshot::SnapshotReply;
use bus::subjects;
use serde::{Deserialize, Serialize};

/// What a backup folder holds, in `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// RFC 3339, when the backup finished.
    pub taken: String,
    pub leerspoor: String,
    pub store: Part,
    pub projector: Part,
}

/// One database of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// The snapshot file, relative to the folder.
    pub file: String,
    /// The stream it applied: `LRS_IN` for the store, `LRS_STORED` for the projector.
    pub stream: String,
    /// Every message of the stream up to this sequence is in the file, none after.
    pub applied: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The replica that wrote it.
    pub from: String,
}

pub const MANIFEST: &str = "backup.json";
const STORE_FILE: &str = "store.snapshot";
const PROJECTOR_FILE: &str = "projector.snapshot";
/// Durable consumers that hold the log after the latest backup.
const CONSUMER_PREFIX: &str = "backup-";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The folder to write (created; must not hold a backup already).
    #[arg(long, required_unless_present = "release")]
    pub to: Option<PathBuf>,
    /// Take no backup, and let the streams drop the log kept for restores (when backups are
    /// no longer taken).
    #[arg(long, conflicts_with = "to")]
    pub release: bool,
}

/// `leerspoor backup`.
pub async fn run(
    client: &async_nats::Client,
    stream_replicas: usize,
    args: BackupArgs,
) -> anyhow::Result<()> {
    let Some(dir) = args.to else {
        let released = release(client).await?;
        println!(
            "released {released} backup consumers: the streams keep only what replicas still need"
        );
        return Ok(());
    };
    let started = std::time::Instant::now();
    let manifest = backup(client, stream_replicas, &dir).await?;
    println!(
        "backup in {}: store at LRS_IN {} ({} entries, {} bytes, from replica {}), projector at \
         LRS_STORED {} ({} entries, {} bytes), in {:.1} s",
        dir.display(),
        manifest.store.applied,
        manifest.store.entries,
        manifest.store.bytes,
        manifest.store.from,
        manifest.projector.applied,
        manifest.projector.entries,
        manifest.projector.bytes,
        started.elapsed().as_secs_f64()
    );
    println!(
        "the streams keep the log after it until the next backup (`leerspoor restore --from {}`)",
        dir.display()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A folder written by `leerspoor backup`.
    #[arg(long)]
    pub from: PathBuf,
}

/// Takes a backup into `dir`.
pub async fn backup(
    client: &async_nats::Client,
    stream_replicas: usize,
    dir: &Path,
) -> anyhow::Result<Manifest> {
    anyhow::ensure!(
        !dir.join(MANIFEST).exists(),
        "{} holds a backup already; give a new folder",
        dir.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let js = jetstream::new(client.clone());
    // Before the snapshots: the log after them must stay until a restore could need it.
    for stream in [subjects::STREAM_IN, subjects::STREAM_STORED] {
        hold_log_if_unheld(&js, stream).await?;
    }
    let store = fetch(
        client,
        subjects::API_SNAPSHOT_STORE,
        stream_replicas,
        &dir.join(STORE_FILE),
    )
    .await
    .context("a snapshot of a store replica")?;
    let projector = fetch(
        client,
        subjects::API_SNAPSHOT_PROJECTOR,
        stream_replicas,
        &dir.join(PROJECTOR_FILE),
    )
    .await
    .context("a snapshot of a projector replica")?;
    let manifest = Manifest {
        taken: xapi::time::format_timestamp(chrono::Utc::now()),
        leerspoor: env!("CARGO_PKG_VERSION").into(),
        store: part(STORE_FILE, subjects::STREAM_IN, &store, dir)?,
        projector: part(PROJECTOR_FILE, subjects::STREAM_STORED, &projector, dir)?,
    };
    let written = serde_json::to_vec_pretty(&manifest)?;
    let path = dir.join(MANIFEST);
    std::fs::write(&path, written).with_context(|| format!("writing {}", path.display()))?;
    // The backup is whole: the log before it is no longer needed for it.
    move_hold(&js, subjects::STREAM_IN, store.applied).await?;
    move_hold(&js, subjects::STREAM_STORED, projector.applied).await?;
    Ok(manifest)
}

async fn fetch(
    client: &async_nats::Client,
    subject: &'static str,
    stream_replicas: usize,
    file: &Path,
) -> anyhow::Result<SnapshotReply> {
    Ok(bus::snapshot::fetch(client, subject, "backup", stream_replicas, file).await?)
}

fn part(file: &str, stream: &str, reply: &SnapshotReply, dir: &Path) -> anyhow::Result<Part> {
    let bytes = std::fs::metadata(dir.join(file))?.len();
    Ok(Part {
        file: file.into(),
        stream: stream.into(),
        applied: reply.applied,
        entries: reply.entries,
        bytes,
        from: reply.from.clone(),
    })
}

/// The backup consumers on `stream`, with the sequence each starts after.
async fn holds(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<(String, u64)>> {
    use futures::TryStreamExt as _;
    let handle = js.get_stream(stream).await?;
    let names: Vec<String> = handle.consumer_names().try_collect().await?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let after = name.strip_prefix(CONSUMER_PREFIX)?.parse().ok()?;
            Some((name, after))
        })
        .collect())
}

fn hold_config(name: &str, after: u64) -> consumer::pull::Config {
    consumer::pull::Config {
        deliver_policy: if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        },
        description: Some(
            "keeps the log after the latest backup for `leerspoor restore` (README \"Backup and restore\")"
                .into(),
        ),
        ..bus::pull::durable_config(name, Duration::from_secs(30))
    }
}

/// The first backup: a consumer holding everything the stream has now.
async fn hold_log_if_unheld(js: &jetstream::Context, stream: &str) -> anyhow::Result<()> {
    if holds(js, stream).await?.is_empty() {
        let name = format!("{CONSUMER_PREFIX}0");
        js.get_stream(stream)
            .await?
            .create_consumer(hold_config(&name, 0))
            .await
            .with_context(|| format!("holding {stream} for the backup"))?;
    }
    Ok(())
}

/// Holds the log from `after` on, and lets go of what older holds kept.
async fn move_hold(js: &jetstream::Context, stream: &str, after: u64) -> anyhow::Result<()> {
    let handle = js.get_stream(stream).await?;
    let name = format!("{CONSUMER_PREFIX}{after}");
    handle
        .get_or_create_consumer(&name, hold_config(&name, after))
        .await
        .with_context(|| format!("holding {stream} after {after}"))?;
    for (old, old_after) in holds(js, stream).await? {
        if old != name && old_after < after {
            handle
                .delete_consumer(&old)
                .await
                .with_context(|| format!("letting go of {old} on {stream}"))?;
        }
    }
    Ok(())
}

/// Stops holding the log for backups (no more backups will be taken).
pub async fn release(client: &async_nats::Client) -> anyhow::Result<usize> {
    let js = jetstream::new(client.clone());
    let mut released = 0;
    for stream in [subjects::STREAM_IN, subjects::STREAM_STORED] {
        let handle = js.get_stream(stream).await?;
        for (name, _) in holds(&js, stream).await? {
            handle.delete_consumer(&name).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub replica: String,
    pub store_applied: u64,
    pub projector_applied: u64,
    pub store_entries: u64,
    pub projector_entries: u64,
}

/// Restores replica `replica` (stopped) into `data_dir` (no databases yet) from `dir`.
pub async fn restore(
    client: &async_nats::Client,
    dir: &Path,
    data_dir: &Path,
    replica: &str,
    ack_wait: Duration,
) -> anyhow::Result<Restored> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join(MANIFEST))
            .with_context(|| format!("{} is not a backup folder", dir.display()))?,
    )
    .with_context(|| format!("reading {}", dir.join(MANIFEST).display()))?;
    let store_db = store::compact::database_path(data_dir)?;
    let projector_db = projector::rebuild::active_path(data_dir);
    for db in [&store_db, &projector_db] {
        anyhow::ensure!(
            !db.exists(),
            "{} exists: restore into a data folder without databases (move it aside first)",
            db.display()
        );
    }
    let js = jetstream::new(client.clone());
    // The log after the backup must still be there, or the replica would miss messages.
    for part in [&manifest.store, &manifest.projector] {
        let mut stream = js.get_stream(&part.stream).await?;
        let state = stream.info().await?.state.clone();
        let missing = state.first_sequence > part.applied + 1 && state.last_sequence > part.applied;
        anyhow::ensure!(
            !missing,
            "{} no longer holds messages {}..{} after this backup (a newer backup moved the hold \
             on): restore from the newest backup, or start the replica with --from-snapshot",
            part.stream,
            part.applied + 1,
            state.first_sequence - 1
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let (store_file, projector_file) = (
        dir.join(&manifest.store.file),
        dir.join(&manifest.projector.file),
    );
    let (store_into, projector_into) = (store_db.clone(), projector_db.clone());
    let (store_entries, projector_entries) = tokio::task::spawn_blocking(move || {
        use projector::projection::Projection;
        let tree = store::db::Db::open_tree(&store_into, store::db::DEFAULT_CACHE_BYTES)?;
        let store = store::snapshot::load(&tree, &store_into, &store_file)?;
        let tree =
            Projection::open_tree(&projector_into, projector::projection::DEFAULT_CACHE_BYTES)?;
        let projector = Projection::load_snapshot(&tree, &projector_into, &projector_file)
            .map_err(anyhow::Error::msg)?;
        Ok::<_, anyhow::Error>((store, projector))
    })
    .await
    .context("loading the backup")??;
    // The replica's consumers start after the backup's sequences.
    for (part, consumer) in [
        (&manifest.store, subjects::store_consumer(replica)),
        (&manifest.projector, subjects::projector_consumer(replica)),
    ] {
        let handle = js.get_stream(&part.stream).await?;
        // Gone already is fine; anything else is not.
        if let Err(err) = handle.delete_consumer(&consumer).await {
            if !err.to_string().contains("not found") {
                return Err(anyhow::Error::new(err)
                    .context(format!("removing the old consumer {consumer}")));
            }
        }
        let config = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: part.applied + 1,
            },
            ..bus::pull::durable_config(&consumer, ack_wait)
        };
        handle
            .create_consumer(config)
            .await
            .with_context(|| format!("making {consumer} start after {}", part.applied))?;
    }
    Ok(Restored {
        replica: replica.to_owned(),
        store_applied: manifest.store.applied,
        projector_applied: manifest.projector.applied,
        store_entries,
        projector_entries,
    })
}
