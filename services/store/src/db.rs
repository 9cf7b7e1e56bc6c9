//! The store's sled database: records, verdicts, the applied sequence, and reading back
//! (applying a message is [`crate::apply`]'s).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use bus::wire::Verdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use xapi::limits::Limits;
use xapi::statement::{index_terms, referenced_statement, IndexTerms};
use xapi::time::format_timestamp;

use crate::indexer::{IndexJob, Indexer};
use crate::keys;
use crate::written::Kept;

/// A stored statement and whether it has been voided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub statement: Value,
    pub voided: bool,
    pub position: u64,
    /// Whether its writer had the `define` scope: only then do its activity definitions
    /// count in the Activities resource. Stored only when false.
    #[serde(default = "defines_by_default", skip_serializing_if = "Clone::clone")]
    pub defines: bool,
    /// SHA-2 of the attachment bodies that came with this statement's request (not only
    /// pointed at): a `statements/read/mine` reader sees only bodies its own statements brought.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bodies: Vec<String>,
}

fn defines_by_default() -> bool {
    true
}

/// A [`Record`] read for a query: its statement left as the JSON text it was stored as, to be
/// sent on without being parsed and written again.
#[derive(Deserialize)]
pub struct StoredRecord<'a> {
    #[serde(borrow)]
    pub statement: &'a serde_json::value::RawValue,
    pub voided: bool,
    pub position: u64,
}

impl<'a> StoredRecord<'a> {
    pub fn read(key: &[u8], bytes: &'a [u8]) -> Result<StoredRecord<'a>, DbError> {
        read_json(key, bytes)
    }
}

/// JSON stored under `key` (or a part of it), read as `T`; unreadable, it is corrupt there.
pub(crate) fn read_json<'a, T: Deserialize<'a>>(key: &[u8], bytes: &'a [u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|err| DbError::Corrupt {
        key: key.to_vec(),
        reason: err.to_string(),
    })
}

/// Brings the `stored` spans (see [`keys::STORED_SPAN`]) up to the last position at open: for
/// a database from before spans every position, and after a version without them ran, the
/// positions it stored (after the last position the last span covers).
fn catch_up_stored_spans(tree: &sled::Db) -> Result<(), DbError> {
    let through = match tree.scan_prefix([keys::STORED_SPAN]).next_back() {
        None => 0,
        Some(item) => {
            let (_, value) = item?;
            keys::Span::decode(&value).map_or(0, |span| span.through)
        }
    };
    let mut spans = HashMap::new();
    let mut last = through;
    for item in tree.range(keys::record(through.saturating_add(1))..) {
        let (record_key, bytes) = item?;
        if record_key.first() != Some(&keys::RECORD) {
            break;
        }
        let Some(position) = keys::trailing_u64(&record_key) else {
            continue;
        };
        // An unreadable record leaves its block a span no window excludes.
        let span = match read_record(&record_key, &bytes) {
            Ok(record) => {
                let stored = record.statement["stored"].as_str().unwrap_or_default();
                keys::Span {
                    earliest: stored.to_owned(),
                    latest: stored.to_owned(),
                    through: position,
                }
            }
            Err(_) => keys::Span::open(position),
        };
        widen_span(tree, &mut spans, position, span)?;
        last = position;
    }
    if last == through {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    write_spans(&mut batch, &spans);
    tree.apply_batch(batch)?;
    tracing::info!(
        from = through + 1,
        to = last,
        "wrote the stored-time spans of positions stored without them"
    );
    Ok(())
}

/// Widens the span of `position`'s block (read from the database the first time `spans`
/// meets the block) to hold `with`.
pub(crate) fn widen_span(
    tree: &sled::Db,
    spans: &mut HashMap<u64, keys::Span>,
    position: u64,
    with: keys::Span,
) -> Result<(), DbError> {
    let block = position / keys::SPAN_BLOCK;
    let span = match spans.entry(block) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => {
            match tree.get(keys::stored_span(block))? {
                None => {
                    entry.insert(with);
                    return Ok(());
                }
                // Unreadable: a span no window excludes.
                Some(value) => {
                    entry.insert(keys::Span::decode(&value).unwrap_or_else(|| keys::Span::open(0)))
                }
            }
        }
    };
    span.widen(&with);
    Ok(())
}

