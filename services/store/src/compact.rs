//! Compaction of a stopped store: its database copied into a fresh one, checked, and swapped
//! in.
//!
//! sled keeps in its log the pages each write replaced until most of a segment is dead, so
//! the store's database grows to several times its entries: at 200,000 statements 473 MB on
//! disk for 112 MB of keys and values, 231 MB as a fresh copy (BENCHMARKS.md, the thirteenth
//! round). Those dead pages also keep the bytes of what an erasure removed until sled reuses
//! their segment; a copy leaves them behind.
//!
//! The store is the system of record, so it is copied only while stopped: the copy holds the
//! original's lock from the first read until the copy is in use, so no store can write to
//! it meanwhile (one starting fails fast on the lock). Every entry of every tree is copied,
//! the copy is flushed, and read back against the original (count and an XXH3-128 of every
//! tree, key and value in order) before anything changes.
//!
//! Which database is in use is named by `store.current` in the data folder (`store.sled`
//! while there is none). Writing it (a temporary file, synced, renamed over, the folder
//! synced) is the one step that puts the copy in use. Before the copy starts, both databases
//! get a `<name>.remove` marker beside them; whatever cut a compaction short, the next
//! [`database_path`] removes every marked database that is not the one in use and then the
//! markers, so the loser of the swap goes and the winner stays, whichever it is.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Names the database in use, relative to the data folder.
pub const POINTER: &str = "store.current";
/// The database before any compaction (and while `store.current` does not exist).
pub const FIRST: &str = "store.sled";
/// Beside a database: remove it unless it is the one in use.
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
    #[error("{POINTER} names {name:?}, which {reason}")]
    BadPointer { name: String, reason: &'static str },
    #[error(
        "{FIRST} is missing but {found} is there and no {POINTER} names it: not opening an empty \
         store beside it (restore {POINTER} with the name of the database to use)"
    )]
    Unnamed { found: String },
    #[error(
        "the copy does not read back as the original ({original} entries, {copied} in the copy): \
         removed, the original stays in use"
    )]
    Mismatch { original: u64, copied: u64 },
    #[error("sled")]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CompactReport {
    /// Entries copied and read back, over every tree.
    pub entries: u64,
    /// Bytes of keys and values.
    pub bytes_of_entries: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
    /// The database now in use, relative to the data folder.
    pub database: String,
}

/// The database the store opens in `data_dir`, once whatever a compaction cut short is
/// settled (see the module documentation). Call it before opening the store's database.
pub fn database_path(data_dir: &Path) -> Result<PathBuf, CompactError> {
    let active = active_path(data_dir)?;
    settle(data_dir, &active)?;
    Ok(active)
}

/// The database `store.current` names, or `store.sled`; refuses a name that does not exist
/// and a missing `store.sled` beside compacted databases no pointer names (the store would
/// otherwise start empty beside its own data).
fn active_path(data_dir: &Path) -> Result<PathBuf, CompactError> {
    match std::fs::read_to_string(data_dir.join(POINTER)) {
        Ok(name) => {
            let name = name.trim().to_owned();
            if !is_database_name(&name) {
                return Err(CompactError::BadPointer {
                    name,
                    reason: "is not a store database's name",
                });
            }
            let path = data_dir.join(&name);
            if !path.is_dir() {
                return Err(CompactError::BadPointer {
                    name,
                    reason: "does not exist",
                });
            }
            Ok(path)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let first = data_dir.join(FIRST);
            if !first.exists() {
                if let Some(found) = databases(data_dir)?
                    .into_iter()
                    .find(|name| name != FIRST && !marked(data_dir, name))
                {
                    return Err(CompactError::Unnamed { found });
                }
            }
            Ok(first)
        }
        Err(err) => Err(io(format!("reading {}", data_dir.join(POINTER).display()))(
            err,
        )),
    }
}

fn is_database_name(name: &str) -> bool {
    name == FIRST || (name.starts_with("store-") && name.ends_with(".sled") && !name.contains('/'))
}

/// The store databases' names in `data_dir`.
fn databases(data_dir: &Path) -> Result<Vec<String>, CompactError> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(err) => return Err(io(format!("reading {}", data_dir.display()))(err)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_database_name(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn marker(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("{name}{MARKER}"))
}

fn marked(data_dir: &Path, name: &str) -> bool {
    marker(data_dir, name).exists()
}

/// Removes every database marked for removal but `active`, then the markers.
fn settle(data_dir: &Path, active: &Path) -> Result<(), CompactError> {
    for name in databases(data_dir)? {
        if !marked(data_dir, &name) {
            continue;
        }
        let path = data_dir.join(&name);
        if path != active {
            tracing::info!(database = %name, "removing the database a compaction left behind");
            std::fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        let marker = marker(data_dir, &name);
        std::fs::remove_file(&marker).map_err(io(format!("removing {}", marker.display())))?;
    }
    sync_dir(data_dir)
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
        return Err(CompactError::BadPointer {
            name: FIRST.to_owned(),
            reason: "does not exist: no store database in this data folder",
        });
    }
    let original = open_when_free(&active, cache_bytes, lock_wait)?;
    let bytes_before = original.size_on_disk()?;
    let name = format!("store-{}.sled", unique_suffix());
    let path = data_dir.join(&name);
    let active_name = active
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| FIRST.to_owned());
    for marked in [&active_name, &name] {
        std::fs::File::create(marker(data_dir, marked))
            .map_err(io("marking the databases of the compaction"))?;
    }
    sync_dir(data_dir)?;
    let copied = (|| {
        let copy = open(&path, cache_bytes)?;
        let (entries, bytes_of_entries, digest) = copy_all(&original, &copy)?;
        copy.flush()?;
        let (read_back, _, digest_back) = read_all(&copy)?;
        let bytes_after = copy.size_on_disk()?;
        Ok::<_, CompactError>((
            entries,
            bytes_of_entries,
            digest == digest_back,
            read_back,
            bytes_after,
        ))
    })();
    let (entries, bytes_of_entries, same, read_back, bytes_after) = match copied {
        Ok(copied) => copied,
        Err(err) => {
            settle(data_dir, &active)?;
            return Err(err);
        }
    };
    if !same || read_back != entries {
        settle(data_dir, &active)?;
        return Err(CompactError::Mismatch {
            original: entries,
            copied: read_back,
        });
    }
    // The one step that puts the copy in use; the original's lock is held until after it.
    let pointer = data_dir.join(POINTER);
    let pointer_tmp = data_dir.join(format!("{POINTER}.tmp"));
    (|| {
        let mut file = std::fs::File::create(&pointer_tmp)?;
        file.write_all(name.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&pointer_tmp, &pointer)
    })()
    .map_err(io(format!("writing {}", pointer.display())))?;
    sync_dir(data_dir)?;
    settle(data_dir, &path)?;
    drop(original);
    Ok(CompactReport {
        entries,
        bytes_of_entries,
        bytes_before,
        bytes_after,
        seconds: started.elapsed().as_secs_f64(),
        database: name,
    })
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

fn open(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(None)
        .open()
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

fn copy_all(from: &sled::Db, to: &sled::Db) -> Result<Tally, CompactError> {
    let mut hasher = Hasher::new();
    for name in tree_names(from) {
        hasher.part(&name);
        let (source, target) = (from.open_tree(&name)?, to.open_tree(&name)?);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in source.iter() {
            let (key, value) = item?;
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
