//! The store's sled database: applying one `LRS_IN` message atomically, and reading back.

use std::collections::HashMap;
use std::path::Path;

use bus::wire::{RejectedMessage, Rejection, StoredEvent, Verdict};
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

use crate::ingest::Batch;
use crate::keys::{self, IndexKind};

/// A stored statement and whether it has been voided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub statement: Value,
    pub voided: bool,
    pub position: u64,
}

/// A message waiting in the outbox for `LRS_STORED` or `LRS_REJECTED`. It is written in the
/// same batch as the change it reports, so a crash after the flush cannot lose it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub subject: String,
    /// `Nats-Msg-Id`, so a republish after a crash is dropped by JetStream dedup.
    pub msg_id: String,
    pub payload: Value,
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
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

pub struct Db {
    tree: sled::Db,
}

impl Db {
    /// Opens (or creates) the database. Fails fast if another process holds it.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
        Ok(Db { tree })
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
    pub fn verdict(&self, sequence: u64) -> Result<Option<Verdict>, DbError> {
        if sequence > self.applied_sequence()? {
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
        if sequence <= self.applied_sequence()? {
            return Ok(self.verdict(sequence)?.unwrap_or(Verdict::Applied));
        }
        let mut batch = sled::Batch::default();
        batch.insert(keys::META_APPLIED, &sequence.to_be_bytes());
        let verdict = match parsed {
            Err(rejection) => Verdict::Rejected(rejection),
            Ok(parsed) => match validator.check_batch(&parsed.statements, parsed.version) {
                Err(violation) => Verdict::Rejected(Rejection {
                    statement: violation.statement,
                    path: violation.violation.path,
                    rule: violation.violation.rule,
                    message: violation.violation.message,
                }),
                Ok(()) => self.plan(parsed, &mut batch)?,
            },
        };
        if verdict != Verdict::Applied {
            // Only the applied sequence and the verdict: none of the message's writes.
            batch = sled::Batch::default();
            batch.insert(keys::META_APPLIED, &sequence.to_be_bytes());
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
                let entry = OutboxEntry {
                    subject: bus::subjects::REJECTED.to_owned(),
                    msg_id: format!("rejected-{sequence}"),
                    payload: serde_json::to_value(rejected).unwrap_or_default(),
                };
                self.push_outbox(&mut batch, &entry);
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(verdict)
    }

    /// Decides the effects of a valid message and writes them into `batch`; returns a
    /// non-`Applied` verdict (and the caller discards `batch`) on a conflict or voiding error.
    fn plan(&self, parsed: Batch, batch: &mut sled::Batch) -> Result<Verdict, DbError> {
        let mut next_position = self.meta_u64(keys::META_NEXT_POSITION)?.max(1);
        let stored = self.next_stored()?;
        // Statements of this message, by id, as they will be after the batch.
        let mut pending: HashMap<Uuid, Record> = HashMap::new();
        // Voids of this message whose target was not found (yet).
        let mut voids_waiting: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
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
                return Ok(Verdict::Conflict {
                    statement: index,
                    id: id.to_string(),
                });
            }
            complete_for_store(&mut statement, &stored, &parsed.authority, parsed.version);
            let position = next_position;
            next_position += 1;
            let mut record = Record {
                statement,
                voided: false,
                position,
            };
            let mut events = vec![(bus::subjects::STORED_STATEMENT, "stored")];
            if let Some(target) = voided_target(&record.statement) {
                let target = Uuid::parse_str(&target).unwrap_or_default();
                let target_record = match pending.get(&target) {
                    Some(record) => Some(record.clone()),
                    None => self.record(&target)?,
                };
                match target_record {
                    Some(target_record) if voided_target(&target_record.statement).is_some() => {
                        return Ok(Verdict::Rejected(Rejection {
                            statement: Some(index),
                            path: "/object/id".into(),
                            rule: "voiding.target_not_voiding".into(),
                            message: format!(
                                "statement {target} is itself a voiding statement and cannot be voided"
                            ),
                        }));
                    }
                    Some(mut target_record) => {
                        if !target_record.voided {
                            target_record.voided = true;
                            self.write_voided(batch, &target_record);
                            pending.insert(target, target_record);
                        }
                    }
                    None => {
                        batch.insert(keys::pending_void(&target), id.as_bytes().as_slice());
                        voids_waiting.insert(target);
                    }
                }
            }
            if voids_waiting.remove(&id) || self.tree.contains_key(keys::pending_void(&id))? {
                record.voided = true;
                batch.remove(keys::pending_void(&id));
                events.push((bus::subjects::STORED_VOIDED, "voided"));
            }
            write_record(batch, &id, &record);
            batch.insert(keys::position(position), id.as_bytes().as_slice());
            write_indexes(batch, &index_terms(&record.statement), position);
            // A statement that references another is found by the filters its target matches.
            for target in self.reference_chain(&record.statement, &pending)? {
                write_indexes(batch, &index_terms(&target), position);
            }
            for (subject, kind) in events {
                self.write_outbox(batch, subject, kind, &record);
            }
            pending.insert(id, record);
        }
        batch.insert(keys::META_NEXT_POSITION, &next_position.to_be_bytes());
        batch.insert(keys::META_LAST_STORED, stored.as_bytes());
        Ok(Verdict::Applied)
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

    fn write_voided(&self, batch: &mut sled::Batch, target: &Record) {
        if let Some(id) = statement_id(&target.statement).and_then(|id| Uuid::parse_str(&id).ok()) {
            write_record(batch, &id, target);
        }
        self.write_outbox(batch, bus::subjects::STORED_VOIDED, "voided", target);
    }

    fn write_outbox(&self, batch: &mut sled::Batch, subject: &str, kind: &str, record: &Record) {
        let id = statement_id(&record.statement).unwrap_or_default();
        let event = StoredEvent {
            position: record.position,
            statement: record.statement.clone(),
        };
        let entry = OutboxEntry {
            subject: subject.to_owned(),
            msg_id: format!("{kind}-{id}"),
            payload: serde_json::to_value(event).unwrap_or_default(),
        };
        self.push_outbox(batch, &entry);
    }

    fn push_outbox(&self, batch: &mut sled::Batch, entry: &OutboxEntry) {
        // sled's id generator is monotonic across restarts: outbox keys keep event order.
        let order = self.tree.generate_id().unwrap_or(u64::MAX);
        if let Ok(bytes) = serde_json::to_vec(entry) {
            batch.insert(keys::outbox(order, 0), bytes);
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

    /// Outbox entries in event order, with their keys for removal once published.
    pub fn outbox(&self) -> Result<Vec<(sled::IVec, OutboxEntry)>, DbError> {
        let mut entries = Vec::new();
        for item in self.tree.scan_prefix([keys::OUTBOX]) {
            let (key, value) = item?;
            let entry = serde_json::from_slice(&value).map_err(|err| DbError::Corrupt {
                key: key.to_vec(),
                reason: err.to_string(),
            })?;
            entries.push((key, entry));
        }
        Ok(entries)
    }

    pub fn remove_outbox(&self, published: &[sled::IVec]) -> Result<(), DbError> {
        let mut batch = sled::Batch::default();
        for key in published {
            batch.remove(key);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub(crate) fn tree(&self) -> &sled::Db {
        &self.tree
    }
}

fn write_record(batch: &mut sled::Batch, id: &Uuid, record: &Record) {
    if let Ok(bytes) = serde_json::to_vec(record) {
        batch.insert(keys::statement(id), bytes);
    }
}

/// One entry per filterable term: each is ~12 µs of sled work, so only what queries use.
fn write_indexes(batch: &mut sled::Batch, terms: &IndexTerms, position: u64) {
    let empty: &[u8] = &[];
    for agent in &terms.agents {
        batch.insert(keys::index(IndexKind::Agent, agent, position), empty);
    }
    for agent in &terms.related_agents {
        batch.insert(keys::index(IndexKind::RelatedAgent, agent, position), empty);
    }
    if let Some(verb) = &terms.verb {
        batch.insert(keys::index(IndexKind::Verb, verb, position), empty);
    }
    if let Some(activity) = &terms.activity {
        batch.insert(keys::index(IndexKind::Activity, activity, position), empty);
    }
    for activity in &terms.related_activities {
        batch.insert(
            keys::index(IndexKind::RelatedActivity, activity, position),
            empty,
        );
    }
    if let Some(registration) = &terms.registration {
        batch.insert(
            keys::index(IndexKind::Registration, registration, position),
            empty,
        );
    }
}
