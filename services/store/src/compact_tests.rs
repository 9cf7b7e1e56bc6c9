//! Unit tests of compacting a stopped store.
use super::*;
use crate::db::tests::{apply, by_verb, reopen};
use crate::db::{Db, DEFAULT_CACHE_BYTES};
use crate::keys;
use xapi::Validator;

/// A data folder whose store applied `messages` messages of five statements, closed.
fn stopped_store(messages: u64) -> (tempfile::TempDir, Validator) {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(&database_path(dir.path()).expect("path")).expect("open");
    for sequence in 1..=messages {
        apply(&db, &validator, sequence);
    }
    db.flush().expect("flush");
    drop(db);
    (dir, validator)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_compaction_keeps_every_entry_and_the_store_goes_on_from_it() {
    let (dir, validator) = stopped_store(12);
    let path = dir.path().join(DATABASE);
    let before = reopen(&path);
    let (digest, statements) = (before.digest().expect("digest"), by_verb(&before));
    let entries = before.tree().len() as u64;
    drop(before);
    let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&path.metadata().expect("stat"));
    let original = inode(&path);

    let report = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact");
    assert_ne!(inode(&path), original, "store.sled is the copy");
    assert_eq!(report.entries, entries, "every entry copied");
    assert!(report.bytes_of_entries > 0 && report.bytes_after > 0);
    // The copy is store.sled; the original and the marker are gone.
    assert_eq!(names(dir.path()), vec![DATABASE.to_owned()]);
    assert_eq!(database_path(dir.path()).expect("path"), path);
    let after = reopen(&path);
    assert_eq!(after.digest().expect("digest"), digest);
    assert_eq!(by_verb(&after), statements);

    // It goes on applying where it was, and compacts again.
    apply(&after, &validator, 13);
    let grown = by_verb(&after);
    assert_eq!(grown, statements + 5);
    after.flush().expect("flush");
    drop(after);
    compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact again");
    assert_eq!(names(dir.path()), vec![DATABASE.to_owned()]);
    assert_eq!(by_verb(&reopen(&path)), grown);
}

#[test]
fn a_compaction_packs_records_kept_otherwise_with_the_current_dictionary() {
    let (dir, _validator) = stopped_store(4);
    let path = dir.path().join(DATABASE);
    let before = reopen(&path);
    // Half the records as the first dictionary packed them, half as JSON from before packing.
    let mut older = sled::Batch::default();
    for (n, item) in before.tree().scan_prefix([keys::RECORD]).enumerate() {
        let (key, bytes) = item.expect("record");
        let json = crate::db::unpack(&key, &bytes)
            .expect("unpacks")
            .into_owned();
        older.insert(
            key,
            if n % 2 == 0 {
                crate::packed::pack_v1(&json)
            } else {
                json
            },
        );
    }
    before.tree().apply_batch(older).expect("batch");
    let tags = |db: &Db| -> std::collections::BTreeSet<u8> {
        db.tree()
            .scan_prefix([keys::RECORD])
            .map(|item| item.expect("record").1[0])
            .collect()
    };
    assert_eq!(tags(&before), [0x01, b'{'].into());
    let (digest, statements) = (before.digest().expect("digest"), by_verb(&before));
    before.flush().expect("flush");
    drop(before);

    let report = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact");
    let after = reopen(&path);
    assert_eq!(tags(&after), [0x02].into(), "every record packed anew");
    assert_eq!(report.entries, after.tree().len() as u64);
    // The same statements, positions and JSON: the digest reads records as JSON.
    assert_eq!(after.digest().expect("digest"), digest);
    assert_eq!(by_verb(&after), statements);
}

#[test]
fn a_store_in_use_is_not_compacted_and_nothing_changes() {
    let (dir, validator) = stopped_store(5);
    let path = dir.path().join(DATABASE);
    let running = reopen(&path);
    let refused = compact(dir.path(), DEFAULT_CACHE_BYTES, Duration::ZERO);
    assert!(
        matches!(&refused, Err(CompactError::InUse(at)) if at == &path),
        "{refused:?}"
    );
    let said = refused.expect_err("refused").to_string();
    assert!(said.contains("stop `leerspoor serve`"), "{said}");
    assert_eq!(names(dir.path()), vec![DATABASE.to_owned()]);
    apply(&running, &validator, 6);
    assert_eq!(by_verb(&running), 30);
}

#[test]
fn a_folder_without_a_store_is_not_compacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT);
    assert!(
        matches!(refused, Err(CompactError::Missing(_))),
        "{refused:?}"
    );
    assert!(names(dir.path()).is_empty(), "nothing made");
}

/// What a compaction cut short leaves: `store.sled` and the marked `store-*.sled`, which is
/// the unfinished copy before the exchange and the original after it. The marked one goes
/// when the store opens; `store.sled` is what it held.
#[test]
fn a_compaction_cut_short_leaves_store_sled_as_it_was_or_as_copied() {
    for exchanged in [false, true] {
        let (dir, _) = stopped_store(10);
        let path = dir.path().join(DATABASE);
        let other = dir.path().join("store-1-1.sled");
        let left = open(&other, DEFAULT_CACHE_BYTES).expect("the other database");
        left.insert(b"only in the other one", b"x").expect("insert");
        left.flush().expect("flush");
        drop(left);
        std::fs::write(marker(dir.path(), "store-1-1.sled"), b"").expect("marker");
        if exchanged {
            // The exchange done: what store.sled held is the marked one now, and the copy
            // (here: the same entries) is store.sled.
            exchange(&path, &other).expect("exchange");
            let copy = open(&path, DEFAULT_CACHE_BYTES).expect("the copy");
            for item in open(&other, DEFAULT_CACHE_BYTES).expect("original").iter() {
                let (key, value) = item.expect("read");
                copy.insert(key, value).expect("insert");
            }
            copy.remove(b"only in the other one").expect("remove");
            copy.flush().expect("flush");
        }
        assert_eq!(database_path(dir.path()).expect("path"), path);
        assert_eq!(
            names(dir.path()),
            vec![DATABASE.to_owned()],
            "exchanged: {exchanged}"
        );
        let db = reopen(&path);
        assert_eq!(by_verb(&db), 50);
        assert!(!db
            .tree()
            .contains_key(b"only in the other one")
            .expect("read"));
    }
}
