//! Applying one `LRS_IN` message: the store's write path. Every message is one atomic sled
//! batch together with its sequence (applied exactly once), and a pure function of the message
//! and the database: the same log gives every replica the same content.

use std::collections::HashMap;

use bus::wire::{DocumentStatus, EventKind, RejectedMessage, Rejection, Verdict};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use xapi::statement::{complete_for_store, equivalent, index_terms, statement_id, voided_target};
use xapi::time::format_timestamp;
use xapi::Validator;

use crate::db::{Db, DbError, Incoming, Record};
use crate::indexer::IndexJob;
use crate::ingest::{Batch, Ingest};
use crate::keys;
use crate::outbox::{OutboxEvent, OutboxItem};

impl Db {
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
            Ok(Ingest::Hub(change)) => {
                let mut batch = sled::Batch::default();
                let registry = crate::registry::Registry { tree: &self.tree };
                if let Err(refused) = registry.apply(&change, &mut batch)? {
                    return self.refuse(
                        incoming,
                        Verdict::Refused {
                            code: refused.code.into(),
                            message: refused.message,
                        },
                    );
                }
                self.mark_applied(&mut batch, sequence)?;
                self.tree.apply_batch(batch)?;
                return Ok(Verdict::Applied);
            }
            Ok(Ingest::Statements(statements)) => statements,
        };
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        // The gateway validated its batches with the same validator before publishing them on
        // `lrs.in.http`, which only Leerspoor's own NATS users may publish to; a second pass
        // here cost ~5% of an apply. Everything published straight (hubs, tools, imports) is
        // validated here.
        let checked = if incoming.subject == bus::subjects::IN_HTTP {
            // Still never anything but objects, whatever reaches the subject.
            match statements
                .statements
                .iter()
                .position(|statement| !statement.is_object())
            {
                None => Ok(()),
                Some(index) => Err(xapi::BatchViolation {
                    statement: Some(index),
                    violation: xapi::Violation {
                        path: String::new(),
                        rule: "statement.object".into(),
                        message: "a gateway batch holds something other than a statement object"
                            .into(),
                    },
                }),
            }
        } else {
            validator.check_batch(&statements.statements, statements.version)
        };
        let planned = match checked {
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
        // The `stored` spans of the blocks this message's positions fall in, as they will be.
        let mut spans = HashMap::new();
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
            if let Some(existing) = self.record_if_stored(&id)? {
                if equivalent(&existing.statement, &statement) {
                    continue;
                }
                return Ok(Err(Verdict::Conflict {
                    statement: index,
                    id: id.to_string(),
                }));
            }
            let original = parsed
                .keep_original
                .then(|| original_stored_and_authority(&statement));
            complete_for_store(&mut statement, &stored, &parsed.authority, parsed.version);
            if let (Some((stored, authority)), Some(object)) = (original, statement.as_object_mut())
            {
                if let Some(stored) = stored {
                    object.insert("stored".into(), stored);
                }
                if let Some(authority) = authority {
                    object.insert("authority".into(), authority);
                }
            }
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
                            write_record(batch, &target_record);
                            events.push(OutboxEvent::At(EventKind::Voided, target_record.position));
                            pending.insert(target, target_record);
                        }
                    }
                    None => {
                        batch.insert(keys::pending_void(&target), id.as_bytes().as_slice());
                        voids_waiting.insert(target);
                    }
                }
            }
            events.push(OutboxEvent::At(EventKind::Stored, position));
            if voids_waiting.remove(&id) || self.tree.contains_key(keys::pending_void(&id))? {
                record.voided = true;
                batch.remove(keys::pending_void(&id));
                events.push(OutboxEvent::At(EventKind::Voided, position));
            }
            write_record(batch, &record);
            self.note_id(&id);
            batch.insert(keys::statement(&id), &position.to_be_bytes());
            let stored = record.statement["stored"].as_str().unwrap_or_default();
            let span = keys::Span {
                earliest: stored.to_owned(),
                latest: stored.to_owned(),
                through: position,
            };
            crate::db::widen_span(&self.tree, &mut spans, position, span)?;
            index_entries.extend(self.index_entries(&record, &pending)?);
            pending.insert(id, record);
        }
        // Widened in memory first: a query that sees this batch's statements sees their spans.
        self.widen_spans(&spans);
        crate::db::write_spans(batch, &spans);
        batch.insert(keys::META_NEXT_POSITION, &next_position.to_be_bytes());
        batch.insert(keys::META_LAST_STORED, stored.as_bytes());
        if !events.is_empty() {
            // The first message of a run is known by its own sequence.
            let run = incoming.run.filter(|run| *run != sequence);
            self.push_outbox(
                batch,
                &OutboxItem::Events {
                    sequence,
                    events,
                    run,
                },
            );
        }
        Ok(Ok(IndexJob {
            entries: index_entries,
            through: next_position - 1,
        }))
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
}

/// What an imported statement brings of its own: `stored` (a timestamp) and `authority` (an
/// object), each kept when present and well-formed.
fn original_stored_and_authority(statement: &Value) -> (Option<Value>, Option<Value>) {
    let stored = statement
        .get("stored")
        .and_then(Value::as_str)
        .and_then(|text| xapi::time::parse_timestamp(text).ok())
        .map(|time| Value::String(format_timestamp(time.with_timezone(&Utc))));
    let authority = statement
        .get("authority")
        .filter(|value| value.is_object())
        .cloned();
    (stored, authority)
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

fn write_record(batch: &mut sled::Batch, record: &Record) {
    if let Ok(bytes) = serde_json::to_vec(record) {
        batch.insert(keys::record(record.position), crate::packed::pack(&bytes));
    }
}
