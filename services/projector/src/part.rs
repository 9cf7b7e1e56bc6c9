//! A part's writes, applied in sled batches of a bounded size that a journal makes one.
//!
//! sled keeps every tree node a batch replaces until the whole batch ends (one epoch guard
//! is held across it), so a part of 10,000 statements, ~75,000 keys in one batch, held
//! every replaced node at once, and the pile made each insert slower. A part of more than
//! [`ONE_BATCH`] writes is now written first as a journal (its writes, encoded, under
//! [`JOURNAL`] keys in one small sled batch), then applied in batches of [`SUB_BATCH`]
//! writes, the last of which removes the journal. Every write is a whole value (a state, a
//! count, a key present or gone), so writing one again changes nothing: a part cut short
//! after its journal is finished from the journal ([`finish_interrupted`]), at the next open
//! or before the next part, and the database is as if the part had been one batch. sled
//! recovers a prefix of its log, so a batch after the journal is never kept without it.
//!
//! While a part is applied, a reader may see some of its writes and not yet others (a
//! worker's summary counted, the hub's not yet), as it may between two parts.

use std::collections::BTreeMap;

/// The most writes one sled batch of a journaled part holds. `leerspoor bench
/// --projector-apply` (BENCHMARKS.md, the fifteenth round): parts of 10,000 statements applied
/// in batches of 2,000 writes instead of one held less memory and applied faster; smaller
/// batches are faster still, up to batches of ~50 (the twenty-fifth round: batches of 500
/// applied parts of 2,500 statements 9–10% faster than batches of 2,000, parts of 10,000
/// 8–10%; batches of 25,000 were 20% slower). sled holds every node a batch replaced until
/// the batch ends, and each insert into a batch's growing pile costs more.
pub const SUB_BATCH: usize = 500;

/// A part of at most this many writes goes to sled as one batch, without a journal: under a
/// light load (single statements) a part is a few hundred writes, and its journal would cost
/// more than the batches it splits.
pub const ONE_BATCH: usize = 2_000;

/// The journal's keys: this, then the chunk's number (4 bytes, big-endian).
pub(crate) const JOURNAL: &[u8] = b"mpart";

/// About how many bytes of writes one journal key holds before compression (zstd,
/// [`LEVEL`]). Compressed, because the journal is written to sled's log beside the writes
/// themselves: uncompressed, it took the projector's database as the ingest leaves it from
/// 2.5 to 3.3 GB at a million statements, compressed to 3.1 GB. Chunks of 6 KiB instead
/// took more disk, not less (BENCHMARKS.md, the fifteenth round).
const CHUNK_BYTES: usize = 128 * 1024;

/// zstd's level for the journal: its fastest.
const LEVEL: i32 = 1;

/// What one write of a journal says, after its key.
const REMOVE: u8 = 0;
const INSERT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("a part's journal cannot be compressed: {0}")]
    Compress(std::io::Error),
    #[error(
        "the journal of an interrupted part cannot be read: chunk {chunk}, byte {at}: {reason}"
    )]
    Journal {
        chunk: u32,
        at: usize,
        reason: &'static str,
    },
    #[cfg(test)]
    #[error("interrupted (test)")]
    Interrupted,
}

/// Writes in key order: a value, or `None` for a key removed.
pub type Writes = BTreeMap<Vec<u8>, Option<sled::IVec>>;

/// The writes of one part, in key order; a key written twice keeps its last write.
#[derive(Default)]
pub struct Part {
    writes: Writes,
    /// Keys removed that only the overlay's active layer holds ([`crate::overlay::Forgets`]):
    /// taken out of that layer when the part goes behind, removed like any other key when it
    /// goes to sled.
    forgets: Vec<Vec<u8>>,
}

