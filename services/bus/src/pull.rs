//! Pulling from a stream in explicit requests: wait for one message, then take what else is
//! there, up to a batch size. A service that stops between requests has nothing delivered
//! that it has not applied and acknowledged (a continuous pull would keep messages in flight
//! that only come back after `ack_wait`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::Consumer};
use futures::StreamExt;

/// How long one pull request waits for a first message before it is renewed.
pub const PULL_WAIT: Duration = Duration::from_secs(5);

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
        consumer = handle
            .update_consumer(config)
            .await
            .map_err(|err| failed("updating the durable consumer", stream, err))?;
    }
    Ok(consumer)
}

/// The next batch: waits up to [`PULL_WAIT`] for a first message (`None` if none came), then
/// adds whatever else is available, up to `max_batch` in all.
pub async fn next_batch(
    consumer: &Consumer<pull::Config>,
    stream: &str,
    max_batch: usize,
) -> Result<Option<Vec<jetstream::Message>>, PullError> {
    let mut one = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_WAIT)
        .messages()
        .await
        .map_err(|err| failed("pulling", stream, err))?;
    let Some(first) = one.next().await else {
        return Ok(None);
    };
    let mut batch = vec![first.map_err(|err| failed("receiving", stream, err))?];
    if max_batch > 1 {
        let mut rest = consumer
            .fetch()
            .max_messages(max_batch - 1)
            .messages()
            .await
            .map_err(|err| failed("pulling", stream, err))?;
        while let Some(message) = rest.next().await {
            batch.push(message.map_err(|err| failed("receiving", stream, err))?);
        }
    }
    Ok(Some(batch))
}
