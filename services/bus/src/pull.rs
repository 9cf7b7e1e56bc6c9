//! Pulling from a stream in explicit requests: wait for one message, then take what else is
//! there, up to a batch size. A service that stops between requests has nothing delivered
//! that it has not applied and acknowledged (a continuous pull would keep messages in flight
//! that only come back after `ack_wait`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::Consumer};
use futures::StreamExt;

/// How long one pull request waits for a first message before it is renewed.
pub const PULL_WAIT: Duration = Duration::from_secs(5);
/// Beyond [`PULL_WAIT`], how long a pull may go unanswered before it counts as failed.
const PULL_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[error("{what} on stream {stream}: {reason}")]
pub struct PullError {
    what: &'static str,
    stream: String,
    reason: String,
}

fn failed(what: &'static str, stream: &str, reason: impl std::fmt::Display) -> PullError {
    PullError {
        what,
        stream: stream.to_owned(),
        reason: reason.to_string(),
    }
}

/// The configuration of a durable consumer acknowledged message by message: JetStream may
/// redeliver an earlier message after a later one, and a cumulative ack would acknowledge it
/// unapplied.
pub fn durable_config(name: &str, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}

/// The durable consumer `name` on `stream` (see [`durable_config`]), with this `ack_wait`
/// even if it was created earlier with another.
pub async fn durable(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    ack_wait: Duration,
) -> Result<Consumer<pull::Config>, PullError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|err| failed("opening", stream, err))?;
    let config = durable_config(name, ack_wait);
    let mut consumer = handle
        .get_or_create_consumer(name, config.clone())
        .await
        .map_err(|err| failed("creating the durable consumer", stream, err))?;
    // The info came with the consumer: no second request at start.
    if consumer.cached_info().config.ack_wait != ack_wait {
        // Where it starts cannot change (a restored replica's starts after its backup).
        let config = pull::Config {
            deliver_policy: consumer.cached_info().config.deliver_policy,
            ..config
        };
        consumer = handle
            .update_consumer(config)
            .await
            .map_err(|err| failed("updating the durable consumer", stream, err))?;
    }
    Ok(consumer)
}

/// Bytes of messages one batch takes at most beyond its first, so that a batch of large
/// messages (8 MB each at most) does not put gigabytes in memory; at least two of the largest
/// messages the server takes.
pub fn batch_bytes(max_payload: usize) -> usize {
    (32 * 1024 * 1024).max(max_payload.saturating_mul(2))
}

/// A batch whose first message had at least this many messages behind it on the consumer
/// does not linger: the consumer is behind, and what is there fills the batch. Lingering then
/// only delayed every message of it (a projector applying batches of 100 statements spent
/// 25 ms of each ~150 ms cycle waiting with messages pending; BENCHMARKS.md, the fortieth
/// round).
pub const LINGER_UNLESS_BEHIND: u64 = 1;

/// The next batch: waits up to [`PULL_WAIT`] for a first message (`None` if none came), then
/// adds whatever else is available, up to `max_batch` messages and [`batch_bytes`] in all;
/// with a `linger`, what else arrives within it too, until the batch is full, unless the
/// first message had [`LINGER_UNLESS_BEHIND`] or more behind it. `shutdown` ends
/// the wait for a first message (`None`); a batch begun is completed and returned, to be
/// applied and acknowledged rather than left to come back after `ack_wait`.
pub async fn next_batch(
    consumer: &Consumer<pull::Config>,
    stream: &str,
    max_batch: usize,
    max_bytes: usize,
    linger: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Vec<jetstream::Message>>, PullError> {
    let mut one = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|err| failed("pulling", stream, err))?;
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        first = one.next() => first,
    };
    let Some(first) = first else {
        return Ok(None);
    };
    let first = first.map_err(|err| failed("receiving", stream, err))?;
    // Messages behind the first: a backlog fills the batch without waiting.
    let behind = first.info().map_or(0, |info| info.pending);
    let mut batch = vec![first];
    if max_batch > 1 {
        let rest = if linger.is_zero() || behind >= LINGER_UNLESS_BEHIND {
            consumer
                .fetch()
                .max_messages(max_batch - 1)
                .max_bytes(max_bytes)
                .messages()
                .await
        } else {
            consumer
                .batch()
                .max_messages(max_batch - 1)
                .max_bytes(max_bytes)
                .expires(linger)
                .messages()
                .await
        };
        let mut rest = rest.map_err(|err| failed("pulling", stream, err))?;
        while let Some(message) = rest.next().await {
            match message {
                Ok(message) => batch.push(message),
                Err(err) => {
                    // A status that ends the request early (409 "Batch Completed" after a
                    // consumer's leader moved, say): what came is applied; failing the batch
                    // would leave its first message unacknowledged, to come back after
                    // `ack_wait` and end the same way, again and again.
                    tracing::debug!(error = %err, stream, "a pull ended early");
                    break;
                }
            }
        }
    }
    Ok(Some(batch))
}

