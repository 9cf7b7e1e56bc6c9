//! Rebuilding every summary from the stored statements (not from `LRS_STORED`, which may have
//! expired), and swapping the result in.
//!
//! The rebuild pages through the store's statements (`lrs.api.statements`, ascending: the
//! stored, non-voided ones) into a fresh database beside the current one, while queries keep
//! being answered from the current one. It then takes over the current one's applied
//! `LRS_STORED` sequence, becomes current in one step (readers see either the old or the new
//! database, never a mix), and is named in `projector.current` so that a restart opens it.
//! Events after that sequence are applied on top as usual; per-statement markers make the
//! overlap with what the store already had harmless.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use bus::subjects;
use bus::wire::{EventKind, StatementQuery, StatementReply, StoredEvent, StoredEvents};

use crate::projection::Projection;

/// Names the directory of the database in use, relative to the data folder.
const POINTER: &str = "projector.current";
const FIRST: &str = "projector.sled";

/// The database in use, swappable while readers hold the previous one.
#[derive(Clone)]
pub struct Current(Arc<RwLock<Arc<Projection>>>);

impl Current {
    pub fn new(projection: Projection) -> Current {
        Current(Arc::new(RwLock::new(Arc::new(projection))))
    }

    pub fn get(&self) -> Arc<Projection> {
        self.0
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// A handle that does not keep the database open: [`Weak::get`] gives the database in use
    /// while the projector holds it, nothing once the projector has stopped.
    pub fn downgrade(&self) -> Weak {
        Weak(Arc::downgrade(&self.0))
    }

    fn replace(&self, projection: Arc<Projection>) -> Arc<Projection> {
        let mut current = self.0.write().unwrap_or_else(|poison| poison.into_inner());
        std::mem::replace(&mut *current, projection)
    }
}

/// [`Current::downgrade`].
#[derive(Clone)]
pub struct Weak(std::sync::Weak<RwLock<Arc<Projection>>>);

impl Weak {
    pub fn get(&self) -> Option<Arc<Projection>> {
        self.0.upgrade().map(|current| Current(current).get())
    }
}

/// The directory of the database in use.
pub fn active_path(data_dir: &Path) -> PathBuf {
    let name = std::fs::read_to_string(data_dir.join(POINTER))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .unwrap_or_else(|| FIRST.to_owned());
    data_dir.join(name)
}

/// What a rebuild did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RebuildReport {
    pub statements: u64,
    pub applied_sequence: u64,
    pub database: String,
}

/// Rebuilds from the store and swaps the result in. Call it where no message is being applied
/// (the projector's pull loop), so the applied sequence it takes over stays put.
pub async fn rebuild(
    client: &async_nats::Client,
    data_dir: &Path,
    current: &Current,
) -> anyhow::Result<RebuildReport> {
    let name = format!("projector-{}.sled", unique_suffix());
    let path = data_dir.join(&name);
    let fresh_path = path.clone();
    let cache_bytes = current.get().cache_bytes();
    let fresh = Arc::new(
        tokio::task::spawn_blocking(move || Projection::open_sized(&fresh_path, cache_bytes))
            .await
            .context("rebuild task")??,
    );
    let mut after = None;
    let mut statements = 0u64;
    let mut sequence = 0u64;
    loop {
        let query = StatementQuery {
            ascending: true,
            limit: 100,
            after,
            ..StatementQuery::default()
        };
        let to = bus::request::Ask::store(subjects::API_STATEMENTS, Duration::from_secs(30));
        let StatementReply::Page {
            statements: page,
            next_after,
            ..
        } = bus::request::ask_json(client, to, &query)
            .await
            .context("asking the store for statements")?
        else {
            anyhow::bail!("the store refused the statement query");
        };
        statements += page.len() as u64;
        sequence += 1;
        let events = StoredEvents {
            sequence,
            events: page
                .into_iter()
                .map(|statement| StoredEvent {
                    kind: EventKind::Stored,
                    position: 0,
                    statement,
                })
                .collect(),
        };
        let target = fresh.clone();
        tokio::task::spawn_blocking(move || target.apply(sequence, &events))
            .await
            .context("rebuild task")??;
        match next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let applied = current.get().applied()?;
    let target = fresh.clone();
    tokio::task::spawn_blocking(move || {
        target.set_applied(applied)?;
        target.flush()
    })
    .await
    .context("rebuild task")??;
    swap_in(data_dir, current, &name, fresh).context("swapping the rebuilt database in")?;
    Ok(RebuildReport {
        statements,
        applied_sequence: applied,
        database: name,
    })
}

/// Makes `fresh` (the database `name` in `data_dir`) the one in use: named in
/// `projector.current` for restarts first, then handed to readers; the previous one's
/// directory goes (readers still holding it keep its open files).
pub(crate) fn swap_in(
    data_dir: &Path,
    current: &Current,
    name: &str,
    fresh: Arc<Projection>,
) -> std::io::Result<()> {
    let path = data_dir.join(name);
    let pointer = data_dir.join(POINTER);
    let pointer_tmp = data_dir.join(format!("{POINTER}.tmp"));
    std::fs::write(&pointer_tmp, name)?;
    std::fs::rename(&pointer_tmp, &pointer)?;
    let previous = current.replace(fresh);
    let previous_path = previous.path().to_owned();
    drop(previous);
    if previous_path != path {
        let _ = std::fs::remove_dir_all(previous_path);
    }
    Ok(())
}

/// Removes the databases a rebuild or a compaction left half made (stopped before its
/// swap): every `projector-*.sled` in `data_dir` but `active`. Call it before opening.
pub fn remove_unfinished(data_dir: &Path, active: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("projector-") && name.ends_with(".sled") && path != active {
            tracing::info!(database = %name, "removing a copy left unfinished");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A unique, sortable directory suffix.
pub(crate) fn unique_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_secs(), now.subsec_nanos())
}
