//! Exporting everything stored about one person (before an erasure, or for a subject access
//! request): their statements, page by page, and their State and Agent Profile documents.

use bus::access::ExportedDocument;
use bus::wire::DocumentKind;
use serde_json::{json, Value};

use crate::db::{Db, DbError};
use crate::documents::Documents;
use crate::erase::names;

impl Db {
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
        // Like a statement page: stop early rather than pass the reply's bytes.
        let budget = self.page_budget();
        let mut size = 0;
        let mut statements = Vec::new();
        let mut last = None;
        for position in self.indexed_under(person, after) {
            let position = position?;
            let Some((record, bytes)) = self.record_at_sized(position)? else {
                continue;
            };
            if !names(&record.statement, person) {
                continue;
            }
            if statements.len() == limit || (!statements.is_empty() && size + bytes > budget) {
                return Ok((statements, last));
            }
            size += bytes;
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
                    let scope =
                        bus::wire::parse_document_scope(meta["scope"].as_str().unwrap_or(""));
                    let owner = scope.as_ref().map(|[_, agent, _]| agent.as_str());
                    Ok((owner == Some(person)).then_some((key, kind, value)))
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
        let scope: Vec<String> =
            bus::wire::parse_document_scope(meta["scope"].as_str().unwrap_or(""))
                .map(Vec::from)
                .unwrap_or_default();
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
pub(crate) fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|index| u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok())
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
