//! The store on NATS: pull `LRS_IN` -> apply -> flush -> publish outbox -> ack -> announce;
//! and answer statement queries and verdict look-ups over request/reply.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use bus::subjects;
use bus::wire::{Applied, Verdict};
use tokio_util::sync::CancellationToken;
use xapi::Validator;

use crate::db::{Db, Incoming};
use crate::ingest;

/// Applied batches waiting for their outbox publish and ack.
const FINISH_QUEUE: usize = 4;

/// What an applied, flushed batch still needs: its events published, then its acks.
struct Finish {
    /// Each is acknowledged on its own (`AckPolicy::Explicit`): a cumulative ack would also
    /// acknowledge an earlier message still waiting for redelivery.
    messages: Vec<jetstream::Message>,
    through: u64,
    /// The last outbox key the batch's flush covered.
    outbox_through: Option<sled::IVec>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the sled database; one store process owns it.
    pub data_dir: PathBuf,
    /// At most this many messages are applied under one sled flush and one ack.
    pub max_batch: usize,
    /// A message delivered to a store that died unacknowledged is redelivered after this.
    /// Redeliveries are harmless (the applied sequence skips them), so shorter only costs work.
    pub ack_wait: Duration,
    /// Created at start when the store has no credential at all (`serve`'s demo credential),
    /// so that a first run can be used at once.
    pub bootstrap_credential: Option<bus::access::CredentialRecord>,
}

pub struct Store {
    client: async_nats::Client,
    js: jetstream::Context,
    db: Arc<Db>,
    /// Compiled once; shared with the blocking apply tasks.
    validator: Arc<Validator>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// Where attachment bodies live; an erasure deletes the ones no statement uses any more.
    attachments: jetstream::object_store::ObjectStore,
    api: crate::api::Subscriptions,
    config: StoreConfig,
}

impl Store {
    /// Opens sled, makes sure the streams and the durable consumer exist. Fails fast with
    /// context: sled locked by another process, NATS without JetStream, schema errors.
    pub async fn build(client: async_nats::Client, config: StoreConfig) -> anyhow::Result<Store> {
        let validator = Arc::new(Validator::new().context("compiling xAPI schemas")?);
        let db_path = config.data_dir.join("store.sled");
        let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
            .await
            .context("opening sled")?
            .context("opening the store database (is another store running on it?)")?;
        if let Some(record) = config.bootstrap_credential.clone() {
            let access = crate::access::Access { tree: db.tree() };
            if access.credentials()?.is_empty() {
                let key = record.key.clone();
                access
                    .create(record, "bootstrap")
                    .context("creating the bootstrap credential")?;
                tracing::warn!(%key, "no credentials yet: created the demo credential");
            }
        }
        let js = jetstream::new(client.clone());
        subjects::ensure_streams(&js).await?;
        let consumer = bus::pull::durable(
            &js,
            subjects::STREAM_IN,
            subjects::STORE_CONSUMER,
            config.ack_wait,
        )
        .await
        .context("the store's durable consumer on LRS_IN")?;
        let api = crate::api::subscribe(&client).await?;
        let attachments = subjects::attachment_bucket(&js).await?;
        Ok(Store {
            api,
            attachments,
            client,
            js,
            db: Arc::new(db),
            validator,
            consumer,
            config,
        })
    }