/// Messages pulled and not yet acknowledged, by reply subject. [`keep_in_progress`] tells
/// JetStream they are being worked on, so `ack_wait` can be short (a message delivered to a
/// process that died comes back within seconds) without redelivering long work.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    fn locked(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn add(&self, messages: &[jetstream::Message]) {
        let mut in_flight = self.locked();
        for message in messages {
            if let Some(reply) = &message.reply {
                in_flight.insert(reply.to_string());
            }
        }
    }

    pub fn done(&self, message: &jetstream::Message) {
        self.done_reply(message.reply.as_ref());
    }

    fn done_reply(&self, reply: Option<&async_nats::Subject>) {
        if let Some(reply) = reply {
            self.locked().remove(reply.as_str());
        }
    }

    pub fn len(&self) -> usize {
        self.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.locked().is_empty()
    }
}

/// What acknowledging a message applied takes, without the message. A message's payload is a
/// slice of the read buffer of the NATS connection it came on, and keeps that whole chunk of
/// the buffer alive, the other messages' bytes with it: the projector held its messages until
/// the checkpoint that acknowledges them (every second), the store until its outbox was
/// published, and at the peak of an ingest 84 MB of the node's heap were read buffers held so
/// (a heap profile of `leerspoor bench --targets --size 300000`; BENCHMARKS.md, the
/// forty-first round). Made once a message is applied; the payload goes with the message.
pub struct Ack {
    reply: Option<async_nats::Subject>,
    acker: jetstream::message::Acker,
}

impl From<jetstream::Message> for Ack {
    fn from(message: jetstream::Message) -> Ack {
        let reply = message.reply.clone();
        let (_, acker) = message.split();
        Ack { reply, acker }
    }
}

impl Ack {
    /// Sends the acknowledgement `kind` and takes the message off `in_flight`.
    pub async fn send(
        &self,
        kind: jetstream::AckKind,
        in_flight: &InFlight,
    ) -> Result<(), async_nats::Error> {
        let sent = self.acker.ack_with(kind).await;
        in_flight.done_reply(self.reply.as_ref());
        sent
    }
}

/// Until `shutdown`, sends a progress acknowledgement (`+WPI`) for every message in flight
/// three times per `ack_wait`.
pub async fn keep_in_progress(
    client: async_nats::Client,
    in_flight: InFlight,
    ack_wait: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = (ack_wait / 3).max(Duration::from_millis(200));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let replies: Vec<String> = in_flight.locked().iter().cloned().collect();
        for reply in replies {
            // A lost progress ack only risks a harmless redelivery.
            let _ = client.publish(reply, "+WPI".into()).await;
        }
    }
}

