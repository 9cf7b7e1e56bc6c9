//! How every Leerspoor database is opened in sled: the one place that says how large the
//! log's segments are.
//!
//! sled writes every change to a log of fixed-size segments and reuses a segment only once
//! at most half of it is live, and its file never shrinks below the highest segment used.
//! With sled's default of 512 KiB, a store that took a million statements of the ingest
//! workload left 2.2 GB on disk and its projector 2.4 GB, for 1.25 GB of statements' JSON;
//! with segments of [`SEGMENT_BYTES`] the same ingest left 1.3 and 1.9 GB (BENCHMARKS.md,
//! the thirty-first round). A fresh copy (a compaction's, written once in key order) goes the
//! other way: the store's copy took 0.87 GB in 512 KiB segments and 1.1 GB in 16 MiB ones,
//! so a copy is made in [`COPY_SEGMENT_BYTES`] ([`copy`]) and a database the ingest makes in
//! [`SEGMENT_BYTES`] ([`config`]). Large segments cost memory: sled fills a buffer of a whole
//! segment before writing it, and the peak resident memory of `bench --targets --size
//! 100000` was 50–70 MiB higher.
//!
//! sled refuses to open a database with another segment size than the one it was made
//! with, so a database made before, or a copy, keeps its own: it is read from sled's `conf`
//! file beside the data.

use std::path::Path;

/// The log's segment size for a database made now (sled allows at most 16 MiB).
pub const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// The log's segment size for a copy made now: sled's default.
pub const COPY_SEGMENT_BYTES: usize = 512 * 1024;

/// How often, in milliseconds, sled's flusher thread runs in the projector's database (sled's
/// own default). Each write is flushed before its ack by the code itself; the thread is there
/// for sled's segment cleaner, which moves the live pages out of a segment of the log that is
/// at most half live so that the segment is reused, and which runs in that thread for up to
/// half of every interval (besides one page each time a page is rewritten by a write). The
/// projector ran without it until the thirty-third round: at a million statements its database
/// as the ingest left it took 1,759–1,978 MB without the thread and 1,174–1,309 MB with it
/// (BENCHMARKS.md).
///
/// The thread never stops once sled's cleaner falls into a loop that sled 0.34 has no way
/// out of: when a database is opened again, the first write weighs every segment of its log,
/// and those at most half live (37 of the 79 of a store at a million statements) are queued
/// for cleaning; sled also relocates the last segment of the file whenever free segments are
/// at least as many as the others, and it cleans the lowest offset first, so those
/// relocations, always lower, go before the queued segments forever. The store's log was
/// then rewritten at 32–35 MB/s with 26–31% of a core, its file unchanged, for as long as it
/// was watched (BENCHMARKS.md, the thirty-eighth round). The store is opened
/// [`cleaned_as_written`] for that reason. The projector's database, as the ingest of a
/// million statements left it, did the same once a `serve` started on it again had written
/// once: 17–30 MB/s with a third of a core for as long as it was watched, nothing sent
/// (the forty-fifth round); it is opened [`cleaned_unless_reopened`].
pub const CLEANING_MS: u64 = 500;

/// sled's configuration for the database at `path`: its path, the segment size it was made
/// with ([`SEGMENT_BYTES`] for a new one), and the flusher every [`CLEANING_MS`]. The caller
/// adds its cache.
pub fn config(path: &Path) -> sled::Config {
    made_with(path, SEGMENT_BYTES).flush_every_ms(Some(CLEANING_MS))
}

/// [`config`] without sled's flusher thread: the segment cleaner moves one page each time a
/// write rewrites a page, so it works while the database is written and stops when the writes
/// stop. The store's database is opened so: after a restart its log was rewritten without end
/// with the thread ([`CLEANING_MS`]) and not at all without it; as the ingest of a million
/// statements left it, it took 2.1 GB without the thread against 1.3 with it (BENCHMARKS.md,
/// the thirty-eighth round).
pub fn cleaned_as_written(path: &Path) -> sled::Config {
    made_with(path, SEGMENT_BYTES).flush_every_ms(None)
}

/// [`config`] for a database made now, [`cleaned_as_written`] for one opened again (the
/// projector's after a restart, a compaction's copy once written): sled's cleaner can loop
/// without end in a database opened again ([`CLEANING_MS`]; a copy swapped in after an
/// erasure was rewritten at ~2 MB/s while idle), and never did in one the ingest made from
/// empty in the process writing it. Opened again, the database is cleaned as it is written,
/// and the projector's own compaction takes back its dead space when due.
pub fn cleaned_unless_reopened(path: &Path) -> sled::Config {
    match segment_size(path) {
        Some(_) => cleaned_as_written(path),
        None => config(path),
    }
}

/// How often, in milliseconds, the flusher of a copy being written runs: a copy, written once
/// in key order, leaves the first versions of its pages dead behind it, and the more often
/// the cleaner runs the fewer segments it grows past. A copy of the bench's projector at a
/// million statements (6.5 million entries) took 1,640–1,672 MB without the thread and
/// 1,488–1,547 MB with it every 50 ms (seven runs), the store's 986–997 and 911–925; 2 million
/// small keys 973 MB without it, 814 every 500 ms, 654–711 every 100 and 690 every 50
/// (BENCHMARKS.md, the thirty-third round).
pub const COPY_CLEANING_MS: u64 = 50;

/// [`config`] for a copy being written: a new database is made with [`COPY_SEGMENT_BYTES`],
/// and sled's flusher runs every [`COPY_CLEANING_MS`] (once written, the copy is opened again
/// with [`config`] before it is used).
pub fn copy(path: &Path) -> sled::Config {
    made_with(path, COPY_SEGMENT_BYTES).flush_every_ms(Some(COPY_CLEANING_MS))
}

