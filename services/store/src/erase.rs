//! The right to erasure: removing everything the store holds about one person, and exporting
//! it first.
//!
//! An erasure is an `LRS_IN` message ([`bus::subjects::IN_ERASE`]), so the store's one writer
//! applies it between two statement messages, exactly once, as one sled batch with the
//! applied sequence: the person's statements (as actor, object, in context or authority,
//! also inside groups and sub-statements; voided ones too), every index entry under their
//! identifier or pointing at an erased statement, their State and Agent Profile documents,
//! and an `erased` event per statement for the projector, which takes back what each counted.
//! The audit entry says how much went and why, never whom.

use bus::access::{EraseCommand, ExportedDocument};
use bus::wire::{DocumentKind, Rejection, Verdict};
use serde_json::{json, Value};
use uuid::Uuid;
use xapi::agent::ifi_key;
use xapi::statement::{index_terms, voided_target};

use crate::access::Access;
use crate::db::{Db, DbError, OutboxItem, Record};
use crate::documents::Documents;
use crate::keys::{self, IndexKind};

/// Erased statements per `LRS_STORED` message, to stay well under the NATS payload limit.
const ERASED_PER_MESSAGE: usize = 100;

/// Whether a statement itself (not a statement it references) names the person.
fn names(statement: &Value, person: &str) -> bool {
    index_terms(statement)
        .related_agents
        .iter()
        .any(|agent| agent == person)
}

fn refused(rule: &str, message: String) -> Verdict {
    Verdict::Rejected(Rejection {
        statement: None,
        path: "/agent".into(),
        rule: rule.into(),
        message,
    })
}

impl Db {
    /// The positions indexed under a person's identifier after `after`, with their index
    /// keys, in order.
    fn indexed_under(
        &self,
        person: &str,
        after: Option<u64>,
    ) -> Result<Vec<(sled::IVec, u64)>, DbError> {
        let prefix = keys::index_prefix(IndexKind::RelatedAgent, person);
        let start = keys::index(
            IndexKind::RelatedAgent,
            person,
            after.map_or(0, |after| after.saturating_add(1)),
        );
        let mut found = Vec::new();
        for item in self.tree().range(start..).take_while(|item| {
            item.as_ref()
                .map_or(true, |(key, _)| key.starts_with(&prefix))
        }) {
            let (key, _) = item?;
            if let Some(position) = keys::trailing_u64(&key) {
                found.push((key, position));
            }
        }
        Ok(found)
    }

    /// Applies an erasure command (see the module docs).
    pub(crate) fn erase(&self, sequence: u64, payload: &[u8]) -> Result<Verdict, DbError> {
        let verdict = match serde_json::from_slice::<EraseCommand>(payload) {
            Err(err) => refused("erase.command", format!("not an erasure command: {err}")),
            Ok(command) => match ifi_key(&command.agent) {
                None => refused(
                    "erase.agent",
                    "the agent to erase needs an identifier (mbox, mbox_sha1sum, openid or account)"
                        .into(),
                ),
                Some(person) => return self.erase_person(sequence, &command, &person),
            },
        };
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        batch.insert(
            keys::verdict(sequence),
            serde_json::to_vec(&verdict).unwrap_or_default(),
        );
        self.tree().apply_batch(batch)?;
        Ok(verdict)
    }

    fn erase_person(
        &self,
        sequence: u64,
        command: &EraseCommand,
        person: &str,
    ) -> Result<Verdict, DbError> {
        // Every index entry must exist before it can be removed.
        self.wait_for_indexes()?;
        let mut batch = sled::Batch::default();
        self.mark_applied(&mut batch, sequence)?;
        let mut erased: Vec<(u64, Value)> = Vec::new();
        for (key, position) in self.indexed_under(person, None)? {
            // Also the entries of statements that only reference one of theirs.
            batch.remove(key);
            let Some(record) = self.record_at(position)? else {
                continue;
            };
            if names(&record.statement, person) {
                self.remove_record(&mut batch, &record)?;
                erased.push((position, record.statement));
            }
        }
        let orphans = self.orphaned_attachments(&erased)?;
        for sha2 in &orphans {
            batch.insert(keys::orphan(sha2), &[] as &[u8]);
        }
        let documents = Documents { tree: self.tree() }.erase_agent(person, &mut batch)?;
        for (chunk, statements) in erased.chunks(ERASED_PER_MESSAGE).enumerate() {
            self.push_outbox(
                &mut batch,
                &OutboxItem::Erased {
                    sequence,
                    chunk,
                    statements: statements.to_vec(),
                },
            );
        }
        let verdict = Verdict::Erased {
            statements: erased.len(),
            documents,
        };
        Access { tree: self.tree() }.audit_into(
            &mut batch,
            &command.actor,
            "agent.erase",
            json!({
                "statements": erased.len(),
                "documents": documents,
                "attachments": orphans.len(),
                "reason": command.reason,
                "lrs_in_sequence": sequence,
            }),
        )?;
        batch.insert(
            keys::verdict(sequence),
            serde_json::to_vec(&verdict).unwrap_or_default(),
        );
        self.tree().apply_batch(batch)?;
        tracing::info!(
            statements = erased.len(),
            documents,
            "erased one person's data"
        );
        Ok(verdict)
    }

