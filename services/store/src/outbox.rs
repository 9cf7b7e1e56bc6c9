//! The outbox: messages owed to `LRS_STORED` and `LRS_REJECTED`, written in the same sled
//! batch as the change they report and published after the flush, so a crash cannot lose them.
//!
//! Every message built here fits the NATS server's `max_payload` (the store's message
//! budget): the events of one `LRS_IN` message are split over as many `LRS_STORED` messages
//! as they need, and a rejected message's payload is truncated. Reading is by pages of entries,
//! so a long outbox (an erasure of a million statements) is published through a bounded window.
//!
//! The events of a run of `LRS_IN` messages applied under one flush (each entry names its run)
//! go out together, as one `LRS_STORED` message when they fit: every message written to a
//! stream costs nats-server a synced write, and its removal once consumed a synced tombstone.
//! A run reads the same from the outbox every time, so the message it makes has the same id
//! when published again after a crash, and JetStream drops the copy.

use bus::wire::{EventKind, RejectedMessage, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Db, DbError, StoredRecord};
use crate::keys;

/// An outbox entry. Events name their statements only: the statements are read back when
/// published, which keeps outbox values small (a sled value of ~100 KB becomes a blob file of
/// its own, a cost per message).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum OutboxItem {
    Events {
        sequence: u64,
        events: Vec<OutboxEvent>,
        /// The first sequence of the run these events go out with; absent for the first
        /// message of a run, a message alone, and entries from before runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<u64>,
    },
    Rejected(RejectedMessage),
    /// Erased statements, carried whole: they are gone from the tree, and the projector
    /// needs them to take back what they counted. Each item fits one message.
    Erased {
        sequence: u64,
        chunk: usize,
        statements: Vec<(u64, Value)>,
    },
}

/// One event of an outbox entry: what happened, and to the statement at which position (read
/// back with one lookup; a position is never reused). Entries written before events carried
/// positions name the statement by id, `[kind, "id"]`, and are read by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum OutboxEvent {
    At(EventKind, u64),
    ById(EventKind, Uuid),
}

/// An outbox message ready to publish.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub subject: &'static str,
    /// `Nats-Msg-Id`, so a republish after a crash is dropped by JetStream dedup.
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// One outbox entry, or a run of them: their keys (removed once every message of them is
/// published) and messages.
pub struct OutboxEntry {
    pub keys: Vec<sled::IVec>,
    pub messages: Vec<OutboxMessage>,
}

/// A run of `Events` entries being read: their statements' records, in order.
struct Run {
    tag: u64,
    first: u64,
    last: u64,
    keys: Vec<sled::IVec>,
    records: Vec<(EventKind, Vec<u8>, sled::IVec)>,
}

