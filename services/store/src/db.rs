//! The store's sled database: applying one `LRS_IN` message atomically, and reading back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bus::wire::{DocumentStatus, EventKind, RejectedMessage, Rejection, Verdict};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use xapi::limits::Limits;
use xapi::statement::{
    complete_for_store, equivalent, index_terms, referenced_statement, statement_id, voided_target,
    IndexTerms,
};
use xapi::time::format_timestamp;
use xapi::Validator;

use crate::indexer::{IndexJob, Indexer};
use crate::ingest::{Batch, Ingest};
use crate::keys;
use crate::outbox::OutboxItem;

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

/// The `LRS_IN` message being applied, as it arrived.
pub struct Incoming<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// When JetStream took it in: the time every store replica writes as `stored`,
    /// `updated`, `created`, never a clock read while applying.
    pub published: DateTime<Utc>,
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
    tree: sled::Db,
    /// Writes the secondary indexes on its own thread.
    indexer: Indexer,
    /// Bounds on pages and exports (`limits.page_bytes`, `limits.query_limit`).
    limits: Limits,
    /// Bytes one published message may carry: the NATS server's `max_payload` less headroom.
    /// Set from the server's INFO when the store connects.
    message_budget: AtomicUsize,
}

/// Verdicts kept, in `LRS_IN` sequences below the watermark (see [`Db::prune_verdicts`]).
pub const VERDICTS_KEPT: u64 = 100_000;

/// The budget before the server said its `max_payload`: NATS's default, 1 MiB.
const DEFAULT_MESSAGE_BUDGET: usize = 1024 * 1024 - bus::HEADROOM;

