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
                    let payload = bytes::Bytes::from(message.payload);
                    let ack = self
                        .js
                        .publish_with_headers(message.subject, headers.clone(), payload.clone())
                        .await
                        .map_err(|err| OutboxError::Nats(err.to_string()))?;
                    acks.push((ack, message.subject, headers, payload));
                }
                published.extend(entry.keys);
                if bytes >= OUTBOX_BYTES {
                    break;
                }
            }
            for (ack, subject, headers, payload) in acks {
                match ack.await {
                    Ok(ack) => self.record_published(&ack),
                    Err(err) if in_process(&err) => {
                        self.publish_once_settled(subject, headers, payload).await?;
                    }
                    Err(err) => return Err(OutboxError::Nats(format!("not acknowledged: {err}"))),
                }
            }
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || db.remove_outbox(&published))
                .await
                .map_err(|err| OutboxError::Nats(err.to_string()))??;
        }
    }
}

impl Store {
    /// What the projector beside this store is measured against ([`bus::pace`]).
    fn record_published(&self, ack: &async_nats::jetstream::publish::PublishAck) {
        if ack.stream == bus::subjects::STREAM_STORED {
            self.published.record(ack.sequence);
        }
    }

    /// Publishes one message again until JetStream settles it: another store replica is
    /// publishing the same message (same id) at this moment, and the cluster answers "in
    /// process" until that publish is through; then this one is acknowledged as the
    /// duplicate it is.
    async fn publish_once_settled(
        &self,
        subject: &'static str,
        headers: async_nats::HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<(), OutboxError> {
        let mut pause = std::time::Duration::from_millis(10);
        for _ in 0..50 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
            let outcome = async {
                self.js
                    .publish_with_headers(subject, headers.clone(), payload.clone())
                    .await?
                    .await
            }
            .await;
            match outcome {
                Ok(ack) => {
                    self.record_published(&ack);
                    return Ok(());
                }
                Err(err) if in_process(&err) => continue,
                Err(err) => return Err(OutboxError::Nats(format!("not acknowledged: {err}"))),
            }
        }
        Err(OutboxError::Nats(
            "another replica's publish of the same message did not settle".into(),
        ))
    }
}

/// JetStream's "duplicate message id is in process" (error code 10158): a clustered stream
/// is storing a message with this id from another publisher right now.
fn in_process(err: &async_nats::jetstream::context::PublishError) -> bool {
    err.to_string().contains("10158")
}

#[derive(Debug, thiserror::Error)]
enum OutboxError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Nats(String),
}
