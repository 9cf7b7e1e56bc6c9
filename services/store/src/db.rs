//! The store's sled database: applying one `LRS_IN` message atomically, and reading back.

use std::collections::HashMap;
use std::path::Path;

use bus::wire::{EventKind, RejectedMessage, Rejection, StoredEvent, StoredEvents, Verdict};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use xapi::statement::{
    complete_for_store, equivalent, index_terms, referenced_statement, statement_id, voided_target,
    IndexTerms,
};
use xapi::time::format_timestamp;
use xapi::Validator;

use crate::indexer::{IndexJob, Indexer};
use crate::ingest::Batch;
use crate::keys;

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
}

fn defines_by_default() -> bool {
    true
}

/// A message owed to `LRS_STORED` or `LRS_REJECTED`, written in the same batch as the change
/// it reports, so a crash after the flush cannot lose it. Events name their statements only:
/// the statements are read back when published, which keeps outbox values small (a sled value
/// of ~100 KB becomes a blob file of its own, a cost per message).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum OutboxItem {
    Events {
        sequence: u64,
        events: Vec<(EventKind, Uuid)>,
    },
    Rejected(RejectedMessage),
    /// Erased statements, carried whole: they are gone from the tree, and the projector
    /// needs them to take back what they counted. One item per chunk of an erasure.
    Erased {
        sequence: u64,
        chunk: usize,
        statements: Vec<(u64, Value)>,
    },
}

/// An outbox message ready to publish.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub subject: &'static str,
    /// `Nats-Msg-Id`, so a republish after a crash is dropped by JetStream dedup.
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// The `LRS_IN` message being applied, as it arrived.
pub struct Incoming<'a> {
    pub sequence: u64,
    pub subject: &'a str,
    pub payload: &'a [u8],
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
}