    /// The attachment bodies (SHA-2) of the erased statements that no other statement uses.
    fn orphaned_attachments(&self, erased: &[(u64, Value)]) -> Result<Vec<String>, DbError> {
        let gone: std::collections::HashSet<u64> =
            erased.iter().map(|(position, _)| *position).collect();
        let mut used: Vec<String> = erased
            .iter()
            .flat_map(|(_, statement)| index_terms(statement).attachments)
            .collect();
        used.sort();
        used.dedup();
        let mut orphans = Vec::new();
        for sha2 in used {
            let mut still_used = false;
            for item in self
                .tree()
                .scan_prefix(keys::index_prefix(IndexKind::Attachment, &sha2))
            {
                let (key, _) = item?;
                let Some(position) = keys::trailing_u64(&key) else {
                    continue;
                };
                // Index keys are hashes: check the statement itself.
                let uses = !gone.contains(&position)
                    && self.record_at(position)?.is_some_and(|record| {
                        index_terms(&record.statement).attachments.contains(&sha2)
                    });
                if uses {
                    still_used = true;
                    break;
                }
            }
            if !still_used {
                orphans.push(sha2);
            }
        }
        Ok(orphans)
    }

    /// Attachment bodies waiting to be deleted from the bucket (see [`keys::ORPHAN`]).
    pub fn orphans(&self) -> Result<Vec<String>, DbError> {
        let mut found = Vec::new();
        for item in self.tree().scan_prefix([keys::ORPHAN]) {
            let (key, _) = item?;
            found.push(String::from_utf8_lossy(&key[1..]).into_owned());
        }
        Ok(found)
    }

    pub fn forget_orphan(&self, sha2: &str) -> Result<(), DbError> {
        self.tree().remove(keys::orphan(sha2))?;
        Ok(())
    }

    /// Removes a statement, its position, every index entry it has, and a void of it that
    /// is still waiting for its target.
    fn remove_record(&self, batch: &mut sled::Batch, record: &Record) -> Result<(), DbError> {
        let id = record
            .statement
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_default();
        batch.remove(keys::statement(&id));
        batch.remove(keys::position(record.position));
        for (position, terms) in self.index_entries(record, &Default::default())? {
            for key in crate::indexer::entry_keys(&terms, position) {
                batch.remove(key);
            }
        }
        if let Some(target) =
            voided_target(&record.statement).and_then(|target| Uuid::parse_str(&target).ok())
        {
            let waiting = keys::pending_void(&target);
            if self.tree().get(&waiting)?.as_deref() == Some(id.as_bytes().as_slice()) {
                batch.remove(waiting);
            }
        }
        Ok(())
    }

    /// One page of the statements that name a person (voided ones included), oldest first,
    /// after the position `after`.
    pub fn export_statements(
        &self,
        person: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<u64>), DbError> {
        self.wait_for_indexes()?;
        let limit = limit.clamp(1, 500);
        let mut statements = Vec::new();
        let mut last = None;
        for (_, position) in self.indexed_under(person, after)? {
            let Some(record) = self.record_at(position)? else {
                continue;
            };
            if !names(&record.statement, person) {
                continue;
            }
            if statements.len() == limit {
                return Ok((statements, last));
            }
            last = Some(position);
            statements.push(json!({"voided": record.voided, "statement": record.statement}));
        }
        Ok((statements, None))
    }
}

