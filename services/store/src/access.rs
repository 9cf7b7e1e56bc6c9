//! Credentials and the audit log, in the store's sled tree.
//!
//! A credential change and its audit entry are one sled batch, flushed before the reply; the
//! store then says `lrs.credentials.changed` so that gateways reload at once.

use bus::access::{AuditEntry, CredentialRecord, CredentialView};
use chrono::Utc;
use serde_json::{json, Value};
use xapi::time::format_timestamp;

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

    /// Writes the credential and its audit entry as one batch and flushes.
    fn save(
        &self,
        record: &CredentialRecord,
        actor: &str,
        action: &str,
    ) -> Result<CredentialView, AccessError> {
        let mut batch = sled::Batch::default();
        let bytes = serde_json::to_vec(record).map_err(|err| corrupt(b"credential", err))?;
        batch.insert(keys::credential(&record.key), bytes);
        let view = CredentialView::from(record);
        let details = json!({"key": record.key, "name": record.name, "scopes": record.scopes});
        self.audit_into(&mut batch, actor, action, details)?;
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(view)
    }

    pub fn create(
        &self,
        record: CredentialRecord,
        actor: &str,
    ) -> Result<CredentialView, AccessError> {
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
        let record = CredentialRecord {
            created: format_timestamp(Utc::now()),
            rotated: None,
            revoked: None,
            ..record
        };
        self.save(&record, actor, "credential.create")
    }

    pub fn rotate(
        &self,
        key: &str,
        secret_hash: String,
        actor: &str,
    ) -> Result<CredentialView, AccessError> {
        argon2_phc(&secret_hash)?;
        let mut record = self
            .credential(key)?
            .filter(|record| record.revoked.is_none())
            .ok_or_else(|| AccessError::NotFound(key.to_owned()))?;
        record.secret_hash = secret_hash;
        record.rotated = Some(format_timestamp(Utc::now()));
        self.save(&record, actor, "credential.rotate")
    }

    pub fn revoke(&self, key: &str, actor: &str) -> Result<CredentialView, AccessError> {
        let mut record = self
            .credential(key)?
            .ok_or_else(|| AccessError::NotFound(key.to_owned()))?;
        if record.revoked.is_none() {
            record.revoked = Some(format_timestamp(Utc::now()));
        }
        self.save(&record, actor, "credential.revoke")
    }

    /// Adds an audit entry to `batch`; ids come from sled's monotonic generator.
    pub fn audit_into(
        &self,
        batch: &mut sled::Batch,
        actor: &str,
        action: &str,
        details: Value,
    ) -> Result<(), DbError> {
        let id = self.tree.generate_id()?;
        let entry = AuditEntry {
            id,
            time: format_timestamp(Utc::now()),
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

    #[test]
    fn credential_changes_are_checked_and_audited() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = sled::open(dir.path()).expect("sled");
        let access = Access { tree: &tree };
        access.create(record("tool"), "cli:test").expect("create");
        assert!(matches!(
            access.create(record("tool"), "cli:test"),
            Err(AccessError::Conflict(_))
        ));
        assert!(matches!(
            access.create(record("has:colon"), "cli:test"),
            Err(AccessError::BadRequest(_))
        ));
        let mut plaintext = record("plain");
        plaintext.secret_hash = "hunter2".into();
        assert!(matches!(
            access.create(plaintext, "cli:test"),
            Err(AccessError::BadRequest(_))
        ));
        assert!(matches!(
            access.rotate("nobody", "$argon2id$x".into(), "cli:test"),
            Err(AccessError::NotFound(_))
        ));
        access
            .rotate("tool", "$argon2id$v=19$new".into(), "cli:test")
            .expect("rotate");
        access.revoke("tool", "cli:test").expect("revoke");
        assert!(
            matches!(
                access.rotate("tool", "$argon2id$x".into(), "cli:test"),
                Err(AccessError::NotFound(_))
            ),
            "a revoked credential stays revoked"
        );
        let stored = access.credentials().expect("list");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].secret_hash, "$argon2id$v=19$new");
        assert!(stored[0].revoked.is_some());
        let actions: Vec<String> = access
            .audit(None, 10)
            .expect("audit")
            .into_iter()
            .map(|entry| entry.action)
            .collect();
        assert_eq!(
            actions,
            [
                "credential.create",
                "credential.rotate",
                "credential.revoke"
            ]
        );
        let first = access.audit(None, 1).expect("audit")[0].id;
        assert_eq!(access.audit(Some(first), 10).expect("audit").len(), 2);
    }
}