impl Db {
    /// Opens (or creates) the database with the default limits.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_with(path, Limits::default())
    }

    /// Opens (or creates) the database. Fails fast if another process holds it.
    pub fn open_with(path: &Path, limits: Limits) -> Result<Db, DbError> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let indexed = tree
            .get(keys::META_INDEXED)?
            .and_then(|bytes| keys::u64_value(&bytes))
            .unwrap_or(0);
        crate::documents::migrate_scopes(&tree)?;
        let db = Db {
            indexer: Indexer::start(tree.clone(), indexed),
            tree,
            limits,
            message_budget: AtomicUsize::new(DEFAULT_MESSAGE_BUDGET),
        };
        db.reindex_after(indexed)?;
        Ok(db)
    }

    /// Re-indexes the statements a crash left unindexed (positions after `indexed`).
    fn reindex_after(&self, indexed: u64) -> Result<(), DbError> {
        let last = self.last_position()?;
        if last <= indexed {
            return Ok(());
        }
        tracing::info!(
            from = indexed + 1,
            to = last,
            "re-indexing statements after a restart"
        );
        let mut entries = Vec::new();
        for position in indexed + 1..=last {
            if let Some(record) = self.record_at(position)? {
                entries.extend(self.index_entries(&record, &HashMap::new())?);
            }
        }
        self.indexer.submit(IndexJob {
            entries,
            through: last,
        });
        Ok(())
    }

    /// The position of the last stored statement (0 when none).
    fn last_position(&self) -> Result<u64, DbError> {
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
        pending: &HashMap<Uuid, Record>,
    ) -> Result<Vec<(u64, IndexTerms)>, DbError> {
        let mut entries = vec![(record.position, index_terms(&record.statement))];
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

    fn meta_u64(&self, key: &[u8]) -> Result<u64, DbError> {
        Ok(self
            .tree
            .get(key)?
            .and_then(|value| keys::u64_value(&value))
            .unwrap_or(0))
    }

    pub fn record(&self, id: &Uuid) -> Result<Option<Record>, DbError> {
        let key = keys::statement(id);
        let Some(bytes) = self.tree.get(&key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| DbError::Corrupt {
                key,
                reason: err.to_string(),
            })
    }

    pub fn record_at(&self, position: u64) -> Result<Option<Record>, DbError> {
        Ok(self.record_at_sized(position)?.map(|(record, _)| record))
    }

    /// The record at a position and the bytes it takes (a bound on its statement's JSON).
    pub fn record_at_sized(&self, position: u64) -> Result<Option<(Record, usize)>, DbError> {
        let Some(id_bytes) = self.tree.get(keys::position(position))? else {
            return Ok(None);
        };
        let id = Uuid::from_slice(&id_bytes).map_err(|err| DbError::Corrupt {
            key: keys::position(position),
            reason: err.to_string(),
        })?;
        let key = keys::statement(&id);
        let Some(bytes) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&bytes).map_err(|err| DbError::Corrupt {
            key,
            reason: err.to_string(),
        })?;
        Ok(Some((record, bytes.len())))
    }

    /// The verdict recorded for a sequence: `None` if not applied yet.
    /// Whether the message with this `LRS_IN` sequence has been applied (or rejected).
    pub fn is_applied(&self, sequence: u64) -> Result<bool, DbError> {
        Ok(sequence <= self.applied_sequence()?
            || self.tree.contains_key(keys::applied_above(sequence))?)
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

    /// Applies one message as one atomic sled batch (not flushed: the caller flushes once per
    /// fetch, before acking). A message at or below the applied sequence is a redelivery and
    /// changes nothing.
    ///
    /// A message that cannot be applied for a reason of its own (a record it reaches is
    /// corrupt, or a bug its content sets off) is refused like an invalid message, with rule
    /// `store.cannot_apply`, and goes to `LRS_REJECTED`: one message never stops the ingest
    /// loop. Errors of the database itself (I/O) are returned; a retry or restart may cure them.
    pub fn apply(
        &self,
        incoming: &Incoming<'_>,
        parsed: Result<Ingest, Rejection>,
        validator: &Validator,
    ) -> Result<Verdict, DbError> {
        let sequence = incoming.sequence;
        if self.is_applied(sequence)? {
            return Ok(self.verdict(sequence)?.unwrap_or(Verdict::Applied));
        }
        // Nothing is written until the message's one batch is applied, so a panic part-way
        // leaves the database as it was.
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_new(incoming, parsed, validator)
        }));
        let reason = match attempt {
            Ok(Err(DbError::Corrupt { key, reason })) => {
                format!("a stored record it needs is unreadable (key {key:?}: {reason})")
            }
            Ok(outcome) => return outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("applying it failed: {what}")
            }
        };
        tracing::error!(sequence, subject = incoming.subject, %reason, "message cannot be applied; refused");
        self.refuse(
            incoming,
            Verdict::Rejected(Rejection {
                statement: None,
                path: String::new(),
                rule: "store.cannot_apply".into(),
                message: xapi::limits::truncate_text(&reason, 512),
            }),
        )
    }

    fn apply_new(
        &self,
        incoming: &Incoming<'_>,
        parsed: Result<Ingest, Rejection>,
        validator: &Validator,
    ) -> Result<Verdict, DbError> {
        let sequence = incoming.sequence;
        let time = format_timestamp(incoming.published);
        let statements = match parsed {
            Err(rejection) => return self.refuse(incoming, Verdict::Rejected(rejection)),
            Ok(Ingest::Erase(command)) => return self.erase(sequence, &command, &time),
            Ok(Ingest::Document { request, body }) => {
                let mut batch = sled::Batch::default();
                let (reply, _) = self.documents().apply(&request, &body, &time, &mut batch)?;
                return match reply.status {
                    DocumentStatus::NoContent | DocumentStatus::Ok => {
                        self.mark_applied(&mut batch, sequence)?;
                        self.tree.apply_batch(batch)?;
                        Ok(Verdict::Applied)
                    }
                    status => self.refuse(
                        incoming,
                        Verdict::Document {
                            status,
                            message: reply.message.unwrap_or_default(),
                        },
                    ),
                };
            }
            Ok(Ingest::Credential(change)) => {
                let mut batch = sled::Batch::default();
                let access = crate::access::Access { tree: &self.tree };
                let verdict = match access.apply(change, &time, &mut batch) {
                    Ok(credential) => Verdict::Credential { credential },
                    Err(crate::access::AccessError::Db(err)) => return Err(err),
                    Err(refused) => Verdict::Refused {
                        code: refused.code().into(),
                        message: refused.to_string(),
                    },
                };
                if !matches!(verdict, Verdict::Credential { .. }) {
                    return self.refuse(incoming, verdict);
                }
                self.mark_applied(&mut batch, sequence)?;
                batch.insert(
                    keys::verdict(sequence),
                    serde_json::to_vec(&verdict).unwrap_or_default(),
                );
                self.tree.apply_batch(batch)?;
                return Ok(verdict);
            }
            Ok(Ingest::Statements(statements)) => statements,
        };
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        let planned = match validator.check_batch(&statements.statements, statements.version) {
            Err(violation) => Err(Verdict::Rejected(Rejection {
                statement: violation.statement,
                path: violation.violation.path,
                rule: violation.violation.rule,
                message: violation.violation.message,
            })),
            Ok(()) => self.plan(incoming, statements, &mut batch)?,
        };
        match planned {
            Ok(index_job) => {
                self.tree.apply_batch(batch)?;
                // After the statements are in: an index entry never points at nothing.
                self.indexer.submit(index_job);
                Ok(Verdict::Applied)
            }
            Err(verdict) => self.refuse(incoming, verdict),
        }
    }

    /// Records a message as applied with a verdict other than applied, and none of its writes;
    /// a rejected message from anyone but the gateway goes to `LRS_REJECTED` (the gateway
    /// answers its own clients).
    fn refuse(&self, incoming: &Incoming<'_>, verdict: Verdict) -> Result<Verdict, DbError> {
        let sequence = incoming.sequence;
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        let verdict_json = serde_json::to_vec(&verdict).unwrap_or_default();
        batch.insert(keys::verdict(sequence), verdict_json);
        // Statement sources other than the gateway hear of it only through LRS_REJECTED; the
        // gateway and the operator's commands wait for the verdict itself.
        let published_straight = incoming.subject != bus::subjects::IN_HTTP
            && bus::subjects::ingest_source(incoming.subject).is_some();
        if let (Verdict::Rejected(rejection), true) = (&verdict, published_straight) {
            let rejected = RejectedMessage {
                subject: incoming.subject.to_owned(),
                sequence,
                rejection: rejection.clone(),
                payload: String::from_utf8_lossy(incoming.payload).into_owned(),
                payload_bytes: None,
                payload_truncated: false,
            };
            self.push_outbox(&mut batch, &OutboxItem::Rejected(rejected));
        }
        self.tree.apply_batch(batch)?;
        Ok(verdict)
    }

    /// Decides the effects of a valid message and writes them into `batch`, returning the
    /// index work; or the verdict (and the caller discards `batch`) on a conflict or voiding
    /// error.
    fn plan(
        &self,
        incoming: &Incoming<'_>,
        parsed: Batch,
        batch: &mut sled::Batch,
    ) -> Result<Result<IndexJob, Verdict>, DbError> {
        let sequence = incoming.sequence;
        let mut next_position = self.meta_u64(keys::META_NEXT_POSITION)?.max(1);
        let stored = self.next_stored(incoming.published)?;
        let stream = self.stream_created()?;
        // Statements of this message, by id, as they will be after the batch.
        let mut pending: HashMap<Uuid, Record> = HashMap::new();
        // Voids of this message whose target was not found (yet).
        let mut voids_waiting: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
        let mut events = Vec::new();
        let mut index_entries = Vec::new();
        for (index, mut statement) in parsed.statements.into_iter().enumerate() {
            let id = match statement_id(&statement).and_then(|id| Uuid::parse_str(&id).ok()) {
                Some(id) => id,
                None => {
                    let id = generated_id(&stream, sequence, index);
                    if let Some(object) = statement.as_object_mut() {
                        object.insert("id".into(), Value::String(id.to_string()));
                    }
                    id
                }
            };
            if let Some(existing) = self.record(&id)? {
                if equivalent(&existing.statement, &statement) {
                    continue;
                }
                return Ok(Err(Verdict::Conflict {
                    statement: index,
                    id: id.to_string(),
                }));
            }
            complete_for_store(&mut statement, &stored, &parsed.authority, parsed.version);
            let position = next_position;
            next_position += 1;
            let brought: Vec<String> = index_terms(&statement)
                .attachments
                .into_iter()
                .filter(|sha2| {
                    parsed
                        .bodies
                        .iter()
                        .any(|body| body.eq_ignore_ascii_case(sha2))
                })
                .collect();
            let mut record = Record {
                statement,
                voided: false,
                position,
                defines: parsed.define,
                bodies: brought,
            };
            if let Some(target) = voided_target(&record.statement) {
                let target = Uuid::parse_str(&target).unwrap_or_default();
                let target_record = match pending.get(&target) {
                    Some(record) => Some(record.clone()),
                    None => self.record(&target)?,
                };
                match target_record {
                    Some(target_record) if voided_target(&target_record.statement).is_some() => {
                        return Ok(Err(Verdict::Rejected(Rejection {
                            statement: Some(index),
                            path: "/object/id".into(),
                            rule: "voiding.target_not_voiding".into(),
                            message: format!(
                                "statement {target} is itself a voiding statement and cannot be voided"
                            ),
                        })));
                    }
                    Some(mut target_record) => {
                        if !target_record.voided {
                            target_record.voided = true;
                            write_record(batch, &target, &target_record);
                            events.push((EventKind::Voided, target));
                            pending.insert(target, target_record);
                        }
                    }
                    None => {
                        batch.insert(keys::pending_void(&target), id.as_bytes().as_slice());
                        voids_waiting.insert(target);
                    }
                }
            }
            events.push((EventKind::Stored, id));
            if voids_waiting.remove(&id) || self.tree.contains_key(keys::pending_void(&id))? {
                record.voided = true;
                batch.remove(keys::pending_void(&id));
                events.push((EventKind::Voided, id));
            }
            write_record(batch, &id, &record);
            batch.insert(keys::position(position), id.as_bytes().as_slice());
            index_entries.extend(self.index_entries(&record, &pending)?);
            pending.insert(id, record);
        }
        batch.insert(keys::META_NEXT_POSITION, &next_position.to_be_bytes());
        batch.insert(keys::META_LAST_STORED, stored.as_bytes());
        if !events.is_empty() {
            self.push_outbox(batch, &OutboxItem::Events { sequence, events });
        }
        Ok(Ok(IndexJob {
            entries: index_entries,
            through: next_position - 1,
        }))
    }

    /// The statements a statement references through StatementRef objects, nearest first
    /// (a reference to a reference counts too), as far as they are stored.
    pub fn reference_chain(
        &self,
        statement: &Value,
        pending: &HashMap<Uuid, Record>,
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
                Some(record) => Some(record.clone()),
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

    /// `stored` for the next message: when JetStream took it in, but never before the last
    /// one, so `stored` order equals position order even if a server's clock steps back.
    fn next_stored(&self, published: DateTime<Utc>) -> Result<String, DbError> {
        let now = format_timestamp(published);
        let last = self
            .tree
            .get(keys::META_LAST_STORED)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        Ok(if last > now { last } else { now })
    }

    pub fn tree(&self) -> &sled::Db {
        &self.tree
    }
}

/// The id of a statement that came without one (straight from a source; the gateway gives
/// ids itself): from its place in the log (stream, sequence, index in the message), the same
/// on every store replica. The stream is the recorded creation time of `LRS_IN`
/// ([`crate::identity`]), so a recreated stream's sequences make other ids.
fn generated_id(stream: &str, sequence: u64, index: usize) -> Uuid {
    const NAMESPACE: &[u8] = b"leerspoor:LRS_IN:";
    let mut name = Vec::with_capacity(NAMESPACE.len() + stream.len() + 17);
    name.extend_from_slice(NAMESPACE);
    name.extend_from_slice(stream.as_bytes());
    name.push(b':');
    name.extend_from_slice(&sequence.to_be_bytes());
    name.extend_from_slice(&(index as u64).to_be_bytes());
    let digest = xxhash_rust::xxh3::xxh3_128(&name).to_be_bytes();
    uuid::Builder::from_custom_bytes(digest).into_uuid()
}

fn write_record(batch: &mut sled::Batch, id: &Uuid, record: &Record) {
    if let Ok(bytes) = serde_json::to_vec(record) {
        batch.insert(keys::statement(id), bytes);
    }
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