pub(crate) fn write_spans(batch: &mut sled::Batch, spans: &HashMap<u64, keys::Span>) {
    for (block, span) in spans {
        batch.insert(keys::stored_span(*block), span.encode());
    }
}

/// Every block's `stored` span as the database holds it; an unreadable one as a span no
/// window excludes.
fn read_spans(tree: &sled::Db) -> Result<BTreeMap<u64, keys::Span>, DbError> {
    let mut spans = BTreeMap::new();
    for item in tree.scan_prefix([keys::STORED_SPAN]) {
        let (key, value) = item?;
        let Some(block) = keys::trailing_u64(&key) else {
            continue;
        };
        let span = keys::Span::decode(&value)
            .unwrap_or_else(|| keys::Span::open(block.saturating_mul(keys::SPAN_BLOCK)));
        spans.insert(block, span);
    }
    Ok(spans)
}

/// Moves the records of a database from before [`keys::RECORD`] to their positions: `p` +
/// position -> id and `s` + id -> record become `R` + position -> record and `s` + id ->
/// position. In batches that each move some statements whole (a crash leaves statements
/// either moved or not, and the next open goes on with the `p` keys left); nothing writes `p`
/// keys any more, so none left means moved.
fn move_records(tree: &sled::Db) -> Result<(), DbError> {
    const CHUNK: usize = 10_000;
    if tree.scan_prefix([keys::POSITION]).next().is_none() {
        return Ok(());
    }
    tracing::info!(
        "moving the records to their positions (once, for a database from an earlier version)"
    );
    let mut moved = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in tree.scan_prefix([keys::POSITION]).take(CHUNK) {
            let (key, id) = item?;
            count += 1;
            batch.remove(key.clone());
            let (Some(position), Ok(id)) = (keys::trailing_u64(&key), Uuid::from_slice(&id)) else {
                continue;
            };
            let id_key = keys::statement(&id);
            // Already moved (the same statement at two positions cannot happen; a record is
            // never as short as a position).
            let Some(record) = tree.get(&id_key)?.filter(|value| value.len() != 8) else {
                continue;
            };
            batch.insert(keys::record(position), record);
            batch.insert(id_key, &position.to_be_bytes());
        }
        if count == 0 {
            break;
        }
        tree.apply_batch(batch)?;
        moved += count as u64;
    }
    tree.flush()?;
    tracing::info!(statements = moved, "moved the records to their positions");
    Ok(())
}

/// Removes the index of a database from before [`keys::POSTING`] (one `i` key per statement
/// and term) and marks nothing indexed, so that the open goes on to index every statement
/// as postings. The mark is written first: a crash part-way leaves `i` keys and the mark, and
/// the next open finishes the removal.
fn rebuild_old_index(tree: &sled::Db) -> Result<(), DbError> {
    const CHUNK: usize = 10_000;
    if tree.scan_prefix([keys::INDEX]).next().is_none() {
        return Ok(());
    }
    tracing::info!(
        "replacing the index with postings (once, for a database from an earlier version)"
    );
    tree.insert(keys::META_INDEXED, &0u64.to_be_bytes())?;
    tree.flush()?;
    let mut removed = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in tree.scan_prefix([keys::INDEX]).keys().take(CHUNK) {
            batch.remove(key?);
            count += 1;
        }
        if count == 0 {
            break;
        }
        tree.apply_batch(batch)?;
        removed += count as u64;
    }
    tree.flush()?;
    tracing::info!(
        entries = removed,
        "removed the old index; indexing every statement"
    );
    Ok(())
}

fn read_record(key: &[u8], bytes: &[u8]) -> Result<Record, DbError> {
    read_json(key, &unpack(key, bytes)?)
}

/// A record's JSON from its stored bytes (see [`crate::packed`]).
pub fn unpack<'a>(key: &[u8], stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, DbError> {
    crate::packed::unpack(stored).map_err(|reason| DbError::Corrupt {
        key: key.to_vec(),
        reason,
    })
}

