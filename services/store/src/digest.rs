//! A digest of what a store replica holds, so that replicas can be compared: two replicas
//! that applied `LRS_IN` through the same sequence hold the same content, and so the same
//! digest. Applying is a pure function of the message and the state (times from the message,
//! generated ids from the log position, preconditions checked in log order), which is what
//! makes this hold.
//!
//! The digest covers the content: statements, their positions and index entries, voids
//! waiting for their target, documents, credentials, the audit log, and the applied sequence,
//! next position and last `stored`. It leaves out what each replica keeps for its own
//! bookkeeping and clears at its own pace: the outbox, verdicts (pruned by age), out-of-order
//! marks, the index watermark, an erasure's progress and its leftovers on NATS, and which
//! `LRS_IN` it recorded.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::keys;

/// What [`Db::digest`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The `LRS_IN` sequence the content is at.
    pub applied: u64,
    /// Statements stored (voided ones included).
    pub statements: u64,
    /// XXH3-128 of every content key and value in key order, hex.
    pub digest: String,
}

/// Key prefixes that are content (see the module documentation).
const CONTENT: [u8; 8] = [
    keys::RECORD,
    keys::STATEMENT,
    keys::POSTING,
    keys::PENDING_VOID,
    keys::CREDENTIAL,
    keys::AUDIT,
    keys::HUB,
    crate::documents::PREFIX[0],
];

/// Meta keys that are content.
const CONTENT_META: [&[u8]; 3] = [
    keys::META_APPLIED,
    keys::META_NEXT_POSITION,
    keys::META_LAST_STORED,
];

impl Db {
    /// The digest of this replica's content, once its indexes caught up. Reads the whole
    /// database: for the operator's `leerspoor replicas`, not for a hot path. Not a snapshot:
    /// taken while messages are applied, it may mix two sequences; compare replicas at rest.
    pub fn digest(&self) -> Result<Digest, DbError> {
        self.wait_for_indexes()?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut statements = 0;
        let mut feed = |key: &[u8], value: &[u8]| {
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(key);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(value);
        };
        let applied = self.applied_sequence()?;
        for name in CONTENT_META {
            if let Some(value) = self.tree().get(name)? {
                feed(name, &value);
            }
        }
        for prefix in CONTENT {
            for item in self.tree().scan_prefix([prefix]) {
                let (key, value) = item?;
                if prefix == keys::RECORD {
                    // Its JSON, however it is kept: replicas that pack records differently
                    // (or not, before) hold the same statements.
                    statements += 1;
                    feed(&key, &crate::db::unpack(&key, &value)?);
                    continue;
                }
                feed(&key, &value);
            }
        }
        Ok(Digest {
            applied,
            statements,
            digest: format!("{:032x}", hasher.digest128()),
        })
    }
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
