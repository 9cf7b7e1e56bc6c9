//! Applying one `LRS_IN` message: the store's write path. Every message is one atomic sled
//! batch together with its sequence (applied exactly once), and a pure function of the message
//! and the database: the same log gives every replica the same content.

use std::collections::{HashMap, HashSet};

use bus::wire::{DocumentStatus, EventKind, RejectedMessage, Rejection, Verdict};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use xapi::statement::{
    complete_for_store, equivalent, index_terms, statement_id, voided_target, IndexTerms,
};
use xapi::time::format_timestamp;
use xapi::Validator;

use crate::db::{Db, DbError, Incoming, Record};
use crate::indexer::IndexJob;
use crate::ingest::{Batch, BatchSettings, Ingest, Statements};
use crate::keys;
use crate::outbox::{OutboxEvent, OutboxItem};
use crate::written::{Kept, Written, WrittenRecord};

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
            Ok(Ingest::Statements(statements)) => (vec![statements], false),
            Ok(Ingest::Bundle(parts)) => (parts, true),
        };
        let (parts, bundle) = statements;
        let mut plan = self.begin_plan(incoming)?;
        let mut verdicts = Vec::with_capacity(parts.len());
        for part in parts {
            let verdict = match self.refusal(incoming, &part, validator) {
                Some(verdict) => verdict,
                None => match self.plan_part(incoming, &mut plan, part)? {
                    Ok(()) => Verdict::Applied,
                    Err(verdict) => verdict,
                },
            };
            verdicts.push(verdict);
        }
        let verdict = if verdicts.iter().all(|verdict| *verdict == Verdict::Applied) {
            Verdict::Applied
        } else if bundle {
            Verdict::Parts { parts: verdicts }
        } else {
            // One batch, not applied: the message is refused as a whole.
            let verdict = verdicts.pop().unwrap_or(Verdict::Applied);
            return self.refuse(incoming, verdict);
        };
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        if verdict != Verdict::Applied {
            // A bundle with parts that were not applied: each part's verdict, for its writer.
            batch.insert(
                keys::verdict(sequence),
                serde_json::to_vec(&verdict).unwrap_or_default(),
            );
        }
        let index_job = self.finish_plan(incoming, plan, &mut batch);
        self.tree.apply_batch(batch)?;
        // After the statements are in: an index entry never points at nothing.
        self.indexer.submit(index_job);
        Ok(verdict)
    }

    /// The verdict refusing a batch before it is planned, if any: a straight publisher's is
    /// validated here.
    fn refusal(
        &self,
        incoming: &Incoming<'_>,
        statements: &Batch,
        validator: &Validator,
    ) -> Option<Verdict> {
        // The gateway validated its batches with the same validator before publishing them on
        // `lrs.in.http`, which only Leerspoor's own NATS users may publish to; a second pass
        // here cost ~5% of an apply. Everything published straight (hubs, tools, imports) is
        // validated here.
        let not_object = |statement| xapi::BatchViolation {
            statement,
            violation: xapi::Violation {
                path: String::new(),
                rule: "statement.object".into(),
                message: "a gateway batch holds something other than a statement object".into(),
            },
        };
        let checked = match (&statements.statements, incoming.subject) {
            // Still never anything but objects, whatever reaches the subject.
            (statements, bus::subjects::IN_HTTP) => match statements.first_not_object() {
                None => Ok(()),
                Some(index) => Err(not_object(Some(index))),
            },
            (Statements::Parsed(values), _) => {
                validator.check_batch(values, statements.settings.version)
            }
            // Only the gateway's messages are read as its text.
            (Statements::Written(_), _) => Err(not_object(None)),
        };
        checked.err().map(|violation| {
            Verdict::Rejected(Rejection {
                statement: violation.statement,
                path: violation.violation.path,
                rule: violation.violation.rule,
                message: violation.violation.message,
            })
        })
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

    /// The plan of a message before its first statement.
    fn begin_plan(&self, incoming: &Incoming<'_>) -> Result<Planning, DbError> {
        Ok(Planning {
            stored: self.next_stored(incoming.published)?,
            stream: self.stream_created()?,
            next_position: self.meta_u64(keys::META_NEXT_POSITION)?.max(1),
            planned: 0,
            pending: HashMap::new(),
            voids_waiting: HashSet::new(),
            events: Vec::new(),
            index_entries: Vec::new(),
            spans: HashMap::new(),
            writes: Vec::new(),
            undo: Vec::new(),
        })
    }

    /// Decides the effects of one valid batch (a message's, or a part of a bundle's) and adds
    /// them to `plan`; or the verdict on a conflict or voiding error, and `plan` is as it was.
    fn plan_part(
        &self,
        incoming: &Incoming<'_>,
        plan: &mut Planning,
        parsed: Batch,
    ) -> Result<Result<(), Verdict>, DbError> {
        let mark = plan.mark();
        let planned = self.plan_statements(incoming, plan, parsed);
        if !matches!(planned, Ok(Ok(()))) {
            plan.roll_back(mark);
        }
        plan.undo.clear();
        planned
    }

    /// [`Db::plan_part`]'s work: what it planned stays in `plan`, with its undo log, for the
    /// caller to keep or roll back.
    fn plan_statements(
        &self,
        incoming: &Incoming<'_>,
        plan: &mut Planning,
        parsed: Batch,
    ) -> Result<Result<(), Verdict>, DbError> {
        let first = plan.planned;
        plan.planned += parsed.statements.len();
        let Batch {
            statements,
            settings: batch,
        } = parsed;
        match statements {
            Statements::Parsed(values) => {
                for (index, statement) in values.into_iter().enumerate() {
                    let at = Place { first, index };
                    if let Err(verdict) = self.plan_built(incoming, plan, &batch, at, statement)? {
                        return Ok(Err(verdict));
                    }
                }
            }
            Statements::Written(texts) => {
                let owned = OwnedByStore {
                    authority: serde_json::to_string(&batch.authority).unwrap_or_default(),
                    terms: crate::written::authority_terms(&batch.authority),
                };
                for (index, text) in texts.into_iter().enumerate() {
                    let at = Place { first, index };
                    let written = (!batch.keep_original)
                        .then(|| Written::read(text.get()))
                        .flatten();
                    let planned = match written {
                        Some(written) => self.plan_written(
                            incoming,
                            plan,
                            &batch,
                            &owned,
                            at,
                            text.get(),
                            written,
                        )?,
                        None => {
                            let statement = built(text.get(), plan.next_position)?;
                            self.plan_built(incoming, plan, &batch, at, statement)?
                        }
                    };
                    if let Err(verdict) = planned {
                        return Ok(Err(verdict));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Plans a statement of the gateway's read as [`Written`]: it is stored as its text with
    /// the store's members put in front, indexed under the terms read from it. One whose id is
    /// planned or stored already is built whole, for [`Db::plan_built`] to decide.
    #[allow(clippy::too_many_arguments)]
    fn plan_written(
        &self,
        incoming: &Incoming<'_>,
        plan: &mut Planning,
        batch: &BatchSettings,
        owned: &OwnedByStore,
        at: Place,
        text: &str,
        written: Written,
    ) -> Result<Result<(), Verdict>, DbError> {
        let id = written.id;
        if plan.pending.contains_key(&id) || self.record_if_stored(&id)?.is_some() {
            let statement = built(text, plan.next_position)?;
            return self.plan_built(incoming, plan, batch, at, statement);
        }
        let position = plan.next_position;
        plan.next_position += 1;
        let record = WrittenRecord {
            statement: written.stored_text(text, &plan.stored, &owned.authority, batch.version),
            voided: self.stored_event(plan, &id, position)?,
            position,
            defines: batch.define,
        };
        plan.write(
            keys::record(position),
            Some(crate::packed::pack(&record.to_bytes())),
        );
        let stored = plan.stored.clone();
        self.place(plan, &id, position, &stored)?;
        plan.index_entries
            .push((position, written.terms(&owned.terms)));
        plan.keep(id, Kept::Written(record));
        Ok(Ok(()))
    }

    /// Plans a statement built whole: any statement a straight publisher sent, and those of
    /// the gateway's that [`Written`] does not read.
    fn plan_built(
        &self,
        incoming: &Incoming<'_>,
        plan: &mut Planning,
        batch: &BatchSettings,
        at: Place,
        mut statement: Value,
    ) -> Result<Result<(), Verdict>, DbError> {
        let Place { first, index } = at;
        let id = match statement_id(&statement).and_then(|id| Uuid::parse_str(&id).ok()) {
            Some(id) => id,
            None => {
                let id = generated_id(&plan.stream, incoming.sequence, first + index);
                if let Some(object) = statement.as_object_mut() {
                    object.insert("id".into(), Value::String(id.to_string()));
                }
                id
            }
        };
        // A part before this one in a bundle stored it as a message before would have.
        let existing = match plan.pending.get(&id) {
            Some(kept) => Some(kept.record()?),
            None => self.record_if_stored(&id)?,
        };
        if let Some(existing) = existing {
            if equivalent(&existing.statement, &statement) {
                return Ok(Ok(()));
            }
            return Ok(Err(Verdict::Conflict {
                statement: index,
                id: id.to_string(),
            }));
        }
        let original = batch
            .keep_original
            .then(|| original_stored_and_authority(&statement));
        complete_for_store(
            &mut statement,
            &plan.stored,
            &batch.authority,
            batch.version,
        );
        if let (Some((stored, authority)), Some(object)) = (original, statement.as_object_mut()) {
            if let Some(stored) = stored {
                object.insert("stored".into(), stored);
            }
            if let Some(authority) = authority {
                object.insert("authority".into(), authority);
            }
        }
        let position = plan.next_position;
        plan.next_position += 1;
        let terms = index_terms(&statement);
        let brought: Vec<String> = terms
            .attachments
            .iter()
            .filter(|sha2| {
                batch
                    .bodies
                    .iter()
                    .any(|body| body.eq_ignore_ascii_case(sha2))
            })
            .cloned()
            .collect();
        let mut record = Record {
            statement,
            voided: false,
            position,
            defines: batch.define,
            bodies: brought,
        };
        if let Some(target) = voided_target(&record.statement) {
            let target = Uuid::parse_str(&target).unwrap_or_default();
            let target_record = match plan.pending.get(&target) {
                Some(kept) => Some(kept.record()?),
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
                        plan.write_record(&target_record);
                        plan.events
                            .push(OutboxEvent::At(EventKind::Voided, target_record.position));
                        plan.keep(target, Kept::Built(target_record));
                    }
                }
                None => {
                    plan.write(keys::pending_void(&target), Some(id.as_bytes().to_vec()));
                    plan.wait_for_void(target);
                }
            }
        }
        record.voided = self.stored_event(plan, &id, position)?;
        plan.write_record(&record);
        // An import's own `stored`, else the plan's.
        let stored = record.statement["stored"].as_str().unwrap_or_default();
        self.place(plan, &id, position, stored)?;
        let entries = self.index_entries_with(terms, &record, &plan.pending)?;
        plan.index_entries.extend(entries);
        plan.keep(id, Kept::Built(record));
        Ok(Ok(()))
    }

    /// The `stored` event of a new statement at `position`, and whether it is voided already:
    /// a voiding statement of this message or of one before waited for it.
    fn stored_event(&self, plan: &mut Planning, id: &Uuid, position: u64) -> Result<bool, DbError> {
        plan.events
            .push(OutboxEvent::At(EventKind::Stored, position));
        let voided =
            plan.take_waiting_void(id) || self.tree.contains_key(keys::pending_void(id))?;
        if voided {
            plan.write(keys::pending_void(id), None);
            plan.events
                .push(OutboxEvent::At(EventKind::Voided, position));
        }
        Ok(voided)
    }

    /// A new statement's id, its id key, and the `stored` span of its block.
    fn place(
        &self,
        plan: &mut Planning,
        id: &Uuid,
        position: u64,
        stored: &str,
    ) -> Result<(), DbError> {
        self.note_id(id);
        plan.write(keys::statement(id), Some(position.to_be_bytes().to_vec()));
        let span = keys::Span {
            earliest: stored.to_owned(),
            latest: stored.to_owned(),
            through: position,
        };
        crate::db::widen_span(&self.tree, &mut plan.spans, position, span)
    }

    /// Writes what `plan` decided into the message's `batch`, returning the index work.
    fn finish_plan(
        &self,
        incoming: &Incoming<'_>,
        plan: Planning,
        batch: &mut sled::Batch,
    ) -> IndexJob {
        for (key, value) in plan.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        // Widened in memory first: a query that sees this batch's statements sees their spans.
        self.widen_spans(&plan.spans);
        crate::db::write_spans(batch, &plan.spans);
        batch.insert(keys::META_NEXT_POSITION, &plan.next_position.to_be_bytes());
        batch.insert(keys::META_LAST_STORED, plan.stored.as_bytes());
        if !plan.events.is_empty() {
            // The first message of a run is known by its own sequence.
            let run = incoming.run.filter(|run| *run != incoming.sequence);
            self.push_outbox(
                batch,
                &OutboxItem::Events {
                    sequence: incoming.sequence,
                    events: plan.events,
                    run,
                },
            );
        }
        IndexJob {
            entries: plan.index_entries,
            through: plan.next_position - 1,
        }
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

/// Where a statement is in its message: its batch's first and its own index in the batch.
#[derive(Clone, Copy)]
struct Place {
    first: usize,
    index: usize,
}

/// What the store puts into each statement of a batch, written once for the batch.
struct OwnedByStore {
    /// The authority as JSON text.
    authority: String,
    /// Its related-agent terms ([`crate::written::authority_terms`]).
    terms: Vec<String>,
}

/// A statement of the gateway's built whole. Its text was valid JSON when the message was
/// read; one that does not build (nested deeper than `serde_json` builds) is refused as a
/// statement the store cannot apply.
fn built(text: &str, position: u64) -> Result<Value, DbError> {
    serde_json::from_str(text).map_err(|err| DbError::Corrupt {
        key: keys::record(position),
        reason: format!("a statement of the gateway's does not build: {err}"),
    })
}

/// What a message's statements make, decided part by part (a bundle's parts see the parts
/// before them as stored) and written into the message's batch once all are decided.
struct Planning {
    /// `stored` of every statement of the message.
    stored: String,
    /// The recorded creation of `LRS_IN`, for ids the store generates.
    stream: String,
    next_position: u64,
    /// Statements the message has met so far.
    planned: usize,
    /// Statements of this message, by id, as they will be after the batch.
    pending: HashMap<Uuid, Kept>,
    /// Voids of this message whose target was not found (yet).
    voids_waiting: HashSet<Uuid>,
    events: Vec<OutboxEvent>,
    index_entries: Vec<(u64, IndexTerms)>,
    /// The `stored` spans of the blocks this message's positions fall in, as they will be.
    spans: HashMap<u64, keys::Span>,
    /// Keys to write (or remove, `None`).
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// How to take back what the part being planned did to `pending` and `voids_waiting`.
    undo: Vec<Undo>,
}

enum Undo {
    Kept(Uuid, Option<Kept>),
    WaitedFor(Uuid),
    TookWaiting(Uuid),
}

/// Where a plan stood before a part ([`Planning::mark`]).
struct Mark {
    next_position: u64,
    planned: usize,
    events: usize,
    index_entries: usize,
    writes: usize,
    spans: HashMap<u64, keys::Span>,
}

impl Planning {
    fn mark(&self) -> Mark {
        Mark {
            next_position: self.next_position,
            planned: self.planned,
            events: self.events.len(),
            index_entries: self.index_entries.len(),
            writes: self.writes.len(),
            spans: self.spans.clone(),
        }
    }

    /// Back to `mark`, as if the part since had not been planned.
    fn roll_back(&mut self, mark: Mark) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Kept(id, Some(before)) => {
                    self.pending.insert(id, before);
                }
                Undo::Kept(id, None) => {
                    self.pending.remove(&id);
                }
                Undo::WaitedFor(id) => {
                    self.voids_waiting.remove(&id);
                }
                Undo::TookWaiting(id) => {
                    self.voids_waiting.insert(id);
                }
            }
        }
        self.next_position = mark.next_position;
        self.planned = mark.planned;
        self.events.truncate(mark.events);
        self.index_entries.truncate(mark.index_entries);
        self.writes.truncate(mark.writes);
        self.spans = mark.spans;
    }

    fn keep(&mut self, id: Uuid, record: Kept) {
        let before = self.pending.insert(id, record);
        self.undo.push(Undo::Kept(id, before));
    }

    fn wait_for_void(&mut self, target: Uuid) {
        if self.voids_waiting.insert(target) {
            self.undo.push(Undo::WaitedFor(target));
        }
    }

    fn take_waiting_void(&mut self, id: &Uuid) -> bool {
        let taken = self.voids_waiting.remove(id);
        if taken {
            self.undo.push(Undo::TookWaiting(*id));
        }
        taken
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.push((key, value));
    }

    fn write_record(&mut self, record: &Record) {
        if let Ok(bytes) = serde_json::to_vec(record) {
            self.write(
                keys::record(record.position),
                Some(crate::packed::pack(&bytes)),
            );
        }
    }
}
