//! One target's loop: pull a batch of `LRS_STORED`, deliver its matching stored statements
//! in order, acknowledge; between batches, replay the dead letters when asked.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bus::metrics as m;
use bus::pull::{Pulled, Puller};
use bus::subjects;
use bus::targets::{DeadLetter, Target, Targets};
use bus::wire::{EventKind, StatementQuery, StatementReply, StoredEvents};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::deliver::{post, Outcome};

/// Seconds `LRS_STORED` waits for an acknowledgement before it redelivers (progress acks keep
/// a batch that is being retried).
const ACK_WAIT: Duration = Duration::from_secs(30);

pub struct TargetTask {
    client: async_nats::Client,
    targets: Targets,
    http: reqwest::Client,
    target: Target,
    max_backoff: Duration,
    replay: tokio::sync::watch::Receiver<u64>,
}

impl TargetTask {
    pub fn new(
        client: async_nats::Client,
        targets: Targets,
        http: reqwest::Client,
        target: Target,
        max_backoff: Duration,
        replay: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        TargetTask {
            client,
            targets,
            http,
            target,
            max_backoff,
            replay,
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let name = self.target.name.clone();
        let consumer = subjects::target_consumer(&name);
        let mut puller = loop {
            match Puller::open(
                self.client.clone(),
                subjects::STREAM_STORED,
                &consumer,
                ACK_WAIT,
                self.target.batch,
            )
            .await
            {
                Ok(puller) => break puller,
                Err(err) => {
                    tracing::warn!(target = %name, error = %err, "the target's consumer is not reachable yet");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let progress = tokio::spawn(bus::pull::keep_in_progress(
            self.client.clone(),
            puller.in_flight(),
            ACK_WAIT,
            stop.clone(),
        ));
        if self.target.replay_requested.is_some() {
            self.replay(&stop).await;
        }
        loop {
            let pulled = tokio::select! {
                changed = self.replay.changed() => {
                    if changed.is_ok() {
                        self.replay(&stop).await;
                    }
                    continue;
                }
                pulled = puller.next(&stop) => pulled,
            };
            let batch = match pulled {
                Pulled::Batch(batch) => batch,
                Pulled::Nothing if stop.is_cancelled() => break,
                Pulled::Nothing => continue,
                Pulled::Failed => {
                    puller.reopen().await;
                    continue;
                }
            };
            if !self.deliver_batch(&batch, &stop).await {
                break;
            }
            for message in &batch {
                // A lost ack means the batch comes again: at least once.
                if let Err(err) = message.ack_with(AckKind::Ack).await {
                    tracing::warn!(target = %name, error = %err, "acknowledging failed; the batch may be delivered again");
                }
                puller.in_flight().done(message);
            }
            if let Some(pending) = batch
                .last()
                .and_then(|message| message.info().ok())
                .map(|info| info.pending)
            {
                metrics::gauge!(m::DELIVERY_PENDING, "target" => name.clone()).set(pending as f64);
            }
        }
        progress.abort();
    }

    /// Delivers the batch's matching stored statements; false if stopped before done.
    async fn deliver_batch(&self, batch: &[jetstream::Message], stop: &CancellationToken) -> bool {
        let mut statements = Vec::new();
        for message in batch {
            let Ok(events) = serde_json::from_slice::<StoredEvents>(&message.payload) else {
                tracing::warn!(target = %self.target.name, "an unreadable LRS_STORED message skipped");
                continue;
            };
            for event in events.events {
                if event.kind != EventKind::Stored || !self.target.filter.matches(&event.statement)
                {
                    continue;
                }
                statements.push(event.statement);
            }
        }
        // An event too large for a message carries a slimmed statement: the whole one comes
        // from the store.
        for statement in statements.iter_mut() {
            if statement.get("authority").is_none() {
                if let Some(whole) = self.whole(statement, stop).await {
                    *statement = whole;
                } else {
                    return false;
                }
            }
        }
        for chunk in statements.chunks(self.target.batch.max(1)) {
            let chunk: Vec<&Value> = chunk.iter().collect();
            if !self.deliver(&chunk, stop).await {
                return false;
            }
        }
        true
    }

    /// The whole stored statement of a slimmed one (voided ones too), retried while the store
    /// does not answer; `None` only when stopped.
    async fn whole(&self, slim: &Value, stop: &CancellationToken) -> Option<Value> {
        let id = slim.get("id").and_then(Value::as_str)?.to_owned();
        loop {
            for voided in [false, true] {
                let query = StatementQuery {
                    statement_id: (!voided).then(|| id.clone()),
                    voided_statement_id: voided.then(|| id.clone()),
                    ..StatementQuery::default()
                };
                let to =
                    bus::request::Ask::store(subjects::API_STATEMENTS, Duration::from_secs(10));
                if let Ok(StatementReply::One {
                    statement: Some(statement),
                    ..
                }) = bus::request::ask_json(&self.client, to, &query).await
                {
                    return Some(statement);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Delivers one chunk, retrying with a growing pause; a chunk the target refuses is tried
    /// one statement at a time, and what it still refuses (or, for a webhook, what fails
    /// `max_attempts` times) goes to the dead-letter list. False if stopped before done.
    async fn deliver(&self, chunk: &[&Value], stop: &CancellationToken) -> bool {
        let name = self.target.name.clone();
        let mut attempts = 0u32;
        let mut pause = Duration::from_millis(100);
        loop {
            attempts += 1;
            let started = std::time::Instant::now();
            let outcome = post(&self.http, &self.target, chunk).await;
            metrics::histogram!(m::DELIVERY_SECONDS, "target" => name.clone())
                .record(started.elapsed().as_secs_f64());
            let reason = match outcome {
                Outcome::Delivered => {
                    metrics::counter!(m::DELIVERED, "target" => name.clone())
                        .increment(chunk.len() as u64);
                    return true;
                }
                Outcome::Refused(reason) if chunk.len() > 1 => {
                    tracing::warn!(target = %name, %reason, "a batch refused; trying its statements one by one");
                    for statement in chunk {
                        if !Box::pin(self.deliver(&[statement], stop)).await {
                            return false;
                        }
                    }
                    return true;
                }
                Outcome::Refused(reason) => {
                    self.bury(chunk, &reason, attempts).await;
                    return true;
                }
                Outcome::Retry(reason) => reason,
            };
            metrics::counter!(m::DELIVERY_FAILURES, "target" => name.clone()).increment(1);
            if self.target.max_attempts > 0 && attempts >= self.target.max_attempts {
                self.bury(chunk, &reason, attempts).await;
                return true;
            }
            tracing::warn!(target = %name, %reason, attempts, retry_in = ?pause, "delivery failed; trying again");
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(self.max_backoff);
        }
    }

    async fn bury(&self, chunk: &[&Value], reason: &str, attempts: u32) {
        let failed = xapi::time::format_timestamp(chrono::Utc::now());
        for statement in chunk {
            let letter = DeadLetter {
                sequence: 0,
                target: self.target.name.clone(),
                statement: (*statement).clone(),
                reason: reason.to_owned(),
                attempts,
                failed: failed.clone(),
            };
            // Kept trying: a statement is dropped only once it is on the list.
            loop {
                match self.targets.bury(&letter).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(target = %self.target.name, error = %err, "cannot write a dead letter yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        metrics::counter!(m::DEAD_LETTERS, "target" => self.target.name.clone())
            .increment(chunk.len() as u64);
        tracing::error!(target = %self.target.name, statements = chunk.len(), %reason, attempts, "gave up; on the dead-letter list");
    }

    /// Delivers the dead letters again, oldest first, one POST each; those delivered leave
    /// the list, the others stay (with their new reason).
    async fn replay(&self, stop: &CancellationToken) {
        let name = &self.target.name;
        let letters = match self.targets.dead_letters(name, usize::MAX).await {
            Ok(letters) => letters,
            Err(err) => {
                tracing::warn!(target = %name, error = %err, "cannot read the dead letters");
                return;
            }
        };
        let (mut delivered, mut failed) = (0, 0);
        for letter in letters {
            if stop.is_cancelled() {
                return;
            }
            match post(&self.http, &self.target, &[&letter.statement]).await {
                Outcome::Delivered => {
                    delivered += 1;
                    metrics::counter!(m::DELIVERED, "target" => name.clone()).increment(1);
                    if let Err(err) = self.targets.forget(letter.sequence).await {
                        tracing::warn!(target = %name, error = %err, "a replayed dead letter stays listed");
                    }
                }
                Outcome::Retry(_) | Outcome::Refused(_) => failed += 1,
            }
        }
        tracing::info!(target = %name, delivered, failed, "dead letters replayed");
        if let Err(err) = self.targets.replayed(name).await {
            tracing::warn!(target = %name, error = %err, "cannot clear the replay request");
        }
    }
}
