//! `leerspoor compact`: a stopped node's store and projector databases copied into fresh ones
//! and swapped in (see [`store::compact`] and [`projector::compact`]).
//!
//! sled keeps the pages its writes replaced until most of a segment is dead: the databases
//! take two to four times what a fresh copy takes, and those dead pages hold the bytes of
//! what erasures removed. The store is copied only while stopped (the system of record); a
//! running projector compacts on its own or with `leerspoor project --compact`. With
//! replicas, compact one replica at a time: started again, it applies the log it missed.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;

/// What `leerspoor compact` did to each database.
pub struct Compacted {
    pub store: store::compact::CompactReport,
    pub projector: Option<projector::compact::CompactReport>,
}

/// Compacts the store's database, then the projector's (when the folder holds one).
pub fn run(config: &Config) -> anyhow::Result<Compacted> {
    compact(
        &config.data_dir,
        config.memory.store_cache_mb.max(1) * 1024 * 1024,
        config.memory.projector_cache_mb.max(1) * 1024 * 1024,
    )
}

pub fn compact(
    data_dir: &Path,
    store_cache_bytes: u64,
    projector_cache_bytes: u64,
) -> anyhow::Result<Compacted> {
    let store = store::compact::compact(data_dir, store_cache_bytes, store::compact::LOCK_WAIT)
        .with_context(|| format!("compacting the store in {}", data_dir.display()))?;
    let projector = projector::compact::compact_stopped(
        data_dir,
        projector_cache_bytes,
        store::compact::LOCK_WAIT,
    )
    .with_context(|| {
        format!(
            "compacting the projector in {} (is a projector running on it? a running one \
                 compacts with `leerspoor project --compact`)",
            data_dir.display()
        )
    })?;
    Ok(Compacted { store, projector })
}

impl Compacted {
    /// What the command prints.
    pub fn lines(&self) -> Vec<String> {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let mut lines = vec![format!(
            "store: {:.0} MB -> {:.0} MB on disk ({} entries, {:.0} MB, copied and read back in {:.1} s)",
            mb(self.store.bytes_before),
            mb(self.store.bytes_after),
            self.store.entries,
            mb(self.store.bytes_of_entries),
            self.store.seconds,
        )];
        match &self.projector {
            Some(report) => lines.push(format!(
                "projector: {:.0} MB -> {:.0} MB on disk ({} entries in {:.1} s; now {})",
                mb(report.bytes_before),
                mb(report.bytes_after),
                report.entries,
                report.seconds,
                report.database
            )),
            None => lines.push("projector: no database in this data folder".to_owned()),
        }
        lines
    }
}
