//! Compaction of a stopped store: its database copied into a fresh one, checked, and swapped
//! in.
//!
//! sled keeps in its log the pages each write replaced until most of a segment is dead, so
//! the store's database grows to several times its entries: at 200,000 statements 473 MB on
//! disk for 112 MB of keys and values, 231 MB as a fresh copy (BENCHMARKS.md, the thirteenth
//! round), in sled's default segments of 512 KiB; a database made in the 16 MiB segments of
//! [`sledconf`] stays near what a copy takes (the thirty-first round). Those dead pages also
//! keep the bytes of what an erasure removed until sled reuses
//! their segment; a copy leaves them behind.
//!
//! The store is the system of record, so it is copied only while stopped: the copy holds the
//! original's lock from the first read until the copy is in its place, so no store can write
//! to it meanwhile (one starting fails fast on the lock). Every entry of every tree is
//! copied into `store-<time>.sled` beside it, the copy is flushed and read back against what
//! was copied (count and an XXH3-128 of every tree, key and value in order), and only then do
//! the two directories change places in one step (`renameat2` with `RENAME_EXCHANGE`): the
//! store's database is always `store.sled`, the original or the copy, never neither. The other
//! one then goes. On the way, records packed with an earlier dictionary (or kept as JSON) are
//! packed with the current one, each checked to read back as the same JSON (`packed`): the
//! copy then opens with this version or a later one, as the records a store writes do.
//! `store-<time>.sled` carries a `.remove` marker from before the copy starts until it is
//! gone, so whatever cut a compaction short, the next [`database_path`] removes it: before the
//! exchange it is the unfinished copy, after it the original.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The store's database in the data folder.
pub const DATABASE: &str = "store.sled";
/// Beside a database: remove it.
const MARKER: &str = ".remove";
/// Entries per sled batch in the copy.
const BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(
        "the store's database {0} is in use: stop `leerspoor serve` (or `leerspoor store`) first; \
         a running projector compacts with `leerspoor project --compact`"
    )]
    InUse(PathBuf),
    #[error("no store database in {0}")]
    Missing(PathBuf),
    #[error(
        "the copy does not read back as the original ({original} entries, {copied} in the copy): \
         removed, the original stays in use"
    )]
    Mismatch { original: u64, copied: u64 },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CompactError {
    let what = what.into();
    move |source| CompactError::Io { what, source }
}

/// What a compaction did.
#[derive(Debug, Clone)]
pub struct CompactReport {
    /// Entries copied and read back, over every tree.
    pub entries: u64,
    /// Bytes of keys and values.
    pub bytes_of_entries: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
}

/// The database the store opens in `data_dir` (`store.sled`), once whatever a compaction
/// cut short is removed (see the module documentation). Call it before opening the store's
/// database.
pub fn database_path(data_dir: &Path) -> Result<PathBuf, CompactError> {
    settle(data_dir)?;
    Ok(data_dir.join(DATABASE))
}

fn marker(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("{name}{MARKER}"))
}

