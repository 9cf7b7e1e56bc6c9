//! The right to erasure: removing everything the store holds about one person (the export
//! before it is [`crate::export`]).
//!
//! An erasure is an `LRS_IN` message ([`bus::subjects::IN_ERASE`]), so the store's one writer
//! applies it between two statement messages, exactly once, as one sled batch with the
//! applied sequence: the person's statements (as actor, object, in context or authority,
//! also inside groups and sub-statements; voided ones too), every index entry under their
//! identifier or pointing at an erased statement, their State and Agent Profile documents,
//! and an `erased` event per statement for the projector, which takes back what each counted.
//! The audit entry says how much went and why, never whom.

use bus::access::EraseCommand;
use bus::wire::{Rejection, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;
use xapi::agent::ifi_key;
use xapi::statement::{index_terms, voided_target};

use crate::access::Access;
use crate::db::{Db, DbError, Record};
use crate::indexer::{Change, PostingChanges};
use crate::keys::{self, IndexKind};
use crate::outbox::OutboxItem;

/// Index entries examined per sled batch of an erasure.
const ERASE_CHUNK: usize = 1000;

/// What replaces a quote of an erased person.
const REDACTED: &str = "(removed by an erasure)";

/// Progress of an erasure that takes several batches.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Erasing {
    sequence: u64,
    statements: usize,
    attachments: usize,
    /// `LRS_STORED` chunks written so far (their message ids go on from here).
    chunks: usize,
    /// The last position examined: the next chunk starts after it. (Scanning from the
    /// prefix's start each time would walk past every entry already removed, which sled
    /// keeps as empty leaves: quadratic in the person's statements.)
    #[serde(default)]
    after: Option<u64>,
}

/// The texts by which a message could name the person: the identifier's value (the address
/// without `mailto:`, the hash, the OpenID, the account name), as a quote would show it.
pub fn identifying_texts(person: &str) -> Vec<String> {
    let Some((kind, value)) = person.split_once(':') else {
        return vec![person.to_owned()];
    };
    let mut texts = vec![value.to_owned()];
    match kind {
        "mbox" => {
            if let Some(address) = value.strip_prefix("mailto:") {
                texts.push(address.to_owned());
            }
        }
        "account" => {
            if let Some((_, name)) = value.rsplit_once('|') {
                texts.push(name.to_owned());
            }
        }
        _ => {}
    }
    // A very short account name would match everywhere; the full identifier still counts.
    texts.retain(|text| text.chars().count() >= 3);
    texts
}

