use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

thread_local! {
    static INTERRUPT_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// After how many of a part's sled batches (its journal not counted) a part on this thread
/// stops with [`PartError::Interrupted`], as if the process had died there.
pub(crate) fn interrupt_after() -> Option<usize> {
    INTERRUPT_AFTER.with(Cell::get)
}

/// Runs `f` with parts on this thread stopping after `batches` of their sled batches.
pub(crate) fn interrupted<T>(batches: usize, f: impl FnOnce() -> T) -> T {
    INTERRUPT_AFTER.with(|cell| cell.set(Some(batches)));
    let result = f();
    INTERRUPT_AFTER.with(|cell| cell.set(None));
    result
}

type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

fn open(path: &std::path::Path) -> sled::Db {
    // A database just closed: sled may hold its lock for a moment.
    let wait = std::time::Duration::from_secs(5);
    crate::projection::Projection::open_tree_when_free(path, 1 << 20, wait).expect("sled opens")
}

fn entries(tree: &sled::Db) -> Entries {
    tree.iter()
        .map(|item| item.map(|(key, value)| (key.to_vec(), value.to_vec())))
        .collect::<Result<_, _>>()
        .expect("sled reads")
}

fn filled(tree: &sled::Db, before: &Entries) {
    for (key, value) in before {
        tree.insert(key.as_slice(), value.as_slice())
            .expect("insert");
    }
}

fn part_of(writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Part {
    let mut part = Part::default();
    for (key, value) in writes {
        match value {
            Some(value) => part.insert(key.clone(), value.clone()),
            None => part.remove(key.clone()),
        }
    }
    part
}

/// What the database holds after `writes` applied in one sled batch to `before`.
fn in_one_batch(before: &Entries, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Entries {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = open(&dir.path().join("one.sled"));
    filled(&tree, before);
    part_of(writes)
        .apply(&tree, usize::MAX, usize::MAX)
        .expect("applied");
    entries(&tree)
}

fn writes() -> impl Strategy<Value = Vec<(Vec<u8>, Option<Vec<u8>>)>> {
    // Few distinct keys, so that writes land on keys already there and on each other.
    let key = prop::collection::vec(b'a'..b'f', 1..4);
    let value = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..40));
    prop::collection::vec((key, value), 0..120)
}

fn before() -> impl Strategy<Value = Entries> {
    prop::collection::btree_map(
        prop::collection::vec(b'a'..b'f', 1..4),
        prop::collection::vec(any::<u8>(), 0..40),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_part_in_small_batches_leaves_what_one_batch_leaves(
        before in before(),
        writes in writes(),
        one_batch in 1usize..130,
        sub_batch in 1usize..9,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = open(&dir.path().join("small.sled"));
        filled(&tree, &before);
        part_of(&writes).apply(&tree, one_batch, sub_batch).expect("applied");
        // Also: nothing of the journal is left.
        prop_assert_eq!(entries(&tree), in_one_batch(&before, &writes));
    }
}

#[test]
fn a_part_cut_short_anywhere_is_finished_from_its_journal_after_a_reopen() {
    let before: Entries = (0..30u8)
        .map(|n| (vec![b'k', n], vec![n; 3]))
        .chain([(b"mapplied".to_vec(), 7u64.to_be_bytes().to_vec())])
        .collect();
    let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..50u8)
        .map(|n| {
            let key = vec![b'k', n];
            // Removes some of what was there, rewrites some, adds some.
            // Values of up to 36,000 bytes: the journal takes several chunks.
            let value = (n % 4 != 0).then(|| vec![n + 100; usize::from(n % 7) * 6_000]);
            (key, value)
        })
        .chain([(b"mapplied".to_vec(), Some(9u64.to_be_bytes().to_vec()))])
        .collect();
    let whole = in_one_batch(&before, &writes);
    // 51 writes in batches of 8: 7 batches; cut short before the first, after each of the
    // others, and before the last (which removes the journal).
    let sub_batch = 8;
    for cut in 0..=6 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cut.sled");
        {
            let tree = open(&path);
            filled(&tree, &before);
            let result = interrupted(cut, || part_of(&writes).apply(&tree, sub_batch, sub_batch));
            assert!(matches!(result, Err(PartError::Interrupted)), "cut {cut}");
            tree.flush().expect("flush");
            assert_ne!(
                entries(&tree),
                whole,
                "cut {cut}: the part is not whole yet"
            );
            assert!(tree.scan_prefix(JOURNAL).count() > 1, "cut {cut}: chunks");
        }
        let tree = open(&path);
        let finished = finish_interrupted(&tree, 3).expect("finished");
        assert_eq!(finished, Some(writes.len()), "cut {cut}");
        assert_eq!(entries(&tree), whole, "cut {cut}");
        assert_eq!(
            finish_interrupted(&tree, 3).expect("read"),
            None,
            "cut {cut}"
        );
    }
}

