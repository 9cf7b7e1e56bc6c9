//! The document resources (State, Activity Profile, Agent Profile) in sled.
//!
//! Every write (PUT, POST, DELETE) is an `LRS_IN` message ([`bus::subjects::IN_DOCUMENTS`]),
//! applied by the store's one writer in log order with its preconditions checked at that
//! point: a merge never loses another merge's keys, of two writes with the same `If-Match`
//! exactly one succeeds, and every store replica ends with the same documents. `updated` is
//! the message's timestamp. Reads are answered over request/reply. Bodies are kept
//! byte-for-byte with their content type.

use bus::wire::{
    DocumentKind, DocumentOp, DocumentReply, DocumentRequest, DocumentStatus, Precondition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::db::DbError;

/// `D` + kind(1) + scope hash(16) + document id -> frame(DocumentMeta, body).
const DOCUMENT: u8 = b'D';

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocumentMeta {
    /// The full scope, checked on read: the key holds only its hash.
    scope: String,
    id: String,
    content_type: String,
    /// SHA-1 of the body, hex, unquoted.
    sha1: String,
    updated: String,
    /// Keys of the credentials that wrote it: a credential confined to its own documents
    /// sees it only if it is among them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    writers: Vec<String>,
}

impl DocumentMeta {
    fn visible_to(&self, request: &DocumentRequest) -> bool {
        !request.own_only
            || request
                .writer
                .as_ref()
                .is_some_and(|writer| self.writers.contains(writer))
    }
}

fn kind_byte(kind: DocumentKind) -> u8 {
    match kind {
        DocumentKind::State => b's',
        DocumentKind::ActivityProfile => b'a',
        DocumentKind::AgentProfile => b'g',
    }
}

/// The prefix of every document key.
pub(crate) const PREFIX: &[u8] = &[DOCUMENT];

/// The resource a document key belongs to.
pub(crate) fn kind_of(key: &[u8]) -> Option<DocumentKind> {
    let byte = *key.get(1)?;
    [
        DocumentKind::State,
        DocumentKind::ActivityProfile,
        DocumentKind::AgentProfile,
    ]
    .into_iter()
    .find(|kind| kind_byte(*kind) == byte)
}

/// A stored document's metadata (scope, id, content type, updated), as JSON.
pub(crate) fn meta_of(key: &[u8], value: &[u8]) -> Result<Option<Value>, DbError> {
    let (meta, _): (DocumentMeta, &[u8]) =
        bus::wire::unframe(value).map_err(|reason| DbError::Corrupt {
            key: key.to_vec(),
            reason,
        })?;
    Ok(serde_json::to_value(meta).ok())
}

fn scope_prefix(kind: DocumentKind, scope: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.push(DOCUMENT);
    key.push(kind_byte(kind));
    key.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(scope.as_bytes()).to_be_bytes());
    key
}

fn document_key(kind: DocumentKind, scope: &str, id: &str) -> Vec<u8> {
    let mut key = scope_prefix(kind, scope);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The answer to a document request: the reply header and the body that goes with it.
pub type Answer = (DocumentReply, Vec<u8>);

fn status(status: DocumentStatus, message: impl Into<String>) -> Answer {
    (
        DocumentReply {
            status,
            message: Some(message.into()),
            content_type: None,
            etag: None,
            updated: None,
        },
        Vec::new(),
    )
}

fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn quoted(sha1: &str) -> String {
    format!("\"{sha1}\"")
}

/// Whether an `If-Match` / `If-None-Match` value names this ETag (or is `*`).
fn names_etag(header: &str, sha1: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag
                .trim_start_matches("W/")
                .trim_matches('"')
                .eq_ignore_ascii_case(sha1)
    })
}