/// [`unpack`] for a value read from sled: a record stored as JSON is passed on as it is.
pub(crate) fn unpacked(key: &[u8], stored: sled::IVec) -> Result<sled::IVec, DbError> {
    match unpack(key, &stored)? {
        std::borrow::Cow::Borrowed(_) => Ok(stored),
        std::borrow::Cow::Owned(json) => Ok(sled::IVec::from(json)),
    }
}

/// The `LRS_IN` message being applied, as it arrived.
pub struct Incoming<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// When JetStream took it in: the time every store replica writes as `stored`,
    /// `updated`, `created`, never a clock read while applying.
    pub published: DateTime<Utc>,
    /// The first `LRS_IN` sequence of the run of messages, applied under one flush, whose
    /// events go out together as one `LRS_STORED` message ([`crate::outbox`]); `None`: this
    /// message's events go out alone.
    pub run: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sled")]
    Sled(#[from] sled::Error),
    #[error("the indexes did not reach position {0} in time")]
    IndexLag(u64),
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

pub struct Db {
    pub(crate) tree: sled::Db,
    /// Writes the secondary indexes on its own thread.
    pub(crate) indexer: Indexer,
    /// Bounds on pages and exports (`limits.page_bytes`, `limits.query_limit`).
    limits: Limits,
    /// Bytes one published message may carry: the NATS server's `max_payload` less headroom.
    /// Set from the server's INFO when the store connects.
    message_budget: AtomicUsize,
    /// The `stored` span of every block (see [`keys::STORED_SPAN`]), as wide as the database
    /// holds it or wider: read at open, widened before each batch that widens it is applied
    /// (a query never skips a block holding a statement it can see). A query with a time
    /// window reads them here instead of scanning a key per 1,024 statements each time.
    spans: RwLock<BTreeMap<u64, keys::Span>>,
    /// The ids of the stored statements, asked before sled whether a new statement's id is
    /// stored already: filled from the id keys after open, and by the writer as it stores.
    ids: idfilter::IdFilter,
}

/// A meta counter (the applied sequence, the next position, ...); 0 when absent.
fn meta_u64(tree: &sled::Db, key: &[u8]) -> Result<u64, DbError> {
    Ok(tree
        .get(key)?
        .and_then(|value| keys::u64_value(&value))
        .unwrap_or(0))
}

/// The ids filter, sized for the `held` positions used at open and filled from the id keys on
/// a thread of its own.
fn fill_ids(tree: sled::Db, held: u64) -> idfilter::IdFilter {
    idfilter::IdFilter::fill_from("leerspoor-ids", held, move || {
        tree.scan_prefix([keys::STATEMENT])
            .keys()
            .map(|key| key.map(|key| Some(key[1..].to_vec())))
    })
}

/// Verdicts kept, in `LRS_IN` sequences below the watermark (see [`Db::prune_verdicts`]).
pub const VERDICTS_KEPT: u64 = 100_000;

/// sled's page cache for the store's database unless configured (`[memory] store_cache_mb`).
/// sled counts a page by its size on disk and holds more than that in memory. With the
/// projector's 32 MiB, 64 MiB left `serve` at 940-993 MiB resident at a million statements
/// once writing stopped (1.08-1.15 GB while writing); reads by agent were 2-7 ms slower at
/// p99 than with 128 (BENCHMARKS.md, "Seventeenth round").
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The budget before the server said its `max_payload`: NATS's default, 1 MiB.
const DEFAULT_MESSAGE_BUDGET: usize = 1024 * 1024 - bus::HEADROOM;

impl Db {
    /// Opens (or creates) the database with the default limits.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_with(path, Limits::default(), DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database with sled's page cache bounded to `cache_bytes`.
    /// Fails fast if another process holds it.
    pub fn open_with(path: &Path, limits: Limits, cache_bytes: u64) -> Result<Db, DbError> {
        Db::from_tree(Db::open_tree(path, cache_bytes)?, limits)
    }

    /// Opens (or creates) the sled database itself, for [`Db::from_tree`]: a new replica
    /// loads its snapshot into it first, so the database is opened once (sled's threads
    /// may hold its lock for a moment after a drop, and a reopen would be refused).
    pub fn open_tree(path: &Path, cache_bytes: u64) -> Result<sled::Db, DbError> {
        Ok(Db::sled_config(path, cache_bytes).open()?)
    }

    /// How the store's sled database at `path` is opened, here and by a compaction of it:
    /// the segments it was made with, a page cache of `cache_bytes`, and no flusher thread
    /// ([`sledconf::cleaned_as_written`]): every write is flushed before its ack here, and the
    /// thread's segment cleaner rewrote a reopened store's log without end.
    pub fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
        sledconf::cleaned_as_written(path).cache_capacity(cache_bytes)
    }

    /// The store on an open sled database: migrations, catch-ups and re-indexing first.
    pub fn from_tree(tree: sled::Db, limits: Limits) -> Result<Db, DbError> {
        crate::documents::migrate_scopes(&tree)?;
        move_records(&tree)?;
        rebuild_old_index(&tree)?;
        let indexed = meta_u64(&tree, keys::META_INDEXED)?;
        catch_up_stored_spans(&tree)?;
        // Positions start at 1.
        let unused = meta_u64(&tree, keys::META_NEXT_POSITION)?.max(1);
        let db = Db {
            indexer: Indexer::start(tree.clone(), indexed, unused),
            spans: RwLock::new(read_spans(&tree)?),
            ids: fill_ids(tree.clone(), unused - 1),
            tree,
            limits,
            message_budget: AtomicUsize::new(DEFAULT_MESSAGE_BUDGET),
        };
        db.reindex_after(indexed)?;
        Ok(db)
    }

    /// Re-indexes the statements a crash left unindexed (positions after `indexed`), in jobs of
    /// a bounded number of statements (all of them after [`rebuild_old_index`]).
    fn reindex_after(&self, indexed: u64) -> Result<(), DbError> {
        const CHUNK: u64 = 1_000;
        let last = self.last_position()?;
        if last <= indexed {
            return Ok(());
        }
        tracing::info!(
            from = indexed + 1,
            to = last,
            "re-indexing statements after a restart"
        );
        let mut from = indexed + 1;
        while from <= last {
            let through = from.saturating_add(CHUNK - 1).min(last);
            let mut entries = Vec::new();
            for position in from..=through {
                if let Some(record) = self.record_at(position)? {
                    entries.extend(self.index_entries(&record, &HashMap::new())?);
                }
            }
            self.indexer.submit(IndexJob { entries, through });
            from = through + 1;
        }
        tracing::info!(to = last, "re-indexing handed to the index thread");
        Ok(())
    }

    /// The position of the last stored statement (0 when none).
    pub(crate) fn last_position(&self) -> Result<u64, DbError> {
        Ok(self.meta_u64(keys::META_NEXT_POSITION)?.saturating_sub(1))
    }

    /// Waits until the indexes cover every statement stored so far; queries call this first.
    pub fn wait_for_indexes(&self) -> Result<(), DbError> {
        let last = self.last_position()?;
        if self
            .indexer
            .wait_for(last, std::time::Duration::from_secs(10))
        {
            Ok(())
        } else {
            Err(DbError::IndexLag(last))
        }
    }

    /// The index terms of a record: its own, and those of the statements it references.
    pub(crate) fn index_entries(
        &self,
        record: &Record,
        pending: &HashMap<Uuid, Kept>,
    ) -> Result<Vec<(u64, IndexTerms)>, DbError> {
        self.index_entries_with(index_terms(&record.statement), record, pending)
    }

    /// [`Db::index_entries`] with the record's own terms found already.
    pub(crate) fn index_entries_with(
        &self,
        terms: IndexTerms,
        record: &Record,
        pending: &HashMap<Uuid, Kept>,
    ) -> Result<Vec<(u64, IndexTerms)>, DbError> {
        let mut entries = vec![(record.position, terms)];
        // A statement that references another is found by the filters its target matches.
        for target in self.reference_chain(&record.statement, pending)? {
            let mut terms = index_terms(&target);
            // A reference does not keep its target's attachment bodies alive.
            terms.attachments.clear();
            entries.push((record.position, terms));
        }
        Ok(entries)
    }

    /// The document resources, with this database's limits.
    pub fn documents(&self) -> crate::documents::Documents<'_> {
        crate::documents::Documents {
            tree: &self.tree,
            max_bytes: self.limits.document_bytes,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes one published message (event, rejection, reply) may carry.
    pub fn message_budget(&self) -> usize {
        self.message_budget.load(Ordering::Relaxed)
    }

    /// Sets the message budget from the server's `max_payload`.
    pub fn set_max_payload(&self, max_payload: usize) {
        let budget = max_payload.saturating_sub(bus::HEADROOM).max(4096);
        self.message_budget.store(budget, Ordering::Relaxed);
    }

    /// Bytes one page of statements (or of an export) may hold.
    pub fn page_budget(&self) -> usize {
        self.limits.page_bytes.min(self.message_budget()).max(1)
    }

    pub fn flush(&self) -> Result<(), DbError> {
        self.tree.flush()?;
        Ok(())
    }

    /// The last `LRS_IN` sequence applied (0 when none).
    pub fn applied_sequence(&self) -> Result<u64, DbError> {
        self.meta_u64(keys::META_APPLIED)
    }

    pub(crate) fn meta_u64(&self, key: &[u8]) -> Result<u64, DbError> {
        meta_u64(&self.tree, key)
    }

    pub fn record(&self, id: &Uuid) -> Result<Option<Record>, DbError> {
        let Some((key, bytes)) = self.record_bytes(id)? else {
            return Ok(None);
        };
        read_record(&key, &bytes).map(Some)
    }

    /// The record of a statement id being stored, `None` at once when the ids filter says it
    /// is not stored.
    pub(crate) fn record_if_stored(&self, id: &Uuid) -> Result<Option<Record>, DbError> {
        if !self.ids.may_hold(id.as_bytes()) {
            return Ok(None);
        }
        self.record(id)
    }

    /// Notes a statement id as stored in the ids filter, before the batch that stores it.
    pub(crate) fn note_id(&self, id: &Uuid) {
        self.ids.note(id.as_bytes());
    }

    /// Waits until the ids filter holds every id stored at open; false if its fill failed.
    #[cfg(test)]
    pub(crate) fn ids_filled(&self) -> bool {
        self.ids.wait_filled()
    }

    /// The position of the statement with this id.
    pub fn position_of(&self, id: &Uuid) -> Result<Option<u64>, DbError> {
        let key = keys::statement(id);
        let Some(value) = self.tree.get(&key)? else {
            return Ok(None);
        };
        keys::u64_value(&value)
            .map(Some)
            .ok_or_else(|| DbError::Corrupt {
                key,
                reason: "not a position".into(),
            })
    }

    pub fn record_at(&self, position: u64) -> Result<Option<Record>, DbError> {
        Ok(self.record_at_sized(position)?.map(|(record, _)| record))
    }

    /// The record at a position and the bytes it takes (a bound on its statement's JSON).
    pub fn record_at_sized(&self, position: u64) -> Result<Option<(Record, usize)>, DbError> {
        let Some((key, bytes)) = self.record_bytes_at(position)? else {
            return Ok(None);
        };
        Ok(Some((read_record(&key, &bytes)?, bytes.len())))
    }

    /// The record with this id as stored (its key and JSON), to be read as a [`StoredRecord`].
    pub fn record_bytes(&self, id: &Uuid) -> Result<Option<(Vec<u8>, sled::IVec)>, DbError> {
        match self.position_of(id)? {
            Some(position) => self.record_bytes_at(position),
            None => Ok(None),
        }
    }

    /// The record at a position (its key and JSON, unpacked: see [`crate::packed`]).
    pub fn record_bytes_at(&self, position: u64) -> Result<Option<(Vec<u8>, sled::IVec)>, DbError> {
        let key = keys::record(position);
        let Some(stored) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let json = unpacked(&key, stored)?;
        Ok(Some((key, json)))
    }

    /// The verdict recorded for a sequence: `None` if not applied yet.
    /// Whether the message with this `LRS_IN` sequence has been applied (or rejected).
    pub fn is_applied(&self, sequence: u64) -> Result<bool, DbError> {
        Ok(sequence <= self.applied_sequence()?
            || self.tree.contains_key(keys::applied_above(sequence))?)
    }

    /// Records a sequence `LRS_IN` no longer holds (deleted before this replica applied it)
    /// as applied with nothing written, so the watermark moves past it. Flushed with the
    /// next batch.
    pub fn pass_over(&self, sequence: u64) -> Result<(), DbError> {
        if self.is_applied(sequence)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Records `sequence` as applied in `batch`, moving the contiguous watermark over it and
    /// over any sequences above it that were applied earlier.
    pub(crate) fn mark_applied(
        &self,
        batch: &mut sled::Batch,
        sequence: u64,
    ) -> Result<(), DbError> {
        let mut watermark = self.applied_sequence()?;
        if sequence != watermark + 1 {
            batch.insert(keys::applied_above(sequence), &[] as &[u8]);
            return Ok(());
        }
        watermark = sequence;
        while self.tree.contains_key(keys::applied_above(watermark + 1))? {
            watermark += 1;
            batch.remove(keys::applied_above(watermark));
        }
        batch.insert(keys::META_APPLIED, &watermark.to_be_bytes());
        Ok(())
    }

    /// Drops the verdicts of sequences more than [`VERDICTS_KEPT`] below the watermark. A
    /// verdict is read by the gateway that wrote the message, within its write timeout; kept
    /// forever they would grow with every refused message. Returns how many went.
    pub fn prune_verdicts(&self) -> Result<usize, DbError> {
        let below = self.applied_sequence()?.saturating_sub(VERDICTS_KEPT);
        let mut batch = sled::Batch::default();
        let mut pruned = 0;
        for key in self
            .tree
            .range(keys::verdict(0)..keys::verdict(below))
            .keys()
        {
            batch.remove(key?);
            pruned += 1;
        }
        if pruned > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(pruned)
    }

    pub fn verdict(&self, sequence: u64) -> Result<Option<Verdict>, DbError> {
        if !self.is_applied(sequence)? {
            return Ok(None);
        }
        let key = keys::verdict(sequence);
        match self.tree.get(&key)? {
            None => Ok(Some(Verdict::Applied)),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|err| DbError::Corrupt {
                        key,
                        reason: err.to_string(),
                    })
            }
        }
    }

    /// The `stored` value of the last applied statement: every later one is at or after it.
    pub fn consistent_through(&self) -> String {
        format_timestamp(Utc::now())
    }

    /// The statements a statement references through StatementRef objects, nearest first
    /// (a reference to a reference counts too), as far as they are stored.
    pub fn reference_chain(
        &self,
        statement: &Value,
        pending: &HashMap<Uuid, Kept>,
    ) -> Result<Vec<Value>, DbError> {
        const MAX_DEPTH: usize = 8;
        let mut chain = Vec::new();
        let mut next = referenced_statement(statement);
        while let Some(target) = next.take() {
            if chain.len() == MAX_DEPTH {
                break;
            }
            let Ok(target) = Uuid::parse_str(&target) else {
                break;
            };
            let record = match pending.get(&target) {
                Some(kept) => Some(kept.record()?),
                None => self.record(&target)?,
            };
            let Some(record) = record else {
                break;
            };
            next = referenced_statement(&record.statement);
            chain.push(record.statement);
        }
        Ok(chain)
    }

    pub fn tree(&self) -> &sled::Db {
        &self.tree
    }

    /// The blocks' `stored` spans (see [`Db::spans`]'s field).
    pub(crate) fn spans(&self) -> RwLockReadGuard<'_, BTreeMap<u64, keys::Span>> {
        self.spans.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Widens the spans kept in memory to hold `spans`: called before the batch that writes
    /// them is applied, so the memory never holds a span narrower than the database's.
    pub(crate) fn widen_spans(&self, spans: &HashMap<u64, keys::Span>) {
        let mut kept = self.spans.write().unwrap_or_else(PoisonError::into_inner);
        for (block, span) in spans {
            kept.entry(*block)
                .and_modify(|kept| kept.widen(span))
                .or_insert_with(|| span.clone());
        }
    }
}

#[cfg(test)]
#[path = "db_tests.rs"]
pub(crate) mod tests;