impl Run {
    fn new(tag: u64, first: u64) -> Run {
        Run {
            tag,
            first,
            last: first,
            keys: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Reads back the statements of one entry's events.
    fn add(
        &mut self,
        db: &Db,
        key: sled::IVec,
        sequence: u64,
        events: Vec<OutboxEvent>,
    ) -> Result<(), DbError> {
        for event in events {
            let (kind, found) = match event {
                OutboxEvent::At(kind, position) => (kind, db.record_bytes_at(position)?),
                OutboxEvent::ById(kind, id) => (kind, db.record_bytes(&id)?),
            };
            // Erased since: its `erased` event follows in a later item.
            if let Some((key, bytes)) = found {
                self.records.push((kind, key, bytes));
            }
        }
        self.last = sequence;
        self.keys.push(key);
        Ok(())
    }

    /// The run's messages: its events as the JSON text their statements were stored as,
    /// never parsed and written again (unless one must be slimmed to fit).
    fn finish(self, budget: usize) -> Result<OutboxEntry, DbError> {
        let mut stored_events = Vec::with_capacity(self.records.len());
        for (kind, key, bytes) in &self.records {
            let record = StoredRecord::read(key, bytes)?;
            stored_events.push(StoredEvent {
                kind: *kind,
                position: record.position,
                statement: record.statement,
            });
        }
        let messages = pack_events(self.last, stored_events, budget)
            .into_iter()
            .enumerate()
            .map(|(part, payload)| OutboxMessage {
                subject: bus::subjects::STORED_EVENTS,
                msg_id: run_id(self.first, self.last, part),
                payload,
            })
            .collect();
        Ok(OutboxEntry {
            keys: self.keys,
            messages,
        })
    }
}

/// The bytes of `{"sequence":N,"events":[...]}` around the events.
const ENVELOPE: usize = 64;

/// What the projector reads of a statement (`../shared/DESIGN.md`, "Projections"). An event
/// whose statement alone would not fit a message carries this instead.
fn slim_for_projection(statement: &Value) -> Value {
    let mut slim = serde_json::Map::new();
    for key in ["id", "actor", "verb", "timestamp", "stored"] {
        if let Some(value) = statement.get(key) {
            slim.insert(key.into(), value.clone());
        }
    }
    if let Some(object) = statement.get("object") {
        let mut kept = serde_json::Map::new();
        for key in ["id", "objectType"] {
            if let Some(value) = object.get(key) {
                kept.insert(key.into(), value.clone());
            }
        }
        slim.insert("object".into(), Value::Object(kept));
    }
    if let Some(result) = statement.get("result") {
        let mut kept = serde_json::Map::new();
        for key in ["duration", "completion", "success"] {
            if let Some(value) = result.get(key) {
                kept.insert(key.into(), value.clone());
            }
        }
        if let Some(scaled) = xapi::json::at(result, &["score", "scaled"]) {
            kept.insert("score".into(), serde_json::json!({ "scaled": scaled }));
        }
        slim.insert("result".into(), Value::Object(kept));
    }
    if let Some(extensions) = xapi::json::at(statement, &["context", "extensions"]) {
        slim.insert(
            "context".into(),
            serde_json::json!({ "extensions": extensions }),
        );
    }
    Value::Object(slim)
}

/// Serialised events, packed into `StoredEvents` payloads of at most `budget` bytes each.
fn pack_events<S: Serialize>(
    sequence: u64,
    events: impl IntoIterator<Item = StoredEvent<S>>,
    budget: usize,
) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut size = ENVELOPE;
    let finish = |current: &mut Vec<Vec<u8>>, payloads: &mut Vec<Vec<u8>>| {
        let mut payload = format!("{{\"sequence\":{sequence},\"events\":[").into_bytes();
        for (index, event) in current.drain(..).enumerate() {
            if index > 0 {
                payload.push(b',');
            }
            payload.extend_from_slice(&event);
        }
        payload.extend_from_slice(b"]}");
        payloads.push(payload);
    };
    for event in events {
        let Some(encoded) = encode_event(&event, budget) else {
            continue;
        };
        if !current.is_empty() && size + encoded.len() + 1 > budget {
            finish(&mut current, &mut payloads);
            size = ENVELOPE;
        }
        size += encoded.len() + 1;
        current.push(encoded);
    }
    if !current.is_empty() {
        finish(&mut current, &mut payloads);
    }
    payloads
}

/// One event as JSON, slimmed to what the projector reads if it would not fit on its own.
fn encode_event<S: Serialize>(event: &StoredEvent<S>, budget: usize) -> Option<Vec<u8>> {
    let encoded = serde_json::to_vec(event).ok()?;
    if encoded.len() + ENVELOPE <= budget {
        return Some(encoded);
    }
    let event = StoredEvent {
        kind: event.kind,
        position: event.position,
        statement: slim_for_projection(&serde_json::to_value(&event.statement).ok()?),
    };
    let slim = serde_json::to_vec(&event).ok()?;
    if slim.len() + ENVELOPE <= budget {
        tracing::warn!(
            bytes = encoded.len(),
            budget,
            "a statement too large for one NATS message went to LRS_STORED slimmed to what the projector reads"
        );
        return Some(slim);
    }
    let id = event
        .statement
        .get("id")
        .and_then(|id| id.as_str())
        .unwrap_or("");
    tracing::error!(
        bytes = slim.len(),
        budget,
        id,
        "an event does not fit one NATS message even slimmed; the projector will not see it (rebuild the summaries after raising max_payload)"
    );
    None
}

/// A rejected message's payload cut to fit `budget` (with what was cut said in the message).
pub(crate) fn fit_rejection(mut rejected: RejectedMessage, budget: usize) -> RejectedMessage {
    let room = budget.saturating_sub(8 * 1024);
    if rejected.payload.len() > room {
        rejected.payload_bytes = Some(rejected.payload.len());
        rejected.payload = xapi::limits::truncate_text(&rejected.payload, room);
        rejected.payload_truncated = true;
    }
    rejected
}

impl Db {
    /// The outbox entries after the key `after` and up to and including the key `through` (no
    /// bound when `None`), as messages that each fit the message budget: about `max_entries`
    /// entries, never ending inside a run (a run is as long as the store made it).
    pub fn outbox_page(
        &self,
        after: Option<&[u8]>,
        through: Option<&[u8]>,
        max_entries: usize,
    ) -> Result<Vec<OutboxEntry>, DbError> {
        let start = match after {
            Some(after) => [after, &[0]].concat(),
            None => vec![keys::OUTBOX],
        };
        let budget = self.message_budget();
        let mut entries = Vec::new();
        let mut open: Option<Run> = None;
        for (read, item) in self.tree().range(start..).enumerate() {
            let (key, value) = item?;
            if key.first() != Some(&keys::OUTBOX)
                || through.is_some_and(|through| key.as_ref() > through)
            {
                break;
            }
            let corrupt = |reason: String| DbError::Corrupt {
                key: key.to_vec(),
                reason,
            };
            let item: OutboxItem =
                serde_json::from_slice(&value).map_err(|err| corrupt(err.to_string()))?;
            let tag = match &item {
                OutboxItem::Events { sequence, run, .. } => Some(run.unwrap_or(*sequence)),
                _ => None,
            };
            let continues = open.as_ref().is_some_and(|run| Some(run.tag) == tag);
            if !continues {
                if let Some(run) = open.take() {
                    entries.push(run.finish(budget)?);
                }
                if read >= max_entries {
                    break;
                }
            }
            match item {
                OutboxItem::Events {
                    sequence, events, ..
                } => {
                    let run =
                        open.get_or_insert_with(|| Run::new(tag.unwrap_or(sequence), sequence));
                    run.add(self, key.clone(), sequence, events)
                        .map_err(|err| corrupt(err.to_string()))?;
                }
                OutboxItem::Rejected(rejected) => {
                    let message = rejected_message(rejected, budget)
                        .map_err(|err| corrupt(err.to_string()))?;
                    entries.push(OutboxEntry {
                        keys: vec![key],
                        messages: vec![message],
                    });
                }
                OutboxItem::Erased {
                    sequence,
                    chunk,
                    statements,
                } => entries.push(OutboxEntry {
                    keys: vec![key],
                    messages: erased_messages(sequence, chunk, statements, budget),
                }),
            }
        }
        if let Some(run) = open {
            entries.push(run.finish(budget)?);
        }
        Ok(entries)
    }

