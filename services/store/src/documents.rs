//! The document resources (State, Activity Profile, Agent Profile) in sled.
//!
//! Documents are mutable state, not the append-only statement log, so they are written here
//! directly (over request/reply) rather than through `LRS_IN`; every write is flushed before
//! the reply. Bodies are kept byte-for-byte with their content type.
//!
//! Requests run concurrently, so every request on one scope holds that scope's lock from its
//! read to its flushed write: a merge never loses another merge's keys, and of two writes with
//! the same `If-Match` exactly one succeeds (linearizable per document).

use bus::wire::{
    DocumentKind, DocumentOp, DocumentReply, DocumentRequest, DocumentStatus, Precondition,
};
use std::sync::Mutex;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};
use xapi::time::format_timestamp;

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

/// Locks by scope (striped): requests on one scope take turns from read to flushed write.
pub struct DocumentLocks([Mutex<()>; 64]);

impl Default for DocumentLocks {
    fn default() -> Self {
        DocumentLocks(std::array::from_fn(|_| Mutex::new(())))
    }
}

impl DocumentLocks {
    fn of(&self, kind: DocumentKind, scope: &str) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (xxhash_rust::xxh3::xxh3_64(&scope_prefix(kind, scope)) % 64) as usize;
        self.0[stripe]
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
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
    /// Serialises requests on one scope; `None` where nothing runs concurrently (erasure,
    /// which the one apply thread runs, and tests).
    pub locks: Option<&'a DocumentLocks>,
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

    fn save(&self, key: &[u8], meta: &DocumentMeta, body: &[u8]) -> Result<(), DbError> {
        let framed = bus::wire::frame(meta, body).map_err(|err| DbError::Corrupt {
            key: key.to_vec(),
            reason: err.to_string(),
        })?;
        self.tree.insert(key, framed)?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn handle(&self, request: &DocumentRequest, body: &[u8]) -> Result<Answer, DbError> {
        let _turn = self
            .locks
            .map(|locks| locks.of(request.kind, &request.scope));
        match (request.op, &request.id) {
            (DocumentOp::List, _) => self.list(request),
            (DocumentOp::DeleteAll, _) => self.delete_all(request),
            (_, None) => Ok(status(
                DocumentStatus::BadRequest,
                "a document id is required",
            )),
            (op, Some(id)) => {
                let key = document_key(request.kind, &request.scope, id);
                let existing = self.load(&key, &request.scope)?;
                if let Some((meta, _)) = &existing {
                    if !meta.visible_to(request) {
                        return Ok(match op {
                            DocumentOp::Get => {
                                status(DocumentStatus::NotFound, format!("no document {id}"))
                            }
                            _ => status(
                                DocumentStatus::Forbidden,
                                "a document with this id belongs to another credential",
                            ),
                        });
                    }
                }
                if let Some(failed) = check_preconditions(request, existing.as_ref()) {
                    return Ok(failed);
                }
                match op {
                    DocumentOp::Get => Ok(match existing {
                        Some((meta, body)) => (reply_for(&meta, DocumentStatus::Ok), body),
                        None => status(DocumentStatus::NotFound, format!("no document {id}")),
                    }),
                    DocumentOp::Put => self.write(request, id, &key, existing, body.to_vec()),
                    DocumentOp::Post => self.post(request, id, &key, existing, body),
                    DocumentOp::Delete => {
                        if existing.is_some() {
                            self.tree.remove(&key)?;
                            self.tree.flush()?;
                        }
                        Ok(status(DocumentStatus::NoContent, "deleted"))
                    }
                    DocumentOp::List | DocumentOp::DeleteAll => {
                        Ok(status(DocumentStatus::Internal, "unreachable operation"))
                    }
                }
            }
        }
    }

    fn write(
        &self,
        request: &DocumentRequest,
        id: &str,
        key: &[u8],
        existing: Option<(DocumentMeta, Vec<u8>)>,
        body: Vec<u8>,
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
            id: id.to_owned(),
            content_type,
            sha1: format!("{:x}", Sha1::digest(&body)),
            updated: format_timestamp(Utc::now()),
            writers,
        };
        self.save(key, &meta, &body)?;
        Ok((reply_for(&meta, DocumentStatus::NoContent), Vec::new()))
    }

    /// POST: store when new; merge when both the stored and the posted document are JSON
    /// objects (top-level properties of the posted one win); otherwise 400, nothing changed.
    fn post(
        &self,
        request: &DocumentRequest,
        id: &str,
        key: &[u8],
        existing: Option<(DocumentMeta, Vec<u8>)>,
        body: &[u8],
    ) -> Result<Answer, DbError> {
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
            return self.write(request, id, key, None, body.to_vec());
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
                key: key.to_vec(),
                reason: err.to_string(),
            })?;
        let mut json_request = request.clone();
        json_request.content_type = Some("application/json".into());
        self.write(
            &json_request,
            id,
            key,
            Some((meta, stored_body)),
            merged_body,
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

    fn delete_all(&self, request: &DocumentRequest) -> Result<Answer, DbError> {
        let keys: Vec<sled::IVec> = self
            .in_scope(request)
            .map(|item| item.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(status(DocumentStatus::NoContent, "deleted"))
    }
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