/// Re-keys documents written with the scope joined by newlines (before the scope became a
/// JSON array): once, at open. Returns how many moved.
pub(crate) fn migrate_scopes(tree: &sled::Db) -> Result<usize, DbError> {
    let mut batch = sled::Batch::default();
    let mut moved = 0;
    for item in tree.scan_prefix(PREFIX) {
        let (key, value) = item?;
        let Some(kind) = kind_of(&key) else {
            continue;
        };
        let (mut meta, body): (DocumentMeta, &[u8]) =
            bus::wire::unframe(&value).map_err(|reason| DbError::Corrupt {
                key: key.to_vec(),
                reason,
            })?;
        if bus::wire::parse_document_scope(&meta.scope).is_some() {
            continue;
        }
        let mut parts = meta.scope.splitn(3, '\n');
        let (activity, agent, registration) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        meta.scope = bus::wire::document_scope(activity, agent, registration);
        let framed = bus::wire::frame(&meta, body).map_err(|err| DbError::Corrupt {
            key: key.to_vec(),
            reason: err.to_string(),
        })?;
        batch.remove(key);
        batch.insert(document_key(kind, &meta.scope, &meta.id), framed);
        moved += 1;
    }
    if moved > 0 {
        tree.apply_batch(batch)?;
        tree.flush()?;
        tracing::info!(moved, "documents re-keyed to the JSON scope layout");
    }
    Ok(moved)
}

pub struct Documents<'a> {
    pub tree: &'a sled::Db,
    /// `limits.document_bytes`: a merge may not grow a document past it.
    pub max_bytes: usize,
}

