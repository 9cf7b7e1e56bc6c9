//! The hub registry in the store's tree (see [`bus::hubs`]): `H` + hub id -> [`HubEntry`]
//! JSON, written by the one `LRS_IN` message that changes it.

use bus::hubs::{HubChange, HubEntry};

use crate::db::DbError;
use crate::keys;

pub struct Registry<'a> {
    pub tree: &'a sled::Db,
}

/// Why a change was refused: `code` (`bad_request`, `not_found`) and the message.
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

impl Registry<'_> {
    /// Every registered hub, by id.
    pub fn list(&self) -> Result<Vec<HubEntry>, DbError> {
        let mut found = Vec::new();
        for item in self.tree.scan_prefix([keys::HUB]) {
            let (key, value) = item?;
            found.push(
                serde_json::from_slice(&value).map_err(|err| DbError::Corrupt {
                    key: key.to_vec(),
                    reason: err.to_string(),
                })?,
            );
        }
        Ok(found)
    }

    /// Writes a change into `batch`, or says why it cannot be made.
    pub fn apply(
        &self,
        change: &HubChange,
        batch: &mut sled::Batch,
    ) -> Result<Result<(), Refused>, DbError> {
        match change {
            HubChange::Set { hub } => {
                if let Err(message) = hub.check() {
                    return Ok(Err(Refused {
                        code: "bad_request",
                        message,
                    }));
                }
                let bytes = serde_json::to_vec(hub).unwrap_or_default();
                batch.insert(keys::hub(&hub.id), bytes);
            }
            HubChange::Delete { id } => {
                if self.tree.get(keys::hub(id))?.is_none() {
                    return Ok(Err(Refused {
                        code: "not_found",
                        message: format!("no hub {id:?} is registered"),
                    }));
                }
                batch.remove(keys::hub(id));
            }
        }
        Ok(Ok(()))
    }
}
