//! What the store does on NATS besides applying: the housekeeping an erasure leaves
//! (attachment bodies and rejections quoting the person) and pruning verdicts no gateway
//! waits for any more.

use std::time::Duration;

use async_nats::jetstream;
use bus::subjects;
use tokio_util::sync::CancellationToken;

use crate::service::Store;

/// How long the last housekeeping pass at shutdown may take.
const LAST_HOUSEKEEPING: Duration = Duration::from_secs(10);

impl Store {
    /// What an erasure leaves to do on NATS, off the ingest path: deleting the attachment
    /// bodies no statement uses any more, and the `LRS_REJECTED` messages that name the
    /// person; and dropping verdicts no gateway waits for any more. Runs after batches and
    /// every half minute (what failed is retried then).
    /// At shutdown it makes one last pass (at most [`LAST_HOUSEKEEPING`]), so an erasure
    /// just applied does not leave its search of `LRS_REJECTED` to the next start.
    pub(crate) async fn housekeeping(&self, shutdown: CancellationToken) {
        let never = CancellationToken::new();
        loop {
            self.delete_orphans().await;
            self.scrub_rejected(&never).await;
            let db = self.db.clone();
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || db.prune_verdicts()).await {
                tracing::warn!(error = %err, "pruning old verdicts failed; retrying later");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.housekeeping.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
        let last_pass = async {
            self.delete_orphans().await;
            self.scrub_rejected(&never).await;
        };
        if tokio::time::timeout(LAST_HOUSEKEEPING, last_pass)
            .await
            .is_err()
        {
            tracing::warn!("housekeeping not finished at shutdown; it goes on at the next start");
        }
    }

    /// Deletes the attachment bodies an erasure left unused (the orphans stay recorded in
    /// sled until deleted).
    async fn delete_orphans(&self) {
        let db = self.db.clone();
        let orphans = match tokio::task::spawn_blocking(move || db.orphans()).await {
            Ok(Ok(orphans)) => orphans,
            _ => return,
        };
        for sha2 in orphans {
            match self.attachments.delete(&sha2).await {
                Ok(()) => {}
                Err(err) if err.kind() == jetstream::object_store::DeleteErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(error = %err, "attachment body not deleted yet; retrying later");
                    return;
                }
            }
            let db = self.db.clone();
            let forgotten = tokio::task::spawn_blocking(move || db.forget_orphan(&sha2)).await;
            if !matches!(forgotten, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// Deletes the `LRS_REJECTED` messages that quote an erased person (the rejections kept
    /// 30 days for replay must not keep them).
    async fn scrub_rejected(&self, shutdown: &CancellationToken) {
        let db = self.db.clone();
        let scrubs = match tokio::task::spawn_blocking(move || db.rejected_scrubs()).await {
            Ok(Ok(scrubs)) if !scrubs.is_empty() => scrubs,
            _ => return,
        };
        let Ok(mut stream) = self.js.get_stream(subjects::STREAM_REJECTED).await else {
            return;
        };
        let Ok(info) = stream.info().await else {
            return;
        };
        // An empty stream reports sequence 0 as its first, which is no message.
        let (first, last) = (info.state.first_sequence.max(1), info.state.last_sequence);
        for (key, texts) in scrubs {
            let mut deleted = 0;
            for sequence in first..=last {
                if shutdown.is_cancelled() {
                    return;
                }
                let message = match stream.get_raw_message(sequence).await {
                    Ok(message) => message,
                    Err(err)
                        if err.kind()
                            == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                    {
                        continue
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "searching LRS_REJECTED failed; retrying later");
                        return;
                    }
                };
                let text = String::from_utf8_lossy(&message.payload);
                if texts.iter().any(|found| text.contains(found.as_str())) {
                    if let Err(err) = stream.delete_message(sequence).await {
                        tracing::warn!(error = %err, "deleting a rejection failed; retrying later");
                        return;
                    }
                    deleted += 1;
                }
            }
            let db = self.db.clone();
            if !matches!(
                tokio::task::spawn_blocking(move || db.forget_scrub(&key)).await,
                Ok(Ok(()))
            ) {
                return;
            }
            tracing::info!(
                deleted,
                "removed the erased person's rejections from LRS_REJECTED"
            );
        }
    }
}