impl Documents<'_> {
    fn load(&self, key: &[u8], scope: &str) -> Result<Option<(DocumentMeta, Vec<u8>)>, DbError> {
        let Some(bytes) = self.tree.get(key)? else {
            return Ok(None);
        };
        let (meta, body): (DocumentMeta, &[u8]) =
            bus::wire::unframe(&bytes).map_err(|reason| DbError::Corrupt {
                key: key.to_vec(),
                reason,
            })?;
        Ok((meta.scope == scope).then(|| (meta, body.to_vec())))
    }

    /// Answers a read (GET of one document, or the list of a scope).
    pub fn read(&self, request: &DocumentRequest) -> Result<Answer, DbError> {
        match (request.op, &request.id) {
            (DocumentOp::List, _) => self.list(request),
            (DocumentOp::Get, Some(id)) => {
                let key = document_key(request.kind, &request.scope, id);
                Ok(match self.load(&key, &request.scope)? {
                    Some((meta, body)) if meta.visible_to(request) => {
                        (reply_for(&meta, DocumentStatus::Ok), body)
                    }
                    _ => status(DocumentStatus::NotFound, format!("no document {id}")),
                })
            }
            (DocumentOp::Get, None) => Ok(status(
                DocumentStatus::BadRequest,
                "a document id is required",
            )),
            (op, _) => Ok(status(
                DocumentStatus::BadRequest,
                format!("{op:?} is a write: writes go through LRS_IN"),
            )),
        }
    }

    /// Applies a write into `batch`, the `LRS_IN` message's one sled batch, after checking its
    /// preconditions against the documents as they are at this point of the log. `updated`
    /// is the message's timestamp. A write not done leaves `batch` untouched.
    pub fn apply(
        &self,
        request: &DocumentRequest,
        body: &[u8],
        updated: &str,
        batch: &mut sled::Batch,
    ) -> Result<Answer, DbError> {
        match (request.op, &request.id) {
            (DocumentOp::DeleteAll, _) => self.delete_all(request, batch),
            (DocumentOp::Get | DocumentOp::List, _) => Ok(status(
                DocumentStatus::BadRequest,
                format!("{:?} is a read, not a write", request.op),
            )),
            (_, None) => Ok(status(
                DocumentStatus::BadRequest,
                "a document id is required",
            )),
            (op, Some(id)) => {
                let key = document_key(request.kind, &request.scope, id);
                let existing = self.load(&key, &request.scope)?;
                if existing
                    .as_ref()
                    .is_some_and(|(meta, _)| !meta.visible_to(request))
                {
                    return Ok(status(
                        DocumentStatus::Forbidden,
                        "a document with this id belongs to another credential",
                    ));
                }
                if let Some(failed) = check_preconditions(request, existing.as_ref()) {
                    return Ok(failed);
                }
                let write = Write {
                    request,
                    id,
                    key: &key,
                    updated,
                };
                match op {
                    DocumentOp::Put => self.write(&write, existing, body.to_vec(), batch),
                    DocumentOp::Post => self.post(&write, existing, body, batch),
                    _ => {
                        if existing.is_some() {
                            batch.remove(key.as_slice());
                        }
                        Ok(status(DocumentStatus::NoContent, "deleted"))
                    }
                }
            }
        }
    }

    fn write(
        &self,
        write: &Write<'_>,
        existing: Option<(DocumentMeta, Vec<u8>)>,
        body: Vec<u8>,
        batch: &mut sled::Batch,
    ) -> Result<Answer, DbError> {
        if body.len() > self.max_bytes {
            return Ok(status(
                DocumentStatus::TooLarge,
                format!(
                    "the document would be {} bytes (limit limits.document_bytes = {})",
                    body.len(),
                    self.max_bytes
                ),
            ));
        }
        let request = write.request;
        let content_type = request
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut writers = existing.map(|(meta, _)| meta.writers).unwrap_or_default();
        if let Some(writer) = &request.writer {
            if !writers.contains(writer) {
                writers.push(writer.clone());
            }
        }
        let meta = DocumentMeta {
            scope: request.scope.clone(),
            id: write.id.to_owned(),
            content_type,
            sha1: format!("{:x}", Sha1::digest(&body)),
            updated: write.updated.to_owned(),
            writers,
        };
        let framed = bus::wire::frame(&meta, &body).map_err(|err| DbError::Corrupt {
            key: write.key.to_vec(),
            reason: err.to_string(),
        })?;
        batch.insert(write.key, framed);
        Ok((reply_for(&meta, DocumentStatus::NoContent), Vec::new()))
    }

    /// POST: store when new; merge when both the stored and the posted document are JSON
    /// objects (top-level properties of the posted one win); otherwise 400, nothing changed.
    fn post(
        &self,
        write: &Write<'_>,
        existing: Option<(DocumentMeta, Vec<u8>)>,
        body: &[u8],
        batch: &mut sled::Batch,
    ) -> Result<Answer, DbError> {
        let request = write.request;
        let posted_is_json = request.content_type.as_deref().is_some_and(is_json);
        let posted_object =
            if posted_is_json {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(object)) => Some(object),
                    _ => return Ok(status(
                        DocumentStatus::BadRequest,
                        "the posted document is declared application/json but is not a JSON object",
                    )),
                }
            } else {
                None
            };
        let Some((meta, stored_body)) = existing else {
            return self.write(write, None, body.to_vec(), batch);
        };
        let stored_object = if is_json(&meta.content_type) {
            match serde_json::from_slice::<Value>(&stored_body) {
                Ok(Value::Object(object)) => Some(object),
                _ => None,
            }
        } else {
            None
        };
        let (Some(mut merged), Some(posted)) = (stored_object, posted_object) else {
            return Ok(status(
                DocumentStatus::BadRequest,
                "POST merges JSON objects only: the stored and the posted document must both be application/json objects",
            ));
        };
        merged.extend(posted);
        let merged_body =
            serde_json::to_vec(&Value::Object(merged)).map_err(|err| DbError::Corrupt {
                key: write.key.to_vec(),
                reason: err.to_string(),
            })?;
        let mut json_request = request.clone();
        json_request.content_type = Some("application/json".into());
        self.write(
            &Write {
                request: &json_request,
                ..*write
            },
            Some((meta, stored_body)),
            merged_body,
            batch,
        )
    }

    fn in_scope<'r>(
        &'r self,
        request: &'r DocumentRequest,
    ) -> impl Iterator<Item = Result<(sled::IVec, DocumentMeta), DbError>> + 'r {
        let scope = request.scope.clone();
        self.tree
            .scan_prefix(scope_prefix(request.kind, &request.scope))
            .filter_map(move |item| {
                let (key, value) = match item {
                    Ok(pair) => pair,
                    Err(err) => return Some(Err(DbError::from(err))),
                };
                match bus::wire::unframe::<DocumentMeta>(&value) {
                    Ok((meta, _)) if meta.scope == scope && meta.visible_to(request) => {
                        Some(Ok((key, meta)))
                    }
                    Ok(_) => None,
                    Err(reason) => Some(Err(DbError::Corrupt {
                        key: key.to_vec(),
                        reason,
                    })),
                }
            })
    }

    fn list(&self, request: &DocumentRequest) -> Result<Answer, DbError> {
        let mut ids = Vec::new();
        let mut last_updated: Option<String> = None;
        for item in self.in_scope(request) {
            let (_, meta) = item?;
            if request
                .since
                .as_deref()
                .is_some_and(|since| meta.updated.as_str() <= since)
            {
                continue;
            }
            if last_updated
                .as_deref()
                .is_none_or(|last| meta.updated.as_str() > last)
            {
                last_updated = Some(meta.updated.clone());
            }
            ids.push(meta.id);
        }
        let body = serde_json::to_vec(&ids).unwrap_or_else(|_| b"[]".to_vec());
        Ok((
            DocumentReply {
                status: DocumentStatus::Ok,
                message: None,
                content_type: Some("application/json".into()),
                etag: None,
                updated: last_updated,
            },
            body,
        ))
    }

    fn delete_all(
        &self,
        request: &DocumentRequest,
        batch: &mut sled::Batch,
    ) -> Result<Answer, DbError> {
        for item in self.in_scope(request) {
            let (key, _) = item?;
            batch.remove(key);
        }
        Ok(status(DocumentStatus::NoContent, "deleted"))
    }
}