/// Pauses that grow from 100 ms to 5 s while a failure lasts (NATS away, a pull refused).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Waits the next pause; false if shutdown came first.
    pub async fn wait(&mut self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        let pause = Duration::from_millis(100u64.saturating_mul(1 << self.failures.min(6)))
            .min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

/// What [`Puller::next`] brought.
pub enum Pulled {
    Batch(Vec<jetstream::Message>),
    /// Nothing arrived within [`PULL_WAIT`], or shutdown came.
    Nothing,
    /// The pull failed (NATS away, the consumer gone) and the backoff pause is over: the
    /// caller checks what it must and calls [`Puller::reopen`].
    Failed,
}

/// A durable pull consumer that rides through NATS outages: a failed pull is logged and
/// followed by a growing pause, after which the consumer can be made again; every batch is
/// registered in flight, for [`keep_in_progress`]. Store and projector pull with one each.
pub struct Puller {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: &'static str,
    name: String,
    ack_wait: Duration,
    max_batch: usize,
    /// How long a batch waits for more messages after its first (zero: takes what is there).
    linger: Duration,
    consumer: Consumer<pull::Config>,
    backoff: Backoff,
    in_flight: InFlight,
}

impl Puller {
    /// The durable consumer `name` on `stream` (see [`durable`]), pulled `max_batch` messages
    /// at a time at most.
    pub async fn open(
        client: async_nats::Client,
        stream: &'static str,
        name: &str,
        ack_wait: Duration,
        max_batch: usize,
    ) -> Result<Puller, PullError> {
        let js = jetstream::new(client.clone());
        let consumer = durable(&js, stream, name, ack_wait).await?;
        Ok(Puller {
            client,
            js,
            stream,
            name: name.to_owned(),
            ack_wait,
            max_batch,
            linger: Duration::ZERO,
            consumer,
            backoff: Backoff::default(),
            in_flight: InFlight::default(),
        })
    }

    /// Batches wait up to `linger` after their first message for more, until full: fewer,
    /// fuller batches for a consumer whose cost is per batch (a sled flush, a pull request)
    /// and whose latency nobody waits on.
    pub fn with_linger(mut self, linger: Duration) -> Puller {
        self.linger = linger;
        self
    }

    /// The messages pulled and not yet acknowledged.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// The next batch (see [`next_batch`]), at most [`batch_bytes`] beyond its first message.
    pub async fn next(&mut self, shutdown: &tokio_util::sync::CancellationToken) -> Pulled {
        let max_bytes = batch_bytes(self.client.server_info().max_payload);
        // A pull whose server died answers nothing, not even its expiry: bounded here, so the
        // consumer is made again (through another server) instead of waiting forever.
        let pulled = tokio::time::timeout(
            PULL_WAIT + PULL_GRACE,
            next_batch(
                &self.consumer,
                self.stream,
                self.max_batch,
                max_bytes,
                self.linger,
                shutdown,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(failed(
                "pulling",
                self.stream,
                format!("no answer within {:?}", PULL_WAIT + PULL_GRACE),
            ))
        });
        match pulled {
            Ok(Some(batch)) => {
                self.backoff.reset();
                self.in_flight.add(&batch);
                Pulled::Batch(batch)
            }
            Ok(None) => Pulled::Nothing,
            Err(err) => {
                tracing::warn!(error = %err, "pulling failed; retrying");
                if !self.backoff.wait(shutdown).await {
                    return Pulled::Nothing;
                }
                Pulled::Failed
            }
        }
    }

    /// Makes the durable consumer again (it may have gone with a NATS restart); keeps the old
    /// one while NATS does not answer.
    pub async fn reopen(&mut self) {
        match durable(&self.js, self.stream, &self.name, self.ack_wait).await {
            Ok(consumer) => self.consumer = consumer,
            Err(err) => tracing::debug!(error = %err, "the consumer is not reachable yet"),
        }
    }
}

/// The last sequence of a stream, as its info says now (`None` when NATS does not answer).
pub async fn stream_last(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let mut handle = js.get_stream(stream).await.ok()?;
    handle
        .info()
        .await
        .ok()
        .map(|info| info.state.last_sequence)
}
