//! Publishing the outbox: a window of entries at a time, each message within the server's
//! `max_payload` (see [`crate::outbox`]), retried while NATS is away.

use bus::pull::Backoff;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::service::{Stop, Store};

/// Outbox entries read and published per round, and the bytes in flight at most.
const OUTBOX_ENTRIES: usize = 32;
const OUTBOX_BYTES: usize = 16 * 1024 * 1024;

impl Store {
    /// Publishes the outbox up to `through`, retrying while NATS is away; returns early only
    /// at shutdown (what is left is published at the next start).
    pub(crate) async fn publish_outbox_until_done(
        &self,
        through: Option<sled::IVec>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut backoff = Backoff::default();
        loop {
            match self.publish_outbox(through.clone()).await {
                Ok(()) => return Ok(()),
                Err(OutboxError::Db(err)) => return Err(Stop::Db(err)),
                Err(OutboxError::Nats(err)) => {
                    tracing::warn!(error = %err, "publishing the outbox failed; retrying");
                    if !backoff.wait(shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Publishes the outbox entries up to `through` (all, if `None`) to JetStream,
    /// deduplicated by their msg ids, a window of entries at a time, removing each window once
    /// JetStream acknowledged it.
    async fn publish_outbox(&self, through: Option<sled::IVec>) -> Result<(), OutboxError> {
        loop {
            let db = self.db.clone();
            let bound = through.clone();
            let entries = tokio::task::spawn_blocking(move || {
                db.outbox_page(None, bound.as_deref(), OUTBOX_ENTRIES)
            })
            .await
            .map_err(|err| OutboxError::Nats(err.to_string()))??;
            if entries.is_empty() {
                return Ok(());
            }
            let mut published = Vec::with_capacity(entries.len());
            let mut acks = Vec::new();
            let mut bytes = 0;
            for entry in entries {
                for message in entry.messages {
                    bytes += message.payload.len();
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(bus::MSG_ID_HEADER, message.msg_id.as_str());
                    let ack = self
                        .js
                        .publish_with_headers(message.subject, headers, message.payload.into())
                        .await
                        .map_err(|err| OutboxError::Nats(err.to_string()))?;
                    acks.push(ack);
                }
                published.push(entry.key);
                if bytes >= OUTBOX_BYTES {
                    break;
                }
            }
            for ack in acks {
                ack.await
                    .map_err(|err| OutboxError::Nats(format!("not acknowledged: {err}")))?;
            }
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.remove_outbox(&published))
                .await
                .map_err(|err| OutboxError::Nats(err.to_string()))??;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum OutboxError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Nats(String),
}