    /// Every outbox entry's messages, in order (tests and small outboxes).
    pub fn outbox(
        &self,
        through: Option<&[u8]>,
    ) -> Result<Vec<(sled::IVec, OutboxMessage)>, DbError> {
        let mut all = Vec::new();
        let mut after: Option<sled::IVec> = None;
        loop {
            let page = self.outbox_page(after.as_deref(), through, 64)?;
            let Some(last) = page.last().and_then(|entry| entry.keys.last()) else {
                return Ok(all);
            };
            after = Some(last.clone());
            for entry in page {
                let Some(key) = entry.keys.last() else {
                    continue;
                };
                all.extend(
                    entry
                        .messages
                        .into_iter()
                        .map(|message| (key.clone(), message)),
                );
            }
        }
    }

    pub fn remove_outbox(&self, published: &[sled::IVec]) -> Result<(), DbError> {
        let mut batch = sled::Batch::default();
        for key in published {
            batch.remove(key);
        }
        self.tree().apply_batch(batch)?;
        Ok(())
    }

    /// The key of the newest outbox entry, if any.
    pub fn last_outbox_key(&self) -> Result<Option<sled::IVec>, DbError> {
        Ok(self
            .tree()
            .scan_prefix([keys::OUTBOX])
            .keys()
            .next_back()
            .transpose()?)
    }

