//! A store replica's side of [`bus::snapshot`]: writing a consistent snapshot of its database
//! between two batches for a new replica, and a new replica loading one before it opens its
//! database.

use std::path::Path;

use anyhow::Context as _;
use bus::snapshot::SnapshotReply;
use bus::subjects;

use crate::db::Db;
use crate::keys;

/// What a replica keeps for itself and a snapshot leaves out: what it still owes NATS (its
/// outbox, attachment bodies and `LRS_REJECTED` messages an erasure left to delete).
const LOCAL: [u8; 3] = [keys::OUTBOX, keys::ORPHAN, keys::REJECTED_SCRUB];

impl Db {
    /// Writes every entry but the local ones to `file`, once the indexes caught up. Call it
    /// between batches (nothing applied meanwhile). Returns the applied sequence and the
    /// number of entries.
    pub fn write_snapshot(&self, file: &Path) -> anyhow::Result<(u64, u64)> {
        self.wait_for_indexes()?;
        let applied = self.applied_sequence()?;
        let entries = self.tree().iter().filter(|item| {
            item.as_ref().map_or(true, |(key, _)| {
                !key.first().is_some_and(|p| LOCAL.contains(p))
            })
        });
        let written = bus::snapshot::write_file(file, entries)
            .with_context(|| format!("writing the snapshot to {}", file.display()))?;
        Ok((applied, written))
    }
}

/// Loads a snapshot file into `tree` (the database at `db_path`), which must be empty.
/// Returns the number of entries.
pub fn load(tree: &sled::Db, db_path: &Path, file: &Path) -> anyhow::Result<u64> {
    anyhow::ensure!(
        tree.is_empty(),
        "{} holds a database already: a replica starts from a snapshot only with an empty data folder",
        db_path.display()
    );
    let entries = bus::snapshot::read_file(file, |chunk| {
        let mut batch = sled::Batch::default();
        for (key, value) in chunk {
            batch.insert(key, value);
        }
        tree.apply_batch(batch)
    })
    .context("loading the snapshot")?;
    tree.flush()?;
    Ok(entries)
}

/// Asks a healthy store replica for a snapshot and loads it into `tree`, the database at
/// `db_path`. The caller has made its durable consumer already, so nothing after the
/// snapshot's sequence can leave `LRS_IN` before this replica applied it.
pub async fn fetch(
    client: &async_nats::Client,
    replica: &str,
    stream_replicas: usize,
    tree: &sled::Db,
    db_path: &Path,
    work_dir: &Path,
) -> anyhow::Result<SnapshotReply> {
    std::fs::create_dir_all(work_dir)?;
    let file = work_dir.join("snapshot.in");
    let reply = bus::snapshot::fetch(
        client,
        subjects::API_SNAPSHOT_STORE,
        replica,
        stream_replicas,
        &file,
    )
    .await
    .context("a snapshot from a store replica")?;
    let (tree, db_path, loading) = (tree.clone(), db_path.to_owned(), file.clone());
    let entries = tokio::task::spawn_blocking(move || load(&tree, &db_path, &loading))
        .await
        .context("loading the snapshot")??;
    std::fs::remove_file(&file).ok();
    tracing::info!(
        from = %reply.from,
        applied = reply.applied,
        entries,
        "started from a snapshot; applying LRS_IN after it"
    );
    Ok(reply)
}
