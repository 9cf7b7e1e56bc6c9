//! `leerspoor compact`: a stopped node's store and projector databases copied into fresh ones
//! and swapped in (see [`store::compact`] and [`projector::compact`]).
//!
//! sled keeps the pages its writes replaced until most of a segment is dead: in sled's default
//! segments of 512 KiB the databases take two to four times what a fresh copy takes (in the
//! 16 MiB segments of databases made now, `services/sledconf`, about what one takes), and
//! those dead pages hold the bytes of what erasures removed. The store is copied only while
//! stopped (the system of record); a running projector compacts on its own or with
//! `leerspoor project --compact`. With replicas, compact one replica at a time: started
//! again, it applies the log it missed.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;

/// What `leerspoor compact` did to each database.
pub struct Compacted {
    pub store: Option<store::compact::CompactReport>,
    pub projector: Option<projector::compact::CompactReport>,
}

/// Compacts the store's database, then the projector's: those the folder holds (a split
/// deployment's store or projector folder holds one), at least one.
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
    let store =
        match store::compact::compact(data_dir, store_cache_bytes, store::compact::LOCK_WAIT) {
            Err(store::compact::CompactError::Missing(_)) => None,
            compacted => Some(
                compacted
                    .with_context(|| format!("compacting the store in {}", data_dir.display()))?,
            ),
        };
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
    anyhow::ensure!(
        store.is_some() || projector.is_some(),
        "no store or projector database in {}",
        data_dir.display()
    );
    Ok(Compacted { store, projector })
}

impl Compacted {
    /// What the command prints.
    pub fn lines(&self) -> Vec<String> {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let mut lines = vec![match &self.store {
            Some(report) => format!(
                "store: {:.0} MB -> {:.0} MB on disk ({} entries, {:.0} MB, copied and read back in {:.1} s){}",
                mb(report.bytes_before),
                mb(report.bytes_after),
                report.entries,
                mb(report.bytes_of_entries),
                report.seconds,
                if report.bytes_after > report.bytes_before {
                    // sled gives back the end of its file when it opens a database whose
                    // last segments are free (BENCHMARKS.md, the thirty-second round).
                    "; larger than before: sled had given back the end of the original's \
                     file on its own, and the copy is kept all the same, as it is what takes \
                     erased statements' bytes out of sled's old pages"
                } else {
                    ""
                },
            ),
            None => "store: no database in this data folder".to_owned(),
        }];
        match &self.projector {
            Some(report) => lines.push(format!(
                "projector: {} ({} entries in {:.1} s; now {}){}",
                report.sizes(),
                report.entries,
                report.seconds,
                report.database,
                report.why()
            )),
            None => lines.push("projector: no database in this data folder".to_owned()),
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 16 * 1024 * 1024;

    #[test]
    fn a_folder_with_neither_database_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let refused = compact(dir.path(), CACHE, CACHE).err().expect("refused");
        assert!(
            refused
                .to_string()
                .contains("no store or projector database"),
            "{refused}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);
    }

    /// A store or projector that came out of its copy larger says why the copy is kept all
    /// the same.
    #[test]
    fn a_database_copied_larger_says_why_it_is_kept() {
        let report = |bytes_before, bytes_after, kept_back| Compacted {
            store: Some(store::compact::CompactReport {
                entries: 10,
                bytes_of_entries: 1_000,
                bytes_before,
                bytes_after,
                seconds: 0.5,
            }),
            projector: Some(projector::compact::CompactReport {
                entries: 20,
                rounds: 1,
                written_in_pause: 0,
                bytes_before,
                bytes_after,
                seconds: 0.7,
                pause_seconds: 0.1,
                database: "projector-1-2.sled".into(),
                kept_back,
                nothing_erased: kept_back,
            }),
        };
        let larger = report(721_000_000, 987_000_000, false).lines();
        assert!(
            larger[0].starts_with("store: 721 MB -> 987 MB on disk"),
            "{}",
            larger[0]
        );
        assert!(larger[0].contains("larger than before"), "{}", larger[0]);
        assert!(
            larger[0].contains("erased statements' bytes"),
            "{}",
            larger[0]
        );
        assert!(
            larger[1].starts_with("projector: 721 MB -> 987 MB on disk"),
            "{}",
            larger[1]
        );
        assert!(larger[1].contains("larger than before"), "{}", larger[1]);
        assert!(
            larger[1].contains("an erasure since the last copy"),
            "{}",
            larger[1]
        );
        // Nothing erased since its last copy: the projector's database in use stays.
        let kept = report(721_000_000, 987_000_000, true).lines();
        assert!(
            kept[1].starts_with(
                "projector: 721 MB on disk, kept; its copy took 987 MB and was removed"
            ),
            "{}",
            kept[1]
        );
        assert!(
            kept[1].contains("no erased statement's bytes"),
            "{}",
            kept[1]
        );
        let smaller = report(2_185_000_000, 998_000_000, false).lines();
        assert!(!smaller[0].contains("larger"), "{}", smaller[0]);
        assert!(
            smaller[0].ends_with("copied and read back in 0.5 s)"),
            "{}",
            smaller[0]
        );
        assert!(!smaller[1].contains("larger"), "{}", smaller[1]);
        assert!(
            smaller[1].ends_with("now projector-1-2.sled)"),
            "{}",
            smaller[1]
        );
    }

    /// A split deployment's projector folder holds no store: its projector is compacted.
    #[test]
    fn a_projector_folder_compacts_its_projector_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = projector::rebuild::active_path(dir.path());
        projector::projection::Projection::open(&first)
            .expect("projector database")
            .flush()
            .expect("flush");
        let compacted = compact(dir.path(), CACHE, CACHE).expect("compacted");
        assert!(compacted.store.is_none());
        let report = compacted
            .projector
            .as_ref()
            .expect("the projector compacted");
        assert_eq!(
            projector::rebuild::active_path(dir.path()),
            dir.path().join(&report.database)
        );
        assert!(!dir.path().join("store.sled").exists(), "no store made");
        assert!(compacted.lines()[0].contains("store: no database"));
    }
}