    pub(crate) fn push_outbox(&self, batch: &mut sled::Batch, entry: &OutboxItem) {
        // sled's id generator is monotonic across restarts: outbox keys keep event order.
        let order = self.tree().generate_id().unwrap_or(u64::MAX);
        let entry = match entry {
            OutboxItem::Rejected(rejected) => {
                &OutboxItem::Rejected(fit_rejection(rejected.clone(), self.message_budget()))
            }
            other => other,
        };
        if let Ok(bytes) = serde_json::to_vec(entry) {
            batch.insert(keys::outbox(order), bytes);
        }
    }
}

/// A rejected message on `LRS_REJECTED`, its payload cut to fit.
fn rejected_message(
    rejected: RejectedMessage,
    budget: usize,
) -> Result<OutboxMessage, serde_json::Error> {
    let sequence = rejected.sequence;
    Ok(OutboxMessage {
        subject: bus::subjects::REJECTED,
        msg_id: format!("rejected-{sequence}"),
        payload: serde_json::to_vec(&fit_rejection(rejected, budget))?,
    })
}

/// A chunk of erased statements as `erased` events. Written to fit; a smaller budget since
/// (max_payload lowered) splits it.
fn erased_messages(
    sequence: u64,
    chunk: usize,
    statements: Vec<(u64, Value)>,
    budget: usize,
) -> Vec<OutboxMessage> {
    let events = statements
        .into_iter()
        .map(|(position, statement)| StoredEvent {
            kind: EventKind::Erased,
            position,
            statement,
        });
    pack_events(sequence, events, budget)
        .into_iter()
        .enumerate()
        .map(|(part, payload)| OutboxMessage {
            subject: bus::subjects::STORED_EVENTS,
            msg_id: erased_id(sequence, chunk, part),
            payload,
        })
        .collect()
}

/// `events-7` for the events of sequence 7, `events-7..9` for those of the run from 7 to 9.
fn run_id(first: u64, last: u64, part: usize) -> String {
    let id = if first == last {
        format!("events-{first}")
    } else {
        format!("events-{first}..{last}")
    };
    with_part(id, part)
}

/// `erased-7-0` for an erasure's first chunk.
fn erased_id(sequence: u64, chunk: usize, part: usize) -> String {
    with_part(format!("erased-{sequence}-{chunk}"), part)
}

/// `-p1`, `-p2`... after an id for the second and later messages of what needed more than
/// one; the first keeps the id an unsplit message always had.
fn with_part(mut id: String, part: usize) -> String {
    if part > 0 {
        id.push_str(&format!("-p{part}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::wire::StoredEvents;
    use serde_json::json;

    fn event(n: usize, padding: usize) -> StoredEvent {
        StoredEvent {
            kind: EventKind::Stored,
            position: n as u64,
            statement: json!({"id": format!("id-{n}"), "actor": {"mbox": "mailto:a@example.org"},
                "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                "object": {"id": "https://x.example/1", "definition": {"name": {"en": "x".repeat(padding)}}}}),
        }
    }

    #[test]
    fn events_are_split_to_fit_the_budget_and_keep_their_order() {
        let events: Vec<StoredEvent> = (0..1000).map(|n| event(n, 100)).collect();
        let payloads = pack_events(9, events, 20_000);
        assert!(payloads.len() > 5, "{} payloads", payloads.len());
        let mut positions = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= 20_000, "{}", payload.len());
            let decoded: StoredEvents = serde_json::from_slice(payload).expect("valid json");
            assert_eq!(decoded.sequence, 9);
            positions.extend(decoded.events.iter().map(|event| event.position));
        }
        assert_eq!(positions, (0..1000).collect::<Vec<u64>>());
    }

    #[test]
    fn an_event_too_large_alone_goes_slimmed() {
        let payloads = pack_events(1, vec![event(1, 50_000)], 20_000);
        assert_eq!(payloads.len(), 1);
        let decoded: StoredEvents = serde_json::from_slice(&payloads[0]).expect("json");
        let statement = &decoded.events[0].statement;
        assert_eq!(statement["object"], json!({"id": "https://x.example/1"}));
        assert_eq!(statement["actor"]["mbox"], "mailto:a@example.org");
    }

    #[test]
    fn a_statement_goes_out_as_the_text_it_was_stored_as() {
        let text = |padding| serde_json::to_string(&event(1, padding).statement).expect("json");
        let raw = |text: &str| {
            let record = format!(r#"{{"statement":{text},"voided":false,"position":7}}"#);
            let record = StoredRecord::read(b"k", record.as_bytes()).expect("a record");
            pack_events(
                3,
                [StoredEvent {
                    kind: EventKind::Voided,
                    position: record.position,
                    statement: record.statement,
                }],
                20_000,
            )
        };
        // Not as serde_json writes it (keys out of order, spaces, `1.0`): a parse and rewrite
        // would change it.
        let small = r#"{"verb": {"id": "http://adlnet.gov/expapi/verbs/attended"}, "actor": {"mbox": "mailto:a@example.org"}, "object": {"id": "https://x.example/1"}, "result": {"score": {"scaled": 1.0}}}"#;
        let payloads = raw(small);
        assert_eq!(
            String::from_utf8_lossy(&payloads[0]),
            format!(
                r#"{{"sequence":3,"events":[{{"kind":"voided","position":7,"statement":{small}}}]}}"#
            )
        );
        // Too large for a message: parsed after all, and slimmed like any other event.
        let payloads = raw(&text(50_000));
        let decoded: StoredEvents = serde_json::from_slice(&payloads[0]).expect("json");
        assert_eq!(decoded.events[0].position, 7);
        assert_eq!(decoded.events[0].kind, EventKind::Voided);
        assert_eq!(
            decoded.events[0].statement["object"],
            json!({"id": "https://x.example/1"})
        );
    }

    #[test]
    fn rejected_payloads_are_truncated_to_fit() {
        let rejected = RejectedMessage {
            subject: "lrs.in.hub.x".into(),
            sequence: 1,
            rejection: bus::wire::Rejection {
                statement: None,
                path: String::new(),
                rule: "r".into(),
                message: "m".into(),
            },
            payload: "é".repeat(100_000),
            payload_bytes: None,
            payload_truncated: false,
        };
        let fitted = fit_rejection(rejected, 50_000);
        assert!(fitted.payload_truncated);
        assert_eq!(fitted.payload_bytes, Some(200_000));
        assert!(serde_json::to_vec(&fitted).expect("json").len() <= 50_000);
    }
}