    /// Runs until `shutdown`: finishes the batch in hand, flushes, acks, then returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = crate::api::serve(
            self.client.clone(),
            self.db.clone(),
            std::mem::take(&mut self.api),
            shutdown.clone(),
        );
        let ingest = self.ingest_loop(shutdown.clone());
        let (api_result, ingest_result) = tokio::join!(api, ingest);
        // Whichever ended first, stop the other too.
        shutdown.cancel();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .context("final flush")??;
        api_result.and(ingest_result)
    }

    /// Two stages: the pull loop applies and flushes batch N+1 while the finisher publishes
    /// batch N's outbox and acknowledges it.
    async fn ingest_loop(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Anything flushed but not yet published (or deleted) before a crash goes first.
        self.publish_outbox(None).await?;
        self.delete_orphans().await;
        let (finish_sender, finish_receiver) = tokio::sync::mpsc::channel(FINISH_QUEUE);
        let pull = async {
            let result = self.pull_and_apply(&shutdown, finish_sender).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let finish = async {
            let result = self.finish(finish_receiver).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let (pull_result, finish_result) = tokio::join!(pull, finish);
        pull_result.and(finish_result)
    }

    /// Publishes each applied batch's outbox, then acknowledges the batch. Runs until the
    /// pull loop ends and everything it handed over is done.
    async fn finish(
        &self,
        mut receiver: tokio::sync::mpsc::Receiver<Finish>,
    ) -> anyhow::Result<()> {
        while let Some(done) = receiver.recv().await {
            self.publish_outbox(done.outbox_through).await?;
            for message in &done.messages {
                message.ack_with(AckKind::Ack).await.map_err(|err| {
                    anyhow::anyhow!("acking LRS_IN (applied through {}): {err}", done.through)
                })?;
            }
            self.delete_orphans().await;
        }
        Ok(())
    }

    /// Pulls in explicit requests (wait for one message, then take what else is there, up to
    /// `max_batch`), so that at shutdown nothing is delivered to this process that it has not
    /// applied and acknowledged.
    async fn pull_and_apply(
        &self,
        shutdown: &CancellationToken,
        finish: tokio::sync::mpsc::Sender<Finish>,
    ) -> anyhow::Result<()> {
        loop {
            let next =
                bus::pull::next_batch(&self.consumer, subjects::STREAM_IN, self.config.max_batch);
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                batch = next => batch?,
            };
            let Some(batch) = batch else {
                continue;
            };
            let done = self.apply_batch(batch).await?;
            if let Some(done) = done {
                finish
                    .send(done)
                    .await
                    .map_err(|_| anyhow::anyhow!("the finisher stopped"))?;
            }
        }
    }

    /// Applies and flushes a batch and announces it; returns what the finisher still owes it.
    async fn apply_batch(&self, batch: Vec<jetstream::Message>) -> anyhow::Result<Option<Finish>> {
        let db = self.db.clone();
        let validator = self.validator.clone();
        let started = std::time::Instant::now();
        let (batch, through, verdicts, outbox_through, flush_started) =
            tokio::task::spawn_blocking(move || {
                let mut verdicts = Vec::new();
                for message in &batch {
                    let Ok(info) = message.info() else {
                        continue;
                    };
                    let sequence = info.stream_sequence;
                    let version = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get("X-Experience-API-Version"))
                        .map(|value| value.as_str().to_owned());
                    let incoming = Incoming {
                        sequence,
                        subject: message.subject.as_str(),
                        payload: &message.payload,
                    };
                    let parsed =
                        ingest::parse(incoming.subject, incoming.payload, version.as_deref());
                    let verdict = db.apply(&incoming, parsed, &validator)?;
                    if verdict != Verdict::Applied {
                        // An erasure logs itself (counts only); anything else was refused.
                        if !matches!(verdict, Verdict::Erased { .. }) {
                            tracing::info!(
                                sequence,
                                subject = incoming.subject,
                                ?verdict,
                                "message not applied"
                            );
                        }
                        verdicts.push((sequence, verdict));
                    }
                }
                let flush_started = std::time::Instant::now();
                // Only what this flush covers may be published: a later batch's events could
                // still be lost to a crash.
                // Announce the contiguous watermark, not the highest sequence: a message that
                // comes back after a later one must not be reported applied early.
                let through = db.applied_sequence()?;
                let outbox_through = db.last_outbox_key()?;
                db.flush()?;
                Ok::<_, crate::db::DbError>((
                    batch,
                    through,
                    verdicts,
                    outbox_through,
                    flush_started,
                ))
            })
            .await
            .context("apply task")??;
        // Durable in sled: readers may see it now; the ack can follow.
        let messages = batch.len();
        let announcement = serde_json::to_vec(&Applied { through, verdicts })?;
        self.client
            .publish(subjects::APPLIED, announcement.into())
            .await
            .context("announcing applied watermark")?;
        tracing::debug!(
            messages,
            through,
            apply_us = (flush_started - started).as_micros() as u64,
            flush_us = flush_started.elapsed().as_micros() as u64,
            "batch applied"
        );
        Ok((!batch.is_empty()).then_some(Finish {
            messages: batch,
            through,
            outbox_through,
        }))
    }

    /// Deletes the attachment bodies an erasure left unused. A failure is retried after the
    /// next batch (the orphans stay recorded in sled until deleted).
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

    /// Publishes the outbox entries up to `through` (all, if `None`) to JetStream,
    /// deduplicated by their msg ids, then removes the published ones.
    async fn publish_outbox(&self, through: Option<sled::IVec>) -> anyhow::Result<()> {
        let db = self.db.clone();
        let entries = tokio::task::spawn_blocking(move || db.outbox(through.as_deref()))
            .await
            .context("outbox task")??;
        if entries.is_empty() {
            return Ok(());
        }
        let mut acks = Vec::with_capacity(entries.len());
        for (_, entry) in &entries {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(bus::MSG_ID_HEADER, entry.msg_id.as_str());
            let ack = self
                .js
                .publish_with_headers(entry.subject, headers, entry.payload.clone().into())
                .await
                .context("publishing outbox")?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.context("outbox publish not acknowledged")?;
        }
        let keys: Vec<sled::IVec> = entries.into_iter().map(|(key, _)| key).collect();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.remove_outbox(&keys))
            .await
            .context("outbox task")??;
        Ok(())
    }
}