/// A part of at most `one_batch` writes goes in one sled batch with no journal, so nothing
/// cuts it short (whatever the batches of a journaled part hold); one more write and it is
/// journaled first, then applied in batches of `sub_batch`.
#[test]
fn only_a_part_of_more_than_one_batch_is_journaled() {
    let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        (0..51u8).map(|n| (vec![b'k', n], Some(vec![n]))).collect();
    for (one_batch, journaled) in [(51, false), (50, true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = open(&dir.path().join("threshold.sled"));
        // A journaled part stops before its first batch of writes: only its journal is there.
        let result = interrupted(0, || part_of(&writes).apply(&tree, one_batch, 8));
        let written = tree.scan_prefix(b"k").count();
        let journal = tree.scan_prefix(JOURNAL).next().is_some();
        let what = format!("a part of 51 writes, one batch up to {one_batch}");
        if journaled {
            assert!(matches!(result, Err(PartError::Interrupted)), "{what}");
            assert!(journal && written == 0, "{what}: {written} written");
        } else {
            assert!(result.is_ok(), "{what}");
            assert!(!journal && written == 51, "{what}: {written} written");
        }
    }
}

#[test]
fn a_journal_that_cannot_be_read_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = open(&dir.path().join("torn.sled"));
    let mut chunk = Vec::new();
    encode(&mut chunk, b"wanne", Some(b"{}"));
    encode(&mut chunk, b"wbob", None);
    chunk.truncate(chunk.len() - 2);
    tree.insert(journal_key(0), compressed(&chunk))
        .expect("insert");
    let before = entries(&tree);
    let err = finish_interrupted(&tree, 10).expect_err("refused");
    // The second write starts after the first's 4 + 5 + 1 + 4 + 2 bytes; its key after
    // its length.
    assert_eq!(
        err.to_string(),
        "the journal of an interrupted part cannot be read: chunk 0, byte 20: a key is cut off"
    );
    assert_eq!(entries(&tree), before);

    let mut chunk = Vec::new();
    encode(&mut chunk, b"wanne", Some(b"{}"));
    let kind = 4 + b"wanne".len();
    chunk[kind] = 7;
    tree.insert(journal_key(0), compressed(&chunk))
        .expect("insert");
    let err = finish_interrupted(&tree, 10).expect_err("refused");
    assert!(
        err.to_string().ends_with(&format!(
            "byte {kind}: a write's kind is neither insert nor remove"
        )),
        "{err}"
    );

    tree.insert(journal_key(0), b"{\"not\": \"zstd\"}".to_vec())
        .expect("insert");
    let err = finish_interrupted(&tree, 10).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "the journal of an interrupted part cannot be read: chunk 0, byte 0: not a zstd frame"
    );
    assert!(tree.contains_key(journal_key(0)).expect("read"));
}

fn compressed(chunk: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(chunk, LEVEL).expect("compressed")
}