/// Erased statements in groups whose `LRS_STORED` message fits `budget`.
fn chunks_within(erased: Vec<(u64, Value)>, budget: usize) -> Vec<Vec<(u64, Value)>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 128;
    for (position, statement) in erased {
        let bytes = statement.to_string().len() + 64;
        if !current.is_empty() && size + bytes > budget {
            chunks.push(std::mem::take(&mut current));
            size = 128;
        }
        size += bytes;
        current.push((position, statement));
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Whether a statement itself (not a statement it references) names the person.
pub(crate) fn names(statement: &Value, person: &str) -> bool {
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
    /// The positions indexed under a person's identifier after `after`, in order, lazily.
    pub(crate) fn indexed_under<'a>(
        &'a self,
        person: &str,
        after: Option<u64>,
    ) -> impl Iterator<Item = Result<u64, DbError>> + 'a {
        let from = after.map_or(0, |after| after.saturating_add(1));
        crate::query::indexed(self, IndexKind::RelatedAgent, person, from)
    }

    /// Applies an erasure command (see the module docs).
    pub(crate) fn erase(
        &self,
        sequence: u64,
        command: &EraseCommand,
        time: &str,
    ) -> Result<Verdict, DbError> {
        let verdict = match ifi_key(&command.agent) {
            None => refused(
                "erase.agent",
                "the agent to erase needs an identifier (mbox, mbox_sha1sum, openid or account)"
                    .into(),
            ),
            Some(person) => return self.erase_person(sequence, command, &person, time),
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

    /// Erases one person's statements a chunk at a time, each chunk its own sled batch, so an
    /// erasure of a million statements stays bounded in memory and in the size of what it
    /// publishes. The message counts as applied only with the last chunk: a crash in between
    /// brings it back, and the erasure goes on where it stopped (its counts are kept under
    /// [`keys::META_ERASING`]).
    fn erase_person(
        &self,
        sequence: u64,
        command: &EraseCommand,
        person: &str,
        time: &str,
    ) -> Result<Verdict, DbError> {
        // Every index entry must exist before it can be removed, and the index thread must be
        // idle: postings are read, changed and written back below (no job comes while this
        // thread erases, as only this thread submits them).
        self.wait_for_indexes()?;
        self.indexer.postings_changed_elsewhere();
        let mut progress = self.erasing(sequence)?;
        loop {
            let mut batch = sled::Batch::default();
            let mut erased: Vec<(u64, Value)> = Vec::new();
            let mut examined = 0;
            let mut unindexed = PostingChanges::default();
            for position in self.indexed_under(person, progress.after) {
                let position = position?;
                progress.after = Some(position);
                // Also the entries of statements that only reference one of theirs.
                unindexed.add(IndexKind::RelatedAgent, person, position);
                examined += 1;
                if let Some(record) = self.record_at(position)? {
                    if names(&record.statement, person) {
                        self.remove_record(&mut batch, &mut unindexed, &record)?;
                        erased.push((position, record.statement));
                    }
                }
                if examined == ERASE_CHUNK {
                    break;
                }
            }
            // Read-modify-write: no index job runs meanwhile (see above and the indexer).
            unindexed.merge_into(self.tree(), Change::Remove, &mut batch)?;
            let orphans = self.orphaned_attachments(&erased)?;
            for sha2 in &orphans {
                batch.insert(keys::orphan(sha2), &[] as &[u8]);
            }
            progress.statements += erased.len();
            progress.attachments += orphans.len();
            for statements in chunks_within(erased, self.message_budget()) {
                self.push_outbox(
                    &mut batch,
                    &OutboxItem::Erased {
                        sequence,
                        chunk: progress.chunks,
                        statements,
                    },
                );
                progress.chunks += 1;
            }
            if examined == ERASE_CHUNK {
                batch.insert(
                    keys::META_ERASING,
                    serde_json::to_vec(&progress).unwrap_or_default(),
                );
                // Not flushed here (the next flush writes it, or sled once its buffer is full;
                // a flush per chunk cost 10% and saved no memory): a crash resumes from the
                // last chunk on disk, and the message counts as applied only with the last
                // chunk.
                self.tree().apply_batch(batch)?;
                continue;
            }
            // The last chunk: documents, leftovers, the audit entry, and the message applied.
            let documents = self.documents().erase_agent(person, &mut batch)?;
            let redacted = self.redact_verdicts(person, &mut batch)?;
            batch.remove(keys::META_ERASING);
            self.mark_applied(&mut batch, sequence)?;
            let verdict = Verdict::Erased {
                statements: progress.statements,
                documents,
            };
            Access { tree: self.tree() }.audit_into(
                &mut batch,
                time,
                &command.actor,
                "agent.erase",
                json!({
                    "statements": progress.statements,
                    "documents": documents,
                    "attachments": progress.attachments,
                    "verdicts_redacted": redacted,
                    "reason": command.reason,
                    "lrs_in_sequence": sequence,
                }),
            )?;
            batch.insert(
                keys::verdict(sequence),
                serde_json::to_vec(&verdict).unwrap_or_default(),
            );
            batch.insert(
                keys::rejected_scrub(sequence),
                serde_json::to_vec(&identifying_texts(person)).unwrap_or_default(),
            );
            self.tree().apply_batch(batch)?;
            tracing::info!(
                statements = progress.statements,
                documents,
                "erased one person's data"
            );
            return Ok(verdict);
        }
    }

    /// The counts of an erasure under way for this sequence (zero when none is).
    fn erasing(&self, sequence: u64) -> Result<Erasing, DbError> {
        let found: Option<Erasing> = self
            .tree()
            .get(keys::META_ERASING)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok(found
            .filter(|erasing| erasing.sequence == sequence)
            .unwrap_or(Erasing {
                sequence,
                ..Erasing::default()
            }))
    }

    /// Verdicts kept for the gateways, and rejections still in the outbox, that quote the
    /// person (schema messages quote values) are rewritten without the quote. Returns how many.
    fn redact_verdicts(&self, person: &str, batch: &mut sled::Batch) -> Result<usize, DbError> {
        let texts = identifying_texts(person);
        let quotes = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            texts.iter().any(|found| text.contains(found.as_str()))
        };
        let mut redacted = 0;
        for item in self.tree().scan_prefix([keys::VERDICT]) {
            let (key, value) = item?;
            if !quotes(&value) {
                continue;
            }
            let verdict = match serde_json::from_slice::<Verdict>(&value) {
                Ok(Verdict::Rejected(rejection)) => Verdict::Rejected(Rejection {
                    path: String::new(),
                    message: REDACTED.into(),
                    ..rejection
                }),
                Ok(Verdict::Conflict { statement, .. }) => Verdict::Conflict {
                    statement,
                    id: REDACTED.into(),
                },
                _ => Verdict::Rejected(Rejection {
                    statement: None,
                    path: String::new(),
                    rule: "erased".into(),
                    message: REDACTED.into(),
                }),
            };
            batch.insert(key, serde_json::to_vec(&verdict).unwrap_or_default());
            redacted += 1;
        }
        for item in self.tree().scan_prefix([keys::OUTBOX]) {
            let (key, value) = item?;
            // Only rejections: events (this erasure's own among them, a gigabyte for a
            // million statements) are not read at all.
            if !value.starts_with(br#"{"Rejected""#) || !quotes(&value) {
                continue;
            }
            if let Ok(OutboxItem::Rejected(mut rejected)) = serde_json::from_slice(&value) {
                rejected.payload = REDACTED.into();
                rejected.rejection.message = REDACTED.into();
                rejected.rejection.path = String::new();
                let item = OutboxItem::Rejected(rejected);
                batch.insert(key, serde_json::to_vec(&item).unwrap_or_default());
                redacted += 1;
            }
        }
        Ok(redacted)
    }

    /// Erasures whose `LRS_REJECTED` messages are still to be searched for the person's
    /// identifiers: (key, texts to look for). Removed once done ([`Db::forget_scrub`]).
    pub fn rejected_scrubs(&self) -> Result<Vec<(sled::IVec, Vec<String>)>, DbError> {
        let mut found = Vec::new();
        for item in self.tree().scan_prefix([keys::REJECTED_SCRUB]) {
            let (key, value) = item?;
            let texts: Vec<String> = serde_json::from_slice(&value).unwrap_or_default();
            found.push((key, texts));
        }
        Ok(found)
    }

    pub fn forget_scrub(&self, key: &[u8]) -> Result<(), DbError> {
        self.tree().remove(key)?;
        self.flush()
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
            for position in crate::query::indexed(self, IndexKind::Attachment, &sha2, 0) {
                let position = position?;
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

    /// Removes a statement, its id's position and a void of it that is still waiting for its
    /// target, and gathers its positions to take out of the postings of its terms.
    fn remove_record(
        &self,
        batch: &mut sled::Batch,
        unindexed: &mut PostingChanges,
        record: &Record,
    ) -> Result<(), DbError> {
        let id = record
            .statement
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .unwrap_or_default();
        batch.remove(keys::statement(&id));
        batch.remove(keys::record(record.position));
        for (position, terms) in self.index_entries(record, &Default::default())? {
            unindexed.add_terms(&terms, position);
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
}

#[cfg(test)]
#[path = "erase_tests.rs"]
mod tests;
