//! Health as NATS sees it: whether this process is connected, whether the streams exist, and
//! how far behind each durable consumer is. `/health/ready` and the consumer gauges at
//! `/metrics` come from here, so a load balancer and Prometheus agree.

use std::time::Duration;

use async_nats::jetstream;
use serde::Serialize;

use crate::subjects::{self, Topology};

/// What a process waits for before it calls itself ready.
#[derive(Debug, Clone)]
pub struct ReadyPolicy {
    /// Consumers of this process's own parts: each must be within `max_lag`.
    pub own: Vec<(&'static str, String)>,
    /// Consumers of which at least one must be within `max_lag` (a gateway alone: any store
    /// replica can answer it).
    pub any_of: Vec<(&'static str, String)>,
    /// Messages a consumer may have pending (undelivered and unacknowledged) and still count
    /// as caught up.
    pub max_lag: u64,
}

impl ReadyPolicy {
    /// For a process running `store`, `projector` and/or `gateway` as replica `replica`.
    pub fn for_parts(
        topology: &Topology,
        replica: &str,
        store: bool,
        projector: bool,
        gateway: bool,
        max_lag: u64,
    ) -> Self {
        let mut own = Vec::new();
        if store {
            own.push((subjects::STREAM_IN, subjects::store_consumer(replica)));
        }
        if projector {
            own.push((
                subjects::STREAM_STORED,
                subjects::projector_consumer(replica),
            ));
        }
        let any_of = if gateway && !store {
            topology
                .stores
                .iter()
                .map(|name| (subjects::STREAM_IN, subjects::store_consumer(name)))
                .collect()
        } else {
            Vec::new()
        };
        ReadyPolicy {
            own,
            any_of,
            max_lag,
        }
    }
}

/// One consumer's position.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerState {
    pub stream: String,
    pub consumer: String,
    pub pending: u64,
    pub ack_pending: u64,
    pub redelivered: u64,
}

impl ConsumerState {
    /// Messages not yet applied: undelivered plus delivered and unacknowledged.
    pub fn lag(&self) -> u64 {
        self.pending + self.ack_pending
    }
}

/// The answer of `/health/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub ready: bool,
    pub nats_connected: bool,
    pub nats_connects: u64,
    pub streams: Vec<(String, Option<u64>)>,
    pub consumers: Vec<ConsumerState>,
    /// Why not ready, in words.
    pub problems: Vec<String>,
}

/// Asks NATS (each request bounded by `timeout`) and judges by `policy`.
pub async fn check(client: &async_nats::Client, policy: &ReadyPolicy, timeout: Duration) -> Health {
    let nats_connected = client.connection_state() == async_nats::connection::State::Connected;
    let nats_connects = client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut health = Health {
        ready: false,
        nats_connected,
        nats_connects,
        streams: Vec::new(),
        consumers: Vec::new(),
        problems: Vec::new(),
    };
    if !nats_connected {
        health.problems.push("NATS is not connected".into());
        return health;
    }
    let js = jetstream::new(client.clone());
    for name in [
        subjects::STREAM_IN,
        subjects::STREAM_STORED,
        subjects::STREAM_REJECTED,
    ] {
        let messages = match tokio::time::timeout(timeout, stream_messages(&js, name)).await {
            Ok(Ok(messages)) => Some(messages),
            Ok(Err(err)) => {
                health.problems.push(format!("stream {name}: {err}"));
                None
            }
            Err(_) => {
                health
                    .problems
                    .push(format!("stream {name}: no answer in {timeout:?}"));
                None
            }
        };
        health.streams.push((name.to_owned(), messages));
    }
    let mut any_caught_up = policy.any_of.is_empty();
    let wanted = policy
        .own
        .iter()
        .map(|consumer| (consumer, true))
        .chain(policy.any_of.iter().map(|consumer| (consumer, false)));
    for ((stream, consumer), own) in wanted {
        let state = tokio::time::timeout(timeout, consumer_state(&js, stream, consumer)).await;
        match state {
            Ok(Ok(state)) => {
                let lag = state.lag();
                if own && lag > policy.max_lag {
                    health.problems.push(format!(
                        "consumer {consumer} on {stream} is {lag} messages behind (at most {} for ready)",
                        policy.max_lag
                    ));
                }
                if !own && lag <= policy.max_lag {
                    any_caught_up = true;
                }
                health.consumers.push(state);
            }
            Ok(Err(err)) if own => health
                .problems
                .push(format!("consumer {consumer} on {stream}: {err}")),
            Err(_) if own => health.problems.push(format!(
                "consumer {consumer} on {stream}: no answer in {timeout:?}"
            )),
            _ => {}
        }
    }
    if !any_caught_up {
        health.problems.push(format!(
            "no store replica is within {} messages of LRS_IN",
            policy.max_lag
        ));
    }
    health.ready = health.problems.is_empty();
    health
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> Result<u64, String> {
    let mut stream = js.get_stream(name).await.map_err(|err| err.to_string())?;
    let info = stream.info().await.map_err(|err| err.to_string())?;
    Ok(info.state.messages)
}

/// A durable consumer's position.
pub async fn consumer_state(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Result<ConsumerState, String> {
    let stream_handle = js.get_stream(stream).await.map_err(|err| err.to_string())?;
    let info = stream_handle
        .consumer_info(consumer)
        .await
        .map_err(|err| err.to_string())?;
    Ok(ConsumerState {
        stream: stream.to_owned(),
        consumer: consumer.to_owned(),
        pending: info.num_pending,
        ack_pending: info.num_ack_pending as u64,
        redelivered: info.num_redelivered as u64,
    })
}

impl Health {
    /// Sets the gauges of [`crate::metrics`] this check saw.
    pub fn record(&self) {
        use crate::metrics as m;
        metrics::gauge!(m::NATS_CONNECTED).set(f64::from(u8::from(self.nats_connected)));
        metrics::gauge!(m::NATS_CONNECTS).set(self.nats_connects as f64);
        metrics::gauge!(m::READY).set(f64::from(u8::from(self.ready)));
        for (stream, messages) in &self.streams {
            if let Some(messages) = messages {
                metrics::gauge!(m::STREAM_MESSAGES, "stream" => stream.clone())
                    .set(*messages as f64);
            }
        }
        for state in &self.consumers {
            let labels = [
                ("stream", state.stream.clone()),
                ("consumer", state.consumer.clone()),
            ];
            metrics::gauge!(m::CONSUMER_PENDING, &labels).set(state.pending as f64);
            metrics::gauge!(m::CONSUMER_ACK_PENDING, &labels).set(state.ack_pending as f64);
            metrics::gauge!(m::CONSUMER_REDELIVERED, &labels).set(state.redelivered as f64);
        }
    }
}
