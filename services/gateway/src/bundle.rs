//! Small statement writes that arrive together go to `LRS_IN` as one message: one JetStream
//! write, one message for the store to apply and announce, and each request still answered
//! by its own part's verdict ([`bus::wire::Verdict::Parts`]).
//!
//! No timer decides a bundle. At most [`IN_FLIGHT`] message of small writes is on its way at
//! a time (published, verdict not yet heard); the writes that arrive meanwhile wait, and go
//! out together as one message when it comes back. A write that finds no message out goes at
//! once, alone, so a quiet gateway answers as fast as without bundles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::subjects;
use bus::watermark::{SubmitError, Watermarks};
use bus::wire::Verdict;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Messages of small writes on their way at once. Single-statement POSTs from 32 clients
/// (BENCHMARKS.md, "Twenty-third round"): 1 made ~1,980 statements/s, 2 ~1,820, 4 ~1,680,
/// 8 ~1,470, 16 ~1,360: fewer, larger messages cost the pipeline less than more of them
/// overlapping.
pub const IN_FLIGHT: usize = 1;
/// A request's batch up to this size may be bundled; a larger one is a message of its own.
const MOST_BYTES_BUNDLED: usize = 32 * 1024;
/// The most requests in one bundle, and its most bytes (below NATS's `max_payload`).
const MOST_PARTS: usize = 256;
const MOST_BYTES: usize = 512 * 1024;
/// Writes waiting for a place in a bundle; more wait for room in this queue.
const QUEUE: usize = 1024;

/// One request's write, waiting for its bundle.
struct Waiting {
    /// The request's own `Nats-Msg-Id`, used when it goes alone.
    msg_id: String,
    /// Its [`bus::wire::HttpBatch`], as JSON.
    payload: Vec<u8>,
    deadline: Instant,
    answer: oneshot::Sender<Result<Verdict, SubmitError>>,
}

/// How the gateway sends statement writes to `LRS_IN`, bundled or alone; cheap to clone.
#[derive(Clone)]
pub struct Bundler {
    queue: mpsc::Sender<Waiting>,
    js: async_nats::jetstream::Context,
    watermarks: Watermarks,
}

impl Bundler {
    /// Starts the task that bundles and publishes; it ends when the last handle is dropped.
    pub fn start(js: async_nats::jetstream::Context, watermarks: Watermarks) -> Bundler {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(bundle_and_publish(js.clone(), watermarks.clone(), waiting));
        Bundler {
            queue,
            js,
            watermarks,
        }
    }

    /// Publishes a request's batch (`payload`, under `msg_id`) and waits for the store's
    /// verdict on it, within `timeout`: a small one with whatever small writes wait with it,
    /// a larger one as a message of its own.
    pub async fn submit(
        &self,
        msg_id: String,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Verdict, SubmitError> {
        if payload.len() > MOST_BYTES_BUNDLED {
            metrics::counter!(bus::metrics::STATEMENT_WRITES, "sent" => "alone").increment(1);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(bus::MSG_ID_HEADER, msg_id.as_str());
            return bus::watermark::submit(
                &self.js,
                &self.watermarks,
                subjects::IN_HTTP,
                headers,
                payload,
                timeout,
            )
            .await;
        }
        let deadline = Instant::now() + timeout;
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            msg_id,
            payload,
            deadline,
            answer,
        };
        let not_sent = || SubmitError::Publish("the gateway is shutting down".into());
        self.queue.send(waiting).await.map_err(|_| not_sent())?;
        // Never longer than a write alone would wait, even behind a bundle that waits for a
        // store that does not answer.
        match tokio::time::timeout_at(deadline.into(), answered).await {
            Ok(answer) => answer.map_err(|_| not_sent())?,
            Err(_) => Err(SubmitError::Publish(
                "no verdict in time (the write waited to be bundled)".into(),
            )),
        }
    }
}

async fn bundle_and_publish(
    js: async_nats::jetstream::Context,
    watermarks: Watermarks,
    mut waiting: mpsc::Receiver<Waiting>,
) {
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Waiting> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the messages before were out goes together.
        let mut bytes = first.payload.len();
        let mut parts = vec![first];
        while parts.len() < MOST_PARTS {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            if bytes + next.payload.len() + 1 > MOST_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.payload.len() + 1;
            parts.push(next);
        }
        let (js, watermarks) = (js.clone(), watermarks.clone());
        tokio::spawn(async move {
            publish_parts(&js, &watermarks, parts).await;
            drop(permit);
        });
    }
}

/// Publishes `parts` as one message (a bundle if more than one), waits for the verdict and
/// answers each part with its own.
async fn publish_parts(
    js: &async_nats::jetstream::Context,
    watermarks: &Watermarks,
    parts: Vec<Waiting>,
) {
    // A write that waited past its time is not sent: its client hears so and may retry.
    let now = Instant::now();
    let (mut parts, late): (Vec<Waiting>, Vec<Waiting>) =
        parts.into_iter().partition(|part| part.deadline > now);
    for part in late {
        let _ = part.answer.send(Err(SubmitError::Publish(
            "no room to publish the write in time".into(),
        )));
    }
    if parts.is_empty() {
        return;
    }
    let deadline = parts
        .iter()
        .map(|part| part.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let mut headers = async_nats::HeaderMap::new();
    let payload = if let [alone] = parts.as_mut_slice() {
        headers.insert(bus::MSG_ID_HEADER, alone.msg_id.as_str());
        std::mem::take(&mut alone.payload)
    } else {
        // The same requests bundled again (a publish sent again) keep one id; a request retried
        // by its client lands in another bundle, and the store finds its statements stored.
        let ids: Vec<&str> = parts.iter().map(|part| part.msg_id.as_str()).collect();
        let digest = xxhash_rust::xxh3::xxh3_128(ids.join(",").as_bytes());
        headers.insert(bus::MSG_ID_HEADER, format!("bundle-{digest:032x}").as_str());
        headers.insert(bus::PARTS_HEADER, parts.len().to_string().as_str());
        let mut payload = Vec::with_capacity(parts.iter().map(|p| p.payload.len() + 1).sum());
        payload.push(b'[');
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                payload.push(b',');
            }
            payload.extend_from_slice(&part.payload);
        }
        payload.push(b']');
        payload
    };
    let verdict = match bus::watermark::publish(
        js,
        watermarks,
        subjects::IN_HTTP,
        headers,
        payload,
        deadline,
    )
    .await
    {
        Ok(published) => published.verdict(watermarks, deadline).await,
        Err(err) => Err(err),
    };
    let bundled = parts.len() > 1;
    let sent = if bundled { "bundled" } else { "alone" };
    metrics::counter!(bus::metrics::STATEMENT_WRITES, "sent" => sent).increment(parts.len() as u64);
    for (index, part) in parts.into_iter().enumerate() {
        let answer = match &verdict {
            Ok(verdict) if bundled => Ok(verdict.part(index)),
            Ok(verdict) => Ok(verdict.clone()),
            Err(err) => Err(err.clone()),
        };
        // A request that stopped waiting (its client went away) needs no answer.
        let _ = part.answer.send(answer);
    }
}
