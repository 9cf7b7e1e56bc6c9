//! Unit tests of compacting a stopped store.
use super::*;
use crate::db::tests::{apply, by_verb, reopen};
use crate::db::{Db, DEFAULT_CACHE_BYTES};
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
    let before = reopen(&dir.path().join(FIRST));
    let (digest, statements) = (before.digest().expect("digest"), by_verb(&before));
    let entries = before.tree().len() as u64;
    drop(before);

    let report = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact");
    assert_eq!(report.entries, entries, "every entry copied");
    assert!(report.bytes_of_entries > 0 && report.bytes_after > 0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(POINTER)).expect("pointer"),
        report.database
    );
    // The original and every marker are gone; the copy is what the store opens.
    assert_eq!(
        names(dir.path()),
        vec![report.database.clone(), POINTER.to_owned()]
    );
    let path = database_path(dir.path()).expect("path");
    assert_eq!(path, dir.path().join(&report.database));
    let after = reopen(&path);
    assert_eq!(after.digest().expect("digest"), digest);
    assert_eq!(by_verb(&after), statements);

    // It goes on applying where it was, and compacts again.
    apply(&after, &validator, 13);
    let grown = by_verb(&after);
    assert_eq!(grown, statements + 5);
    after.flush().expect("flush");
    drop(after);
    let again = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact again");
    assert_ne!(again.database, report.database);
    assert_eq!(
        names(dir.path()),
        vec![again.database.clone(), POINTER.to_owned()]
    );
    let last = reopen(&database_path(dir.path()).expect("path"));
    assert_eq!(by_verb(&last), grown);
}

#[test]
fn a_store_in_use_is_not_compacted_and_nothing_changes() {
    let (dir, validator) = stopped_store(5);
    let running = reopen(&dir.path().join(FIRST));
    let refused = compact(dir.path(), DEFAULT_CACHE_BYTES, Duration::ZERO);
    assert!(
        matches!(&refused, Err(CompactError::InUse(path)) if path == &dir.path().join(FIRST)),
        "{refused:?}"
    );
    let said = refused.expect_err("refused").to_string();
    assert!(said.contains("stop `leerspoor serve`"), "{said}");
    assert_eq!(names(dir.path()), vec![FIRST.to_owned()]);
    apply(&running, &validator, 6);
    assert_eq!(by_verb(&running), 30);
}

/// A copy made but not yet named in `store.current` (the compaction stopped before its one
/// step): the copy goes, the original stays in use.
#[test]
fn a_compaction_cut_short_before_its_swap_leaves_the_original() {
    let (dir, _) = stopped_store(10);
    let copy = dir.path().join("store-1-1.sled");
    let half = sled::open(&copy).expect("copy");
    half.insert(b"only in the copy", b"x").expect("insert");
    half.flush().expect("flush");
    drop(half);
    for name in [FIRST, "store-1-1.sled"] {
        std::fs::write(marker(dir.path(), name), b"").expect("marker");
    }
    let path = database_path(dir.path()).expect("path");
    assert_eq!(path, dir.path().join(FIRST));
    assert_eq!(names(dir.path()), vec![FIRST.to_owned()]);
    assert_eq!(by_verb(&reopen(&path)), 50);
}

/// The copy named in `store.current`, but the original and the markers not removed yet (the
/// compaction stopped right after its swap): the original goes, the copy stays.
#[test]
fn a_compaction_cut_short_after_its_swap_keeps_the_copy() {
    let (dir, _) = stopped_store(10);
    let report = compact(dir.path(), DEFAULT_CACHE_BYTES, LOCK_WAIT).expect("compact");
    // What the folder held between the swap and the removals.
    let left = sled::open(dir.path().join(FIRST)).expect("the original, as it was");
    left.insert(b"the original", b"x").expect("insert");
    left.flush().expect("flush");
    drop(left);
    for name in [FIRST, report.database.as_str()] {
        std::fs::write(marker(dir.path(), name), b"").expect("marker");
    }
    let path = database_path(dir.path()).expect("path");
    assert_eq!(path, dir.path().join(&report.database));
    assert_eq!(
        names(dir.path()),
        vec![report.database.clone(), POINTER.to_owned()]
    );
    assert_eq!(by_verb(&reopen(&path)), 50);
}

#[test]
fn a_pointer_to_nothing_or_a_missing_first_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An empty folder: a new store.
    assert_eq!(
        database_path(dir.path()).expect("path"),
        dir.path().join(FIRST)
    );
    // Compacted databases no pointer names, and no store.sled: not an empty store beside them.
    std::fs::create_dir(dir.path().join("store-5-5.sled")).expect("dir");
    let unnamed = database_path(dir.path()).expect_err("refused");
    assert!(matches!(unnamed, CompactError::Unnamed { ref found } if found == "store-5-5.sled"));
    assert!(
        dir.path().join("store-5-5.sled").is_dir(),
        "nothing removed"
    );
    for (pointer, reason) in [
        ("store-9-9.sled", "does not exist"),
        ("../store-5-5.sled", "is not a store database's name"),
        ("projector.sled", "is not a store database's name"),
    ] {
        std::fs::write(dir.path().join(POINTER), pointer).expect("pointer");
        let refused = database_path(dir.path()).expect_err("refused");
        assert!(
            matches!(refused, CompactError::BadPointer { reason: said, .. } if said == reason),
            "{pointer}: {refused}"
        );
    }
    std::fs::write(dir.path().join(POINTER), "store-5-5.sled\n").expect("pointer");
    assert_eq!(
        database_path(dir.path()).expect("path"),
        dir.path().join("store-5-5.sled")
    );
}