/// One document write: what it writes, and where.
#[derive(Clone, Copy)]
struct Write<'a> {
    request: &'a DocumentRequest,
    id: &'a str,
    key: &'a [u8],
    updated: &'a str,
}

fn reply_for(meta: &DocumentMeta, status: DocumentStatus) -> DocumentReply {
    DocumentReply {
        status,
        message: None,
        content_type: Some(meta.content_type.clone()),
        etag: Some(quoted(&meta.sha1)),
        updated: Some(meta.updated.clone()),
    }
}

/// `If-Match`, `If-None-Match`, and the conflict for an unconditional overwrite.
fn check_preconditions(
    request: &DocumentRequest,
    existing: Option<&(DocumentMeta, Vec<u8>)>,
) -> Option<Answer> {
    let writes = matches!(
        request.op,
        DocumentOp::Put | DocumentOp::Post | DocumentOp::Delete
    );
    if !writes {
        return None;
    }
    if let Some(if_match) = &request.if_match {
        let matches = existing.is_some_and(|(meta, _)| names_etag(if_match, &meta.sha1));
        if !matches {
            return Some(status(
                DocumentStatus::PreconditionFailed,
                "If-Match does not match the document's ETag",
            ));
        }
    }
    if let Some(if_none_match) = &request.if_none_match {
        let matches = existing.is_some_and(|(meta, _)| names_etag(if_none_match, &meta.sha1));
        if matches {
            return Some(status(
                DocumentStatus::PreconditionFailed,
                "If-None-Match matches the existing document",
            ));
        }
    }
    let unconditional = request.if_match.is_none() && request.if_none_match.is_none();
    if request.op != DocumentOp::Put || !unconditional {
        return None;
    }
    match (request.precondition, existing.is_some()) {
        (Precondition::Optional, _) => None,
        (Precondition::RequiredToOverwrite | Precondition::Required, true) => Some(status(
            DocumentStatus::Conflict,
            "the document exists: send If-Match with its ETag (or If-None-Match: *) to overwrite it",
        )),
        (Precondition::Required, false) => Some(status(
            DocumentStatus::BadRequest,
            "xAPI 1.0.3 requires If-Match or If-None-Match on a PUT to a profile document",
        )),
        (Precondition::RequiredToOverwrite, false) => None,
    }
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;