/// Removes every `store-*.sled` marked for removal, then its marker.
fn settle(data_dir: &Path) -> Result<(), CompactError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io(format!("reading {}", data_dir.display()))(err)),
    };
    let mut settled = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(database) = name.strip_suffix(MARKER) else {
            continue;
        };
        if !(database.starts_with("store-") && database.ends_with(".sled")) {
            continue;
        }
        let path = data_dir.join(database);
        if path.exists() {
            tracing::info!(%database, "removing the database a compaction left behind");
            std::fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        std::fs::remove_file(entry.path())
            .map_err(io(format!("removing {}", entry.path().display())))?;
        settled = true;
    }
    if settled {
        sync_dir(data_dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), CompactError> {
    std::fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// How long [`compact`] waits for the database's lock: sled's threads hold it for a moment
/// after a store closed it.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Copies the stopped store's database in `data_dir` into a fresh one, checks it, and puts
/// it in use; the original goes. Fails with [`CompactError::InUse`] while a store runs on it
/// (after waiting up to `lock_wait` for its lock).
pub fn compact(
    data_dir: &Path,
    cache_bytes: u64,
    lock_wait: Duration,
) -> Result<CompactReport, CompactError> {
    let started = Instant::now();
    let active = database_path(data_dir)?;
    if !active.is_dir() {
        return Err(CompactError::Missing(data_dir.to_owned()));
    }
    let original = open_when_free(&active, cache_bytes, lock_wait)?;
    let bytes_before = original.size_on_disk()?;
    let name = format!("store-{}.sled", unique_suffix());
    let path = data_dir.join(&name);
    let marker = marker(data_dir, &name);
    std::fs::File::create(&marker).map_err(io(format!("writing {}", marker.display())))?;
    sync_dir(data_dir)?;
    let copied = (|| {
        let copy = open_copy(&path, cache_bytes)?;
        let (entries, bytes_of_entries, digest) = copy_all(&original, &copy)?;
        copy.flush()?;
        let read_back = read_all(&copy)?;
        let bytes_after = copy.size_on_disk()?;
        if read_back.0 != entries || read_back.2 != digest {
            return Err(CompactError::Mismatch {
                original: entries,
                copied: read_back.0,
            });
        }
        Ok((entries, bytes_of_entries, bytes_after))
    })();
    let (entries, bytes_of_entries, bytes_after) = match copied {
        Ok(copied) => copied,
        Err(err) => {
            settle(data_dir)?;
            return Err(err);
        }
    };
    // The copy's lock goes with its last handle (sled's threads may hold it a moment longer:
    // a store starting then fails on it and is started again).
    exchange(&active, &path).inspect_err(|_| {
        let _ = settle(data_dir);
    })?;
    sync_dir(data_dir)?;
    // The copy is `store.sled` now; the original, still locked by this process, goes.
    drop(original);
    settle(data_dir)?;
    Ok(CompactReport {
        entries,
        bytes_of_entries,
        bytes_before,
        bytes_after,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Swaps the directories `a` and `b` in one step (`renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<(), CompactError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)
        .map_err(|errno| io(format!("swapping {} and {}", a.display(), b.display()))(errno.into()))
}

/// Opens the database at `path` once its lock is free, or [`CompactError::InUse`] after
/// `wait`.
fn open_when_free(path: &Path, cache_bytes: u64, wait: Duration) -> Result<sled::Db, CompactError> {
    let deadline = Instant::now() + wait;
    loop {
        match open(path, cache_bytes) {
            Ok(db) => return Ok(db),
            // sled's words when another process (or handle) holds the database.
            Err(sled::Error::Io(err)) if err.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(CompactError::InUse(path.to_owned()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Opens the original as the store opens it, with the segments it was made with and no
/// flusher (it is only read).
fn open(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    crate::db::Db::sled_config(path, cache_bytes).open()
}

/// Makes the copy, in the small segments a copy takes least in and with sled's segment
/// cleaner running while it is written ([`sledconf::copy`]).
fn open_copy(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    sledconf::copy(path).cache_capacity(cache_bytes).open()
}

/// What [`copy_all`] and [`read_all`] count: entries, bytes of keys and values, and an
/// XXH3-128 of every tree's name, key and value in order.
type Tally = (u64, u64, u128);

struct Hasher {
    hasher: xxhash_rust::xxh3::Xxh3,
    entries: u64,
    bytes: u64,
}

impl Hasher {
    fn new() -> Hasher {
        Hasher {
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            entries: 0,
            bytes: 0,
        }
    }

    fn part(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_be_bytes());
        self.hasher.update(bytes);
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) {
        self.part(key);
        self.part(value);
        self.entries += 1;
        self.bytes += (key.len() + value.len()) as u64;
    }

    fn tally(&self) -> Tally {
        (self.entries, self.bytes, self.hasher.digest128())
    }
}

/// The trees' names in order (sled lists them in no particular one).
fn tree_names(db: &sled::Db) -> Vec<sled::IVec> {
    let mut names = db.tree_names();
    names.sort();
    names
}

/// Copies every entry; the tally is of what the copy holds, which [`read_all`] checks. Records
/// kept with an earlier dictionary (or as JSON) are packed with the current one on the way,
/// each checked to read back as the same JSON ([`crate::packed::repacked`]).
fn copy_all(from: &sled::Db, to: &sled::Db) -> Result<Tally, CompactError> {
    let mut hasher = Hasher::new();
    for name in tree_names(from) {
        hasher.part(&name);
        let (source, target) = (from.open_tree(&name)?, to.open_tree(&name)?);
        // The records are in sled's default tree (the one `sled::Db` itself is).
        let records = *name == *from.name();
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in source.iter() {
            let (key, mut value) = item?;
            if records && key.first() == Some(&crate::keys::RECORD) {
                if let Some(repacked) = crate::packed::repacked(&value) {
                    value = repacked.into();
                }
            }
            hasher.entry(&key, &value);
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == BATCH {
                target.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        target.apply_batch(batch)?;
    }
    Ok(hasher.tally())
}

fn read_all(db: &sled::Db) -> Result<Tally, CompactError> {
    let mut hasher = Hasher::new();
    for name in tree_names(db) {
        hasher.part(&name);
        for item in db.open_tree(&name)?.iter() {
            let (key, value) = item?;
            hasher.entry(&key, &value);
        }
    }
    Ok(hasher.tally())
}

/// A unique, sortable name part.
fn unique_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_secs(), now.subsec_nanos())
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