impl Documents<'_> {
    /// The person's State and Agent Profile documents (key, resource, stored value) in key
    /// order, after the key `after` if given. One pass over the documents.
    fn of_agent<'a>(
        &'a self,
        person: &'a str,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(sled::IVec, DocumentKind, sled::IVec), DbError>> + 'a {
        let start = match after {
            // The smallest key after `after`.
            Some(after) => [after, &[0]].concat(),
            None => crate::documents::PREFIX.to_vec(),
        };
        self.tree
            .range(start..)
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| key.starts_with(crate::documents::PREFIX))
            })
            .filter_map(move |item| {
                let found = (|| {
                    let (key, value) = item?;
                    let Some(kind) = crate::documents::kind_of(&key) else {
                        return Ok(None);
                    };
                    if kind == DocumentKind::ActivityProfile {
                        return Ok(None);
                    }
                    let meta = crate::documents::meta_of(&key, &value)?.unwrap_or_default();
                    let scope = meta["scope"].as_str().unwrap_or("");
                    Ok((scope.split('\n').nth(1) == Some(person)).then_some((key, kind, value)))
                })();
                found.transpose()
            })
    }

    /// Adds the removal of every document of the person to `batch`; returns how many.
    pub fn erase_agent(&self, person: &str, batch: &mut sled::Batch) -> Result<usize, DbError> {
        let mut count = 0;
        for document in self.of_agent(person, None) {
            let (key, _, _) = document?;
            batch.remove(key);
            count += 1;
        }
        Ok(count)
    }

    /// The person's next document after the key `after` (hex), for an export, with its key
    /// (hex) as the cursor for the one after it.
    pub fn export(
        &self,
        person: &str,
        after: Option<&str>,
    ) -> Result<Option<(ExportedDocument, String)>, DbError> {
        let after = after.map(hex_decode);
        let Some(found) = self.of_agent(person, after.as_deref()).next() else {
            return Ok(None);
        };
        let (key, kind, value) = found?;
        let (meta, body): (Value, &[u8]) =
            bus::wire::unframe(&value).map_err(|reason| DbError::Corrupt {
                key: key.to_vec(),
                reason,
            })?;
        let scope: Vec<String> = meta["scope"]
            .as_str()
            .unwrap_or("")
            .split('\n')
            .map(str::to_owned)
            .collect();
        let non_empty = |index: usize| scope.get(index).filter(|part| !part.is_empty()).cloned();
        let text = std::str::from_utf8(body).ok().map(str::to_owned);
        let base64 = match text {
            Some(_) => None,
            None => Some(base64_encode(body)),
        };
        let document = ExportedDocument {
            resource: match kind {
                DocumentKind::State => "state",
                _ => "agent_profile",
            }
            .into(),
            activity_id: non_empty(0),
            registration: non_empty(2),
            id: meta["id"].as_str().unwrap_or("").to_owned(),
            content_type: meta["content_type"].as_str().unwrap_or("").to_owned(),
            updated: meta["updated"].as_str().unwrap_or("").to_owned(),
            text,
            base64,
        };
        Ok(Some((document, hex_encode(&key))))
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A cursor that is not hex decodes to nothing, which starts the export from the beginning
/// of what follows it: harmless, the cursor only comes from a previous reply.
fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|index| u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok())
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Incoming;
    use crate::ingest;
    use bus::wire::{EventKind, StoredEvents};
    use xapi::Validator;

    const ERASE: &[u8] = br#"{"agent": {"mbox": "mailto:ann@example.org"}, "actor": "cli:test", "reason": "ticket 1"}"#;

    fn apply(
        db: &Db,
        validator: &Validator,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> Verdict {
        let incoming = Incoming {
            sequence,
            subject,
            payload,
        };
        let parsed = ingest::parse(subject, payload, None);
        db.apply(&incoming, parsed, validator).expect("apply")
    }

    fn stored_events(db: &Db) -> Vec<(EventKind, String)> {
        db.outbox(None)
            .expect("outbox")
            .into_iter()
            .filter(|(_, message)| message.subject == bus::subjects::STORED_EVENTS)
            .flat_map(|(_, message)| {
                let events: StoredEvents =
                    serde_json::from_slice(&message.payload).expect("events");
                events.events.into_iter().map(|event| {
                    (
                        event.kind,
                        event.statement["id"].as_str().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn an_erasure_removes_a_waiting_void_and_reports_statements_still_in_the_outbox() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        let db = Db::open(dir.path()).expect("open");
        let target = "6f0d7c3e-8a53-4a57-9d37-2c1a2b3c4d5e";
        let by_ann = r#"{"id": "11111111-1111-4111-8111-111111111111", "actor": {"mbox": "mailto:ann@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"}, "object": {"id": "https://x.example/1"}}"#;
        let ann_voids_later = format!(
            r#"{{"id": "22222222-2222-4222-8222-222222222222", "actor": {{"mbox": "mailto:ann@example.org"}},
            "verb": {{"id": "http://adlnet.gov/expapi/verbs/voided"}}, "object": {{"objectType": "StatementRef", "id": "{target}"}}}}"#
        );
        let by_bob = format!(
            r#"{{"id": "{target}", "actor": {{"mbox": "mailto:bob@example.org"}},
            "verb": {{"id": "http://adlnet.gov/expapi/verbs/attended"}}, "object": {{"id": "https://x.example/2"}}}}"#
        );
        assert_eq!(
            apply(&db, &validator, 1, "lrs.in.tool.t", by_ann.as_bytes()),
            Verdict::Applied
        );
        assert_eq!(
            apply(
                &db,
                &validator,
                2,
                "lrs.in.tool.t",
                ann_voids_later.as_bytes()
            ),
            Verdict::Applied
        );
        let erased = Verdict::Erased {
            statements: 2,
            documents: 0,
        };
        assert_eq!(
            apply(&db, &validator, 3, bus::subjects::IN_ERASE, ERASE),
            erased
        );
        assert_eq!(
            apply(&db, &validator, 3, bus::subjects::IN_ERASE, ERASE),
            erased,
            "a redelivered erasure is applied once"
        );
        // The void Ann sent is gone, so Bob's statement is not voided when it arrives.
        assert_eq!(
            apply(&db, &validator, 4, "lrs.in.tool.t", by_bob.as_bytes()),
            Verdict::Applied
        );
        let bob = db
            .record(&Uuid::parse_str(target).expect("uuid"))
            .expect("read")
            .expect("stored");
        assert!(!bob.voided);
        // Ann's statements were never published: their `stored` events are dropped, and the
        // erasure reports them (the projector ignores an erasure of what it never counted).
        let events = stored_events(&db);
        assert!(events.contains(&(
            EventKind::Erased,
            "11111111-1111-4111-8111-111111111111".into()
        )));
        assert!(!events.contains(&(
            EventKind::Stored,
            "11111111-1111-4111-8111-111111111111".into()
        )));
        assert!(events.contains(&(EventKind::Stored, target.into())));
        assert!(!events.iter().any(|(kind, _)| *kind == EventKind::Voided));
        // The audit entry counts, without the person.
        let audit = crate::access::Access { tree: db.tree() }
            .audit(None, 10)
            .expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].details["statements"], 2);
        assert!(!audit[0].details.to_string().contains("ann"));
    }

    #[test]
    fn an_export_pages_through_every_statement_naming_the_person_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        let db = Db::open(dir.path()).expect("open");
        for sequence in 1..=5u64 {
            let actor = if sequence == 3 { "bob" } else { "ann" };
            let statement = format!(
                r#"{{"actor": {{"mbox": "mailto:{actor}@example.org"}}, "verb": {{"id": "http://adlnet.gov/expapi/verbs/attended"}}, "object": {{"id": "https://x.example/{sequence}"}}}}"#
            );
            apply(
                &db,
                &validator,
                sequence,
                "lrs.in.tool.t",
                statement.as_bytes(),
            );
        }
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (page, next) = db
                .export_statements("mbox:mailto:ann@example.org", after, 2)
                .expect("export");
            pages += 1;
            seen.extend(
                page.iter()
                    .map(|entry| entry["statement"]["object"]["id"].clone()),
            );
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<Value> = [1, 2, 4, 5]
            .iter()
            .map(|n| json!(format!("https://x.example/{n}")))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(pages, 2);
    }

    #[test]
    fn an_erasure_without_an_identifier_is_refused_and_erases_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let validator = Validator::new().expect("schemas");
        let db = Db::open(dir.path()).expect("open");
        let verdict = apply(
            &db,
            &validator,
            1,
            bus::subjects::IN_ERASE,
            br#"{"agent": {"name": "Ann"}, "actor": "cli:test"}"#,
        );
        assert!(
            matches!(verdict, Verdict::Rejected(ref rejection) if rejection.rule == "erase.agent")
        );
        let verdict = apply(&db, &validator, 2, bus::subjects::IN_ERASE, b"not json");
        assert!(
            matches!(verdict, Verdict::Rejected(ref rejection) if rejection.rule == "erase.command")
        );
        assert_eq!(db.applied_sequence().expect("meta"), 2);
    }
}