fn made_with(path: &Path, new: usize) -> sled::Config {
    sled::Config::new()
        .path(path)
        .segment_size(segment_size(path).unwrap_or(new))
}

/// The segment size the database at `path` was made with, from sled's `conf` file (lines
/// such as `segment_size: 524288`, then a CRC-32 of four bytes); `None` for a new database.
/// A `conf` that cannot be read also gives `None`: sled's own open then says what is wrong
/// with it.
pub fn segment_size(path: &Path) -> Option<usize> {
    let conf = std::fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "segment_size")
        .and_then(|(_, value)| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_made_with_large_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new.sled");
        assert_eq!(segment_size(&path), None);
        assert_eq!(config(&path).flush_every_ms, Some(CLEANING_MS));
        let db = config(&path).flush_every_ms(None).open().expect("open");
        db.insert(b"key", b"value".as_slice()).expect("insert");
        db.flush().expect("flush");
        drop(db);
        assert_eq!(segment_size(&path), Some(SEGMENT_BYTES));
        let again = config(&path)
            .flush_every_ms(None)
            .open()
            .expect("open again");
        assert_eq!(
            again.get(b"key").expect("get").as_deref(),
            Some(&b"value"[..])
        );
    }

    /// A database made before (sled's default segments) opens with its own size: sled
    /// refuses it under another, as the first half of the test shows.
    #[test]
    fn a_database_made_with_other_segments_keeps_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.sled");
        let old = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .open()
            .expect("open");
        old.insert(b"key", b"value".as_slice()).expect("insert");
        old.flush().expect("flush");
        drop(old);
        let made_with = segment_size(&path).expect("conf written");
        assert_ne!(made_with, SEGMENT_BYTES);
        let refused = sled::Config::new()
            .path(&path)
            .segment_size(SEGMENT_BYTES)
            .open();
        assert!(refused.is_err(), "sled opened it with another segment size");
        let db = config(&path)
            .flush_every_ms(None)
            .open()
            .expect("open with its own segments");
        assert_eq!(db.get(b"key").expect("get").as_deref(), Some(&b"value"[..]));
        drop(db);
        assert_eq!(segment_size(&path), Some(made_with));
    }

    /// The store's database runs no flusher thread, in the segments a database in use is made
    /// with.
    #[test]
    fn a_database_cleaned_as_written_runs_no_flusher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sled");
        assert_eq!(cleaned_as_written(&path).flush_every_ms, None);
        let db = cleaned_as_written(&path).open().expect("open");
        db.insert(b"key", b"value".as_slice()).expect("insert");
        db.flush().expect("flush");
        drop(db);
        assert_eq!(segment_size(&path), Some(SEGMENT_BYTES));
    }

    /// A database made now runs sled's flusher; opened again (a restart, a compaction's copy once
    /// written), it runs none and keeps its segments.
    #[test]
    fn a_database_opened_again_runs_no_flusher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("projector.sled");
        assert_eq!(
            cleaned_unless_reopened(&path).flush_every_ms,
            Some(CLEANING_MS)
        );
        let db = cleaned_unless_reopened(&path).open().expect("open");
        db.insert(b"key", b"value".as_slice()).expect("insert");
        db.flush().expect("flush");
        drop(db);
        assert_eq!(segment_size(&path), Some(SEGMENT_BYTES));
        assert_eq!(cleaned_unless_reopened(&path).flush_every_ms, None);

        // A compaction's copy, once written, is opened again as well: no flusher either.
        let copied = dir.path().join("copy.sled");
        let db = copy(&copied).open().expect("open the copy");
        db.insert(b"key", b"value".as_slice()).expect("insert");
        db.flush().expect("flush");
        drop(db);
        let reopened = cleaned_unless_reopened(&copied);
        assert_eq!(reopened.flush_every_ms, None);
        assert_eq!(reopened.segment_size, COPY_SEGMENT_BYTES);
    }

    /// A copy is made in small segments, with sled's flusher (and its segment cleaner)
    /// running while it is written; a database of either size opened as a copy keeps its
    /// own segments.
    #[test]
    fn a_copy_is_made_with_small_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (copy_path, made_path) = (dir.path().join("copy.sled"), dir.path().join("made.sled"));
        assert_eq!(copy(&copy_path).flush_every_ms, Some(COPY_CLEANING_MS));
        for (path, open, size) in [
            (
                &copy_path,
                copy as fn(&Path) -> sled::Config,
                COPY_SEGMENT_BYTES,
            ),
            (&made_path, config, SEGMENT_BYTES),
        ] {
            let db = open(path).flush_every_ms(None).open().expect("open");
            db.flush().expect("flush");
            drop(db);
            assert_eq!(segment_size(path), Some(size));
        }
        let made = copy(&made_path)
            .flush_every_ms(None)
            .open()
            .expect("open as a copy");
        drop(made);
        assert_eq!(segment_size(&made_path), Some(SEGMENT_BYTES));
    }

    /// sled ends its `conf` with a CRC that need not be UTF-8.
    #[test]
    fn the_size_is_read_before_sleds_checksum() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conf = b"segment_size: 1048576\nuse_compression: false\nversion: 0.34\n".to_vec();
        conf.extend_from_slice(&[0xff, 0xfe, 0x80, 0x00]);
        std::fs::write(dir.path().join("conf"), conf).expect("write");
        assert_eq!(segment_size(dir.path()), Some(1024 * 1024));
    }

    #[test]
    fn a_conf_without_a_segment_size_gives_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("conf"),
            "use_compression: false\nsegment_size: x\n",
        )
        .expect("write");
        assert_eq!(segment_size(dir.path()), None);
    }
}