impl Db {
    /// Opens (or creates) the database. Fails fast if another process holds it.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let indexed = tree
            .get(keys::META_INDEXED)?
            .and_then(|bytes| keys::u64_value(&bytes))
            .unwrap_or(0);
        let db = Db {
            indexer: Indexer::start(tree.clone(), indexed),
            tree,
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
        let Some(id_bytes) = self.tree.get(keys::position(position))? else {
            return Ok(None);
        };
        let id = Uuid::from_slice(&id_bytes).map_err(|err| DbError::Corrupt {
            key: keys::position(position),
            reason: err.to_string(),
        })?;
        self.record(&id)
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
    pub fn apply(
        &self,
        incoming: &Incoming<'_>,
        parsed: Result<Batch, Rejection>,
        validator: &Validator,
    ) -> Result<Verdict, DbError> {
        let sequence = incoming.sequence;
        if self.is_applied(sequence)? {
            return Ok(self.verdict(sequence)?.unwrap_or(Verdict::Applied));
        }
        if incoming.subject == bus::subjects::IN_ERASE {
            return self.erase(sequence, incoming.payload);
        }
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        let planned = match parsed {
            Err(rejection) => Err(Verdict::Rejected(rejection)),
            Ok(parsed) => match validator.check_batch(&parsed.statements, parsed.version) {
                Err(violation) => Err(Verdict::Rejected(Rejection {
                    statement: violation.statement,
                    path: violation.violation.path,
                    rule: violation.violation.rule,
                    message: violation.violation.message,
                })),
                Ok(()) => self.plan(sequence, parsed, &mut batch)?,
            },
        };
        let verdict = match planned {
            Ok(index_job) => {
                self.tree.apply_batch(batch)?;
                // After the statements are in: an index entry never points at nothing.
                self.indexer.submit(index_job);
                return Ok(Verdict::Applied);
            }
            Err(verdict) => verdict,
        };
        // Only the applied sequence and the verdict: none of the message's writes.
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        let verdict_json = serde_json::to_vec(&verdict).unwrap_or_default();
        batch.insert(keys::verdict(sequence), verdict_json);
        // The gateway answers its own clients; anything else goes to LRS_REJECTED.
        if let (Verdict::Rejected(rejection), false) =
            (&verdict, incoming.subject == bus::subjects::IN_HTTP)
        {
            let rejected = RejectedMessage {
                subject: incoming.subject.to_owned(),
                sequence,
                rejection: rejection.clone(),
                payload: String::from_utf8_lossy(incoming.payload).into_owned(),
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
        sequence: u64,
        parsed: Batch,
        batch: &mut sled::Batch,
    ) -> Result<Result<IndexJob, Verdict>, DbError> {
        let mut next_position = self.meta_u64(keys::META_NEXT_POSITION)?.max(1);
        let stored = self.next_stored()?;
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
                    let id = Uuid::new_v4();
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
            let mut record = Record {
                statement,
                voided: false,
                position,
                defines: parsed.define,
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

    pub(crate) fn push_outbox(&self, batch: &mut sled::Batch, entry: &OutboxItem) {
        // sled's id generator is monotonic across restarts: outbox keys keep event order.
        let order = self.tree.generate_id().unwrap_or(u64::MAX);
        if let Ok(bytes) = serde_json::to_vec(entry) {
            batch.insert(keys::outbox(order), bytes);
        }
    }

    /// `stored` for the next message: now, but never before the last one, so `stored`
    /// order equals position order even if the clock steps back.
    fn next_stored(&self) -> Result<String, DbError> {
        let now = format_timestamp(Utc::now());
        let last = self
            .tree
            .get(keys::META_LAST_STORED)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        Ok(if last > now { last } else { now })
    }

    /// The key of the newest outbox entry, if any.
    pub fn last_outbox_key(&self) -> Result<Option<sled::IVec>, DbError> {
        Ok(self
            .tree
            .scan_prefix([keys::OUTBOX])
            .keys()
            .next_back()
            .transpose()?)
    }

    /// Outbox messages in event order, up to and including the key `through` (all when
    /// `None`), with their keys for removal once published.
    pub fn outbox(
        &self,
        through: Option<&[u8]>,
    ) -> Result<Vec<(sled::IVec, OutboxMessage)>, DbError> {
        let mut messages = Vec::new();
        for item in self.tree.scan_prefix([keys::OUTBOX]) {
            let (key, value) = item?;
            if through.is_some_and(|through| key.as_ref() > through) {
                break;
            }
            let corrupt = |reason: String| DbError::Corrupt {
                key: key.to_vec(),
                reason,
            };
            let item: OutboxItem =
                serde_json::from_slice(&value).map_err(|err| corrupt(err.to_string()))?;
            let message = match item {
                OutboxItem::Rejected(rejected) => OutboxMessage {
                    subject: bus::subjects::REJECTED,
                    msg_id: format!("rejected-{}", rejected.sequence),
                    payload: serde_json::to_vec(&rejected)
                        .map_err(|err| corrupt(err.to_string()))?,
                },
                OutboxItem::Erased {
                    sequence,
                    chunk,
                    statements,
                } => {
                    let events = StoredEvents {
                        sequence,
                        events: statements
                            .into_iter()
                            .map(|(position, statement)| StoredEvent {
                                kind: EventKind::Erased,
                                position,
                                statement,
                            })
                            .collect(),
                    };
                    OutboxMessage {
                        subject: bus::subjects::STORED_EVENTS,
                        msg_id: format!("erased-{sequence}-{chunk}"),
                        payload: serde_json::to_vec(&events)
                            .map_err(|err| corrupt(err.to_string()))?,
                    }
                }
                OutboxItem::Events { sequence, events } => {
                    let mut stored_events = Vec::with_capacity(events.len());
                    for (kind, id) in events {
                        // Erased since: its `erased` event follows in a later item.
                        let Some(record) = self.record(&id)? else {
                            continue;
                        };
                        stored_events.push(StoredEvent {
                            kind,
                            position: record.position,
                            statement: record.statement,
                        });
                    }
                    let events = StoredEvents {
                        sequence,
                        events: stored_events,
                    };
                    OutboxMessage {
                        subject: bus::subjects::STORED_EVENTS,
                        msg_id: format!("events-{sequence}"),
                        payload: serde_json::to_vec(&events)
                            .map_err(|err| corrupt(err.to_string()))?,
                    }
                }
            };
            messages.push((key, message));
        }
        Ok(messages)
    }

    pub fn remove_outbox(&self, published: &[sled::IVec]) -> Result<(), DbError> {
        let mut batch = sled::Batch::default();
        for key in published {
            batch.remove(key);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn tree(&self) -> &sled::Db {
        &self.tree
    }
}

fn write_record(batch: &mut sled::Batch, id: &Uuid, record: &Record) {
    if let Ok(bytes) = serde_json::to_vec(record) {
        batch.insert(keys::statement(id), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest;
    use bus::wire::StatementQuery;
    use serde_json::json;

    fn message(n: usize) -> Vec<u8> {
        let statements: Vec<Value> = (0..5)
            .map(|i| {
                json!({
                    "actor": {"mbox": format!("mailto:w{n}-{i}@example.org")},
                    "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                    "object": {"id": "https://hub.example/sessions/1"}
                })
            })
            .collect();
        serde_json::to_vec(&statements).expect("json")
    }

    fn apply(db: &Db, validator: &Validator, sequence: u64) {
        let payload = message(sequence as usize);
        let incoming = Incoming {
            sequence,
            subject: "lrs.in.tool.test",
            payload: &payload,
        };
        let parsed = ingest::parse(incoming.subject, &payload, None);
        assert_eq!(
            db.apply(&incoming, parsed, validator).expect("apply"),
            Verdict::Applied
        );
    }

    fn by_verb(db: &Db) -> usize {
        let query = StatementQuery {
            verb: Some("http://adlnet.gov/expapi/verbs/attended".into()),
            ..StatementQuery::default()
        };
        match crate::query::run(db, &query).expect("query") {
            bus::wire::StatementReply::Page { statements, .. } => statements.len(),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    #[test]
    fn indexes_lost_in_a_crash_are_rebuilt_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        {
            let db = Db::open(dir.path()).expect("open");
            for sequence in 1..=3 {
                apply(&db, &validator, sequence);
            }
            assert_eq!(by_verb(&db), 15);
            // What a crash before the index thread wrote anything would leave behind.
            db.wait_for_indexes().expect("indexed");
            let index_keys: Vec<sled::IVec> = db
                .tree()
                .scan_prefix([keys::INDEX])
                .keys()
                .collect::<Result<_, _>>()
                .expect("scan");
            for key in index_keys {
                db.tree().remove(key).expect("remove");
            }
            db.tree().remove(keys::META_INDEXED).expect("remove");
            db.flush().expect("flush");
        }
        let db = Db::open(dir.path()).expect("reopen");
        assert_eq!(by_verb(&db), 15);
    }

    #[test]
    fn an_earlier_message_redelivered_after_a_later_one_is_still_applied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        let db = Db::open(dir.path()).expect("open");
        apply(&db, &validator, 2);
        assert_eq!(
            db.applied_sequence().expect("meta"),
            0,
            "1 is still missing"
        );
        assert!(db.is_applied(2).expect("check"));
        assert!(!db.is_applied(1).expect("check"));
        apply(&db, &validator, 1);
        assert_eq!(db.applied_sequence().expect("meta"), 2);
        assert_eq!(by_verb(&db), 10);
        apply(&db, &validator, 2);
        assert_eq!(by_verb(&db), 10, "and a redelivery of 2 changes nothing");
    }

    #[test]
    fn a_redelivered_message_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        let db = Db::open(dir.path()).expect("open");
        apply(&db, &validator, 1);
        apply(&db, &validator, 1);
        assert_eq!(by_verb(&db), 5);
        assert_eq!(db.applied_sequence().expect("meta"), 1);
    }
}
