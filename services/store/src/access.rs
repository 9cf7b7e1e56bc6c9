//! Credentials and the audit log, in the store's sled tree.
//!
//! A credential change is an `LRS_IN` message ([`bus::subjects::IN_CREDENTIALS`]): it and its
//! audit entry go into that message's sled batch; once flushed, the store says
//! `lrs.credentials.changed` so that gateways reload at once.

use bus::access::{AuditEntry, CredentialChange, CredentialRecord, CredentialView};
use serde_json::{json, Value};

use crate::db::DbError;
use crate::keys;

/// Why a credential change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no credential with key {0:?}")]
    NotFound(String),
    #[error("a credential with key {0:?} exists already")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AccessError {
    /// The code a refusal travels with: `bad_request`, `not_found`, `conflict` (`internal`
    /// for a database error).
    pub fn code(&self) -> &'static str {
        match self {
            AccessError::BadRequest(_) => "bad_request",
            AccessError::NotFound(_) => "not_found",
            AccessError::Conflict(_) => "conflict",
            AccessError::Db(_) => "internal",
        }
    }
}

impl From<sled::Error> for AccessError {
    fn from(err: sled::Error) -> AccessError {
        AccessError::Db(DbError::Sled(err))
    }
}

/// Credential keys are Basic auth user names and account names: no colon, no spaces.
pub fn check_key(key: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if key.is_empty() || key.len() > 64 || !key.chars().all(allowed) {
        return Err(format!(
            "credential key {key:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

pub struct Access<'a> {
    pub tree: &'a sled::Db,
}

fn corrupt(key: &[u8], err: impl std::fmt::Display) -> DbError {
    DbError::Corrupt {
        key: key.to_vec(),
        reason: err.to_string(),
    }
}

impl Access<'_> {
    pub fn credentials(&self) -> Result<Vec<CredentialRecord>, DbError> {
        let mut found = Vec::new();
        for item in self.tree.scan_prefix([keys::CREDENTIAL]) {
            let (key, value) = item?;
            found.push(serde_json::from_slice(&value).map_err(|err| corrupt(&key, err))?);
        }
        Ok(found)
    }

    fn credential(&self, key: &str) -> Result<Option<CredentialRecord>, DbError> {
        let raw_key = keys::credential(key);
        match self.tree.get(&raw_key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| corrupt(&raw_key, err)),
        }
    }

    /// Applies a credential change into `batch` (the `LRS_IN` message's one sled batch), with
    /// its audit entry; `time` is the message's timestamp, so every replica writes the same.
    pub fn apply(
        &self,
        change: CredentialChange,
        time: &str,
        batch: &mut sled::Batch,
    ) -> Result<CredentialView, AccessError> {
        let (record, actor, action) = match change {
            CredentialChange::Create { record, actor } => {
                (self.created(record, time)?, actor, "credential.create")
            }
            CredentialChange::Bootstrap { record } => {
                if !self.credentials()?.is_empty() {
                    return Err(AccessError::Conflict(format!(
                        "{} (the store has credentials, so no demo credential is made)",
                        record.key
                    )));
                }
                (
                    self.created(record, time)?,
                    "bootstrap".to_owned(),
                    "credential.create",
                )
            }
            CredentialChange::Rotate {
                key,
                secret_hash,
                actor,
            } => {
                argon2_phc(&secret_hash)?;
                let mut record = self
                    .credential(&key)?
                    .filter(|record| record.revoked.is_none())
                    .ok_or(AccessError::NotFound(key))?;
                record.secret_hash = secret_hash;
                record.rotated = Some(time.to_owned());
                (record, actor, "credential.rotate")
            }
            CredentialChange::Revoke { key, actor } => {
                let mut record = self.credential(&key)?.ok_or(AccessError::NotFound(key))?;
                if record.revoked.is_none() {
                    record.revoked = Some(time.to_owned());
                }
                (record, actor, "credential.revoke")
            }
        };
        let bytes = serde_json::to_vec(&record).map_err(|err| corrupt(b"credential", err))?;
        batch.insert(keys::credential(&record.key), bytes);
        let details = json!({"key": record.key, "name": record.name, "scopes": record.scopes});
        self.audit_into(batch, time, &actor, action, details)?;
        Ok(CredentialView::from(&record))
    }

    /// A new credential as it is stored, once checked.
    fn created(
        &self,
        record: CredentialRecord,
        time: &str,
    ) -> Result<CredentialRecord, AccessError> {
        check_key(&record.key).map_err(AccessError::BadRequest)?;
        if record.scopes.is_empty() {
            return Err(AccessError::BadRequest(
                "a credential needs at least one scope".into(),
            ));
        }
        argon2_phc(&record.secret_hash)?;
        if self.credential(&record.key)?.is_some() {
            return Err(AccessError::Conflict(record.key));
        }
        Ok(CredentialRecord {
            created: time.to_owned(),
            rotated: None,
            revoked: None,
            ..record
        })
    }

    /// Adds an audit entry to `batch`, numbered after the last one (one entry per `LRS_IN`
    /// message at most, so replicas number theirs alike).
    pub fn audit_into(
        &self,
        batch: &mut sled::Batch,
        time: &str,
        actor: &str,
        action: &str,
        details: Value,
    ) -> Result<(), DbError> {
        let last = match self.tree.scan_prefix([keys::AUDIT]).next_back() {
            Some(item) => {
                let (key, _) = item?;
                key.get(1..9).and_then(keys::u64_value).unwrap_or(0)
            }
            None => 0,
        };
        let id = last + 1;
        let entry = AuditEntry {
            id,
            time: time.to_owned(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            details,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|err| corrupt(b"audit", err))?;
        batch.insert(keys::audit(id), bytes);
        Ok(())
    }

    /// Entries after `after` (exclusive), oldest first.
    pub fn audit(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, DbError> {
        let start = keys::audit(after.map_or(0, |after| after.saturating_add(1)));
        let mut entries = Vec::new();
        for item in self.tree.range(start..).take(limit.clamp(1, 1000)) {
            let (key, value) = item?;
            if key.first() != Some(&keys::AUDIT) {
                break;
            }
            entries.push(serde_json::from_slice(&value).map_err(|err| corrupt(&key, err))?);
        }
        Ok(entries)
    }
}

/// A secret hash must be an Argon2 PHC string; anything else would let a plaintext secret in.
fn argon2_phc(hash: &str) -> Result<(), AccessError> {
    if hash.starts_with("$argon2id$") || hash.starts_with("$argon2i$") {
        Ok(())
    } else {
        Err(AccessError::BadRequest(
            "secret_hash must be an Argon2 PHC string ($argon2id$...)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::access::Scope;

    fn record(key: &str) -> CredentialRecord {
        CredentialRecord {
            key: key.into(),
            name: "Tool".into(),
            scopes: vec![Scope::StatementsWrite],
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            on_behalf_of: None,
            requests_per_minute: None,
            created: String::new(),
            rotated: None,
            revoked: None,
        }
    }

    /// Applies one change as the store does: one batch per change.
    fn apply(access: &Access<'_>, change: CredentialChange) -> Result<CredentialView, AccessError> {
        let mut batch = sled::Batch::default();
        let view = access.apply(change, "2026-12-01T10:00:00.000Z", &mut batch)?;
        access.tree.apply_batch(batch).expect("apply");
        Ok(view)
    }

    fn create(key: &str) -> CredentialChange {
        CredentialChange::Create {
            record: record(key),
            actor: "cli:test".into(),
        }
    }

    #[test]
    fn credential_changes_are_checked_and_audited() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = sled::open(dir.path()).expect("sled");
        let access = Access { tree: &tree };
        let made = apply(&access, create("tool")).expect("create");
        assert_eq!(
            made.created, "2026-12-01T10:00:00.000Z",
            "the message's time"
        );
        assert!(matches!(
            apply(&access, create("tool")),
            Err(AccessError::Conflict(_))
        ));
        assert!(matches!(
            apply(&access, create("has:colon")),
            Err(AccessError::BadRequest(_))
        ));
        let mut plaintext = record("plain");
        plaintext.secret_hash = "hunter2".into();
        assert!(matches!(
            apply(
                &access,
                CredentialChange::Create {
                    record: plaintext,
                    actor: "cli:test".into()
                }
            ),
            Err(AccessError::BadRequest(_))
        ));
        let rotate = |key: &str, hash: &str| CredentialChange::Rotate {
            key: key.into(),
            secret_hash: hash.into(),
            actor: "cli:test".into(),
        };
        assert!(matches!(
            apply(&access, rotate("nobody", "$argon2id$x")),
            Err(AccessError::NotFound(_))
        ));
        apply(&access, rotate("tool", "$argon2id$v=19$new")).expect("rotate");
        apply(
            &access,
            CredentialChange::Revoke {
                key: "tool".into(),
                actor: "cli:test".into(),
            },
        )
        .expect("revoke");
        assert!(
            matches!(
                apply(&access, rotate("tool", "$argon2id$x")),
                Err(AccessError::NotFound(_))
            ),
            "a revoked credential stays revoked"
        );
        assert!(
            matches!(
                apply(
                    &access,
                    CredentialChange::Bootstrap {
                        record: record("demo")
                    }
                ),
                Err(AccessError::Conflict(_))
            ),
            "no demo credential once there are credentials"
        );
        let stored = access.credentials().expect("list");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].secret_hash, "$argon2id$v=19$new");
        assert!(stored[0].revoked.is_some());
        let entries = access.audit(None, 10).expect("audit");
        let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "credential.create",
                "credential.rotate",
                "credential.revoke"
            ]
        );
        let ids: Vec<u64> = entries.iter().map(|entry| entry.id).collect();
        assert_eq!(
            ids,
            [1, 2, 3],
            "numbered in order, the same on every replica"
        );
        assert_eq!(access.audit(Some(1), 10).expect("audit").len(), 2);
    }

    #[test]
    fn the_demo_credential_is_made_only_on_an_empty_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = sled::open(dir.path()).expect("sled");
        let access = Access { tree: &tree };
        apply(
            &access,
            CredentialChange::Bootstrap {
                record: record("demo"),
            },
        )
        .expect("made");
        assert_eq!(access.credentials().expect("list").len(), 1);
        assert_eq!(access.audit(None, 10).expect("audit")[0].actor, "bootstrap");
    }
}