impl Part {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes
            .insert(key.into(), Some(sled::IVec::from(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    /// Removes `key` from the overlay's active layer if the part goes behind (only that layer
    /// holds it: the caller knows), from sled otherwise.
    pub fn forget(&mut self, key: impl Into<Vec<u8>>) {
        self.forgets.push(key.into());
    }

    /// Applies the part: in one sled batch when it holds at most `one_batch` writes, else
    /// journaled and in batches of `sub_batch` (module docs).
    pub fn apply(
        mut self,
        tree: &sled::Db,
        one_batch: usize,
        sub_batch: usize,
    ) -> Result<(), PartError> {
        for key in std::mem::take(&mut self.forgets) {
            self.writes.entry(key).or_insert(None);
        }
        apply_writes(tree, &self.writes, one_batch, sub_batch, &|| {})
    }

    /// The writes and the keys to forget, for a projection that keeps them in memory a while
    /// first ([`crate::overlay`]).
    pub fn into_layer(self) -> (Writes, Vec<Vec<u8>>) {
        (self.writes, self.forgets)
    }
}

/// Applies `writes` as a part does ([`Part::apply`]): in one sled batch when they are at most
/// `one_batch`, else journaled and in batches of `sub_batch`. `before_batch` is called before
/// each sled batch: a checkpoint waits there while a part is applied
/// ([`crate::overlay::Applying`]).
pub fn apply_writes(
    tree: &sled::Db,
    writes: &Writes,
    one_batch: usize,
    sub_batch: usize,
    before_batch: &dyn Fn(),
) -> Result<(), PartError> {
    if writes.len() <= one_batch.max(1) {
        // One batch whatever `sub_batch` is: nothing else makes these writes one.
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            add(&mut batch, key, value.clone());
        }
        before_batch();
        return Ok(tree.apply_batch(batch)?);
    }
    let journal = write_journal(tree, writes, before_batch)?;
    let borrowed = writes
        .iter()
        .map(|(key, value)| (key.as_slice(), value.clone()));
    apply_in_batches(tree, borrowed, sub_batch.max(1), journal, before_batch)
}

fn journal_key(chunk: u32) -> Vec<u8> {
    let mut key = JOURNAL.to_vec();
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// Writes the journal in one sled batch, after `before_batch` returns; returns its keys.
fn write_journal(
    tree: &sled::Db,
    writes: &Writes,
    before_batch: &dyn Fn(),
) -> Result<Vec<Vec<u8>>, PartError> {
    let mut journal = sled::Batch::default();
    let mut keys = Vec::new();
    let mut compressor = zstd::bulk::Compressor::new(LEVEL).map_err(PartError::Compress)?;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
    let mut number = 0u32;
    let mut written = |chunk: &[u8]| -> Result<(), PartError> {
        let key = journal_key(number);
        number += 1;
        journal.insert(
            key.clone(),
            compressor.compress(chunk).map_err(PartError::Compress)?,
        );
        keys.push(key);
        Ok(())
    };
    for (key, value) in writes {
        encode(&mut chunk, key, value.as_deref());
        if chunk.len() >= CHUNK_BYTES {
            written(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        written(&chunk)?;
    }
    before_batch();
    tree.apply_batch(journal)?;
    Ok(keys)
}

/// A write as the journal keeps it (before compression): the key's length (4 bytes,
/// big-endian) and the key, then [`REMOVE`], or [`INSERT`] and the value's length and the
/// value.
fn encode(chunk: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    chunk.extend_from_slice(&length(key));
    chunk.extend_from_slice(key);
    match value {
        None => chunk.push(REMOVE),
        Some(value) => {
            chunk.push(INSERT);
            chunk.extend_from_slice(&length(value));
            chunk.extend_from_slice(value);
        }
    }
}

fn length(bytes: &[u8]) -> [u8; 4] {
    // sled refuses keys and values of 4 GiB long before this.
    u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes()
}

/// The writes of one journal chunk.
fn decode(
    number: u32,
    chunk: &[u8],
    into: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), PartError> {
    let mut at = 0;
    let fail = |at: usize, reason: &'static str| PartError::Journal {
        chunk: number,
        at,
        reason,
    };
    let take = |at: &mut usize, len: usize, what: &'static str| -> Result<&[u8], PartError> {
        let bytes = chunk
            .get(*at..at.saturating_add(len))
            .ok_or_else(|| fail(*at, what))?;
        *at += len;
        Ok(bytes)
    };
    let take_length = |at: &mut usize, what: &'static str| -> Result<usize, PartError> {
        let bytes = take(at, 4, what)?;
        let bytes = <[u8; 4]>::try_from(bytes).map_err(|_| fail(*at, what))?;
        Ok(u32::from_be_bytes(bytes) as usize)
    };
    while at < chunk.len() {
        let len = take_length(&mut at, "a key's length is cut off")?;
        let key = take(&mut at, len, "a key is cut off")?.to_vec();
        let value = match take(&mut at, 1, "a write's kind is missing")? {
            [REMOVE] => None,
            [INSERT] => {
                let len = take_length(&mut at, "a value's length is cut off")?;
                Some(take(&mut at, len, "a value is cut off")?.to_vec())
            }
            _ => return Err(fail(at - 1, "a write's kind is neither insert nor remove")),
        };
        into.push((key, value));
    }
    Ok(())
}

/// Applies the writes of a part whose `journal` is in sled, in sled batches of `sub_batch`,
/// each after `before_batch` returns; the last also removes the journal's keys.
fn apply_in_batches<K: AsRef<[u8]>, V: Into<sled::IVec>>(
    tree: &sled::Db,
    writes: impl IntoIterator<Item = (K, Option<V>)>,
    sub_batch: usize,
    journal: Vec<Vec<u8>>,
    before_batch: &dyn Fn(),
) -> Result<(), PartError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    #[cfg(test)]
    let mut applied = 0;
    for (key, value) in writes {
        if in_batch == sub_batch {
            #[cfg(test)]
            {
                if tests::interrupt_after() == Some(applied) {
                    return Err(PartError::Interrupted);
                }
                applied += 1;
            }
            before_batch();
            tree.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
        add(&mut batch, key, value);
        in_batch += 1;
    }
    #[cfg(test)]
    if tests::interrupt_after() == Some(applied) {
        return Err(PartError::Interrupted);
    }
    for key in journal {
        batch.remove(key);
    }
    before_batch();
    Ok(tree.apply_batch(batch)?)
}

/// Adds one write to `batch`: `value`, or the key's removal.
fn add<K: AsRef<[u8]>, V: Into<sled::IVec>>(batch: &mut sled::Batch, key: K, value: Option<V>) {
    match value {
        Some(value) => batch.insert(key.as_ref(), value),
        None => batch.remove(key.as_ref()),
    }
}

/// Finishes a part cut short after its journal (module docs): applies the journal's writes
/// again, in batches of `sub_batch`, and removes it. Returns how many writes it applied
/// (`None`: no journal).
pub fn finish_interrupted(tree: &sled::Db, sub_batch: usize) -> Result<Option<usize>, PartError> {
    let mut writes = Vec::new();
    let mut journal = Vec::new();
    // The chunks in the order written (their numbers are big-endian).
    for item in tree.scan_prefix(JOURNAL) {
        let (key, chunk) = item?;
        let Ok(number) = <[u8; 4]>::try_from(&key[JOURNAL.len()..]) else {
            continue; // not a journal key
        };
        let number = u32::from_be_bytes(number);
        let chunk = zstd::stream::decode_all(chunk.as_ref()).map_err(|_| PartError::Journal {
            chunk: number,
            at: 0,
            reason: "not a zstd frame",
        })?;
        decode(number, &chunk, &mut writes)?;
        journal.push(key.to_vec());
    }
    if journal.is_empty() {
        return Ok(None);
    }
    let count = writes.len();
    apply_in_batches(tree, writes, sub_batch.max(1), journal, &|| {})?;
    Ok(Some(count))
}

#[cfg(test)]
#[path = "part_tests.rs"]
pub(crate) mod tests;
