//! Writes through `LRS_IN` and read-your-writes: a writer (the gateway, the operator's
//! commands) publishes, then waits until a store has applied its message and says its verdict.
//!
//! The store announces `{through, verdicts}` on `lrs.applied` after each flush. Core NATS may
//! drop an announcement (a reconnect, a gateway started later), so a waiter that hears nothing
//! for a while asks the store directly over `lrs.api.verdict`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::subjects;
use crate::wire::{Applied, Verdict, VerdictReply, VerdictRequest};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How many non-applied verdicts are remembered; rejections are rare, so this is generous.
const MAX_VERDICTS: usize = 10_000;
/// How long a waiter trusts the announcements before asking the store itself.
const ASK_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Watermarks {
    through: watch::Sender<u64>,
    /// Verdicts of sequences that were not plainly applied. Written before `through` moves,
    /// so a waiter that sees `through >= seq` also sees its verdict.
    verdicts: Arc<Mutex<BTreeMap<u64, Verdict>>>,
    client: async_nats::Client,
}

impl Watermarks {
    pub fn new(client: async_nats::Client) -> Self {
        Watermarks {
            through: watch::Sender::new(0),
            verdicts: Arc::new(Mutex::new(BTreeMap::new())),
            client,
        }
    }

    /// Follows `lrs.applied` until shutdown.
    pub async fn follow(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut announcements = self.client.subscribe(subjects::APPLIED).await?;
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = announcements.next() => message,
            };
            let Some(message) = message else {
                return Ok(());
            };
            match serde_json::from_slice::<Applied>(&message.payload) {
                Ok(applied) => self.record(applied),
                Err(err) => tracing::warn!(error = %err, "unreadable applied announcement"),
            }
        }
    }

    fn record(&self, applied: Applied) {
        if !applied.verdicts.is_empty() {
            let mut verdicts = self
                .verdicts
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            verdicts.extend(applied.verdicts);
            while verdicts.len() > MAX_VERDICTS {
                verdicts.pop_first();
            }
        }
        self.through.send_if_modified(|through| {
            let moved = applied.through > *through;
            *through = (*through).max(applied.through);
            moved
        });
    }

    fn known_verdict(&self, sequence: u64) -> Verdict {
        let verdicts = self
            .verdicts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        verdicts.get(&sequence).cloned().unwrap_or(Verdict::Applied)
    }

    /// The watermark now: what a publish made after this has to be above.
    pub fn current(&self) -> u64 {
        *self.through.borrow()
    }

    /// The store's verdict on `sequence`, or `None` if it did not come within `timeout`.
    /// `duplicate` is JetStream's word that the message was published before (a retry inside
    /// the dedup window), so it may be applied already; `before` is [`Watermarks::current`]
    /// taken before publishing.
    pub async fn wait(
        &self,
        sequence: u64,
        duplicate: bool,
        before: u64,
        timeout: Duration,
    ) -> Option<Verdict> {
        if !duplicate && sequence <= before {
            // A new message gets a sequence above every message in the stream when it was
            // published, so above every watermark announced before. One at or below such a
            // watermark means LRS_IN was recreated (or NATS's data wiped): that watermark, and
            // the verdicts of sequences from here on, belong to another stream.
            tracing::warn!(
                sequence,
                watermark = before,
                "LRS_IN restarted its sequences; waiting for the store's verdict"
            );
            self.verdicts
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .retain(|known, _| *known < sequence);
            self.through.send_if_modified(|through| {
                let stale = *through >= sequence;
                if stale {
                    *through = sequence - 1;
                }
                stale
            });
        }
        let deadline = Instant::now() + timeout;
        let mut receiver = self.through.subscribe();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let slice = remaining.min(ASK_AFTER);
            let reached =
                tokio::time::timeout(slice, receiver.wait_for(|through| *through >= sequence))
                    .await
                    .is_ok_and(|waited| waited.is_ok());
            if reached {
                return Some(self.known_verdict(sequence));
            }
            if let Some(verdict) = self.ask(sequence).await {
                return Some(verdict);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    async fn ask(&self, sequence: u64) -> Option<Verdict> {
        let to = crate::request::Ask::store(subjects::API_VERDICT, ASK_AFTER);
        crate::request::ask_json::<_, VerdictReply>(&self.client, to, &VerdictRequest { sequence })
            .await
            .ok()?
            .verdict
    }
}

/// Why a write through `LRS_IN` has no verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// NATS did not take the message, or did not confirm it: it may or may not be in `LRS_IN`.
    #[error("the message bus did not confirm the write: {0}")]
    Publish(String),
    /// In `LRS_IN`, but no store said its verdict in time: it will be applied.
    #[error("written to LRS_IN (sequence {sequence}) but not applied within {waited:?}; is a store running?")]
    NotApplied { sequence: u64, waited: Duration },
}

/// Publishes one message to `LRS_IN` and waits for the first store's verdict on it (every
/// store replica reaches the same verdict), within `timeout` for both. A publish that fails
/// (no stream leader while the cluster elects one, a connection lost with its server) is
/// sent again until `timeout`: under one `Nats-Msg-Id` (the caller's, or one made here), so
/// JetStream stores it once however many attempts reached it.
pub async fn submit(
    js: &async_nats::jetstream::Context,
    watermarks: &Watermarks,
    subject: &'static str,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Verdict, SubmitError> {
    let deadline = Instant::now() + timeout;
    publish(js, watermarks, subject, headers, payload, deadline)
        .await?
        .verdict(watermarks, deadline)
        .await
}

/// A message JetStream took into `LRS_IN`, whose verdict is still to come.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub sequence: u64,
    /// JetStream's word that the message id was seen before (see [`Watermarks::wait`]).
    pub duplicate: bool,
    /// The watermark before publishing.
    pub before: u64,
    /// How long the writer gave itself, from its start.
    pub timeout: Duration,
}

impl Published {
    /// The first store's verdict on the message, if it comes before `deadline`.
    pub async fn verdict(
        &self,
        watermarks: &Watermarks,
        deadline: Instant,
    ) -> Result<Verdict, SubmitError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        watermarks
            .wait(self.sequence, self.duplicate, self.before, remaining)
            .await
            .ok_or(SubmitError::NotApplied {
                sequence: self.sequence,
                waited: self.timeout,
            })
    }
}

/// The publishing half of [`submit`]: sends the message until JetStream takes it or
/// `deadline` passes.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    watermarks: &Watermarks,
    subject: &'static str,
    mut headers: async_nats::HeaderMap,
    payload: Vec<u8>,
    deadline: Instant,
) -> Result<Published, SubmitError> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    if headers.get(crate::MSG_ID_HEADER).is_none() {
        let unique = watermarks.client.new_inbox();
        let id = unique.rsplit('.').next().unwrap_or(&unique).to_owned();
        headers.insert(crate::MSG_ID_HEADER, format!("w-{id}").as_str());
    }
    let payload = bytes::Bytes::from(payload);
    let before = watermarks.current();
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = async {
            js.publish_with_headers(subject, headers.clone(), payload.clone())
                .await?
                .await
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let failure = match tokio::time::timeout(remaining, attempt).await {
            Ok(Ok(ack)) => {
                return Ok(Published {
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                    before,
                    timeout,
                })
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no acknowledgement in time".to_owned(),
        };
        if Instant::now() + pause >= deadline {
            return Err(SubmitError::Publish(failure));
        }
        tracing::debug!(error = %failure, "publishing to LRS_IN failed; sending it again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
