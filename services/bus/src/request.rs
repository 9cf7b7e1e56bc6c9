//! Request/reply between Leerspoor's services, written once: the asking side ([`ask`],
//! [`ask_json`]) and what a serving replica needs to honour read-your-writes
//! ([`min_applied`], [`behind`]).
//!
//! Reads go to a queue group of replicas, and any one of them may answer. A caller that needs
//! its own writes in the answer says which `LRS_IN` sequence that takes (the
//! [`MIN_APPLIED_HEADER`]); a replica that has not applied that far waits a moment, and if it
//! is still behind it says so ([`BEHIND_HEADER`]) instead of answering from an older state,
//! and the caller asks again (NATS picks a queue member at random, so the next ask may reach
//! a replica that is caught up).
//!
//! A replica in the caller's own process (`leerspoor serve`) is asked first, without the trip
//! through nats-server ([`Here`], [`ask_here_first`]): a page of statements is ~140 KB that
//! would otherwise go from the store to nats-server and back into the same process, a
//! quarter of the page's CPU (BENCHMARKS.md, the thirtieth and thirty-sixth rounds). It
//! answers only from a state that includes what the request needs, as over NATS; when it has
//! not applied that far, the request goes to the queue group as before.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Request header: the `LRS_IN` sequence the answer must include (decimal).
pub const MIN_APPLIED_HEADER: &str = "Lrs-Min-Applied";
/// Reply header: this replica has not applied what the request needs; its applied sequence.
pub const BEHIND_HEADER: &str = "Lrs-Behind";

/// How long a read from a replica may take before it is sent again: a page of statements or a
/// summary takes milliseconds; no answer within this means the request was lost (its NATS
/// server or its replica died) and another replica should be asked.
pub const READ_ATTEMPT: Duration = Duration::from_secs(2);

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{1} did not answer within {0:?}")]
    Timeout(Duration, &'static str),
    #[error("{service} is unavailable ({reason})")]
    Unavailable {
        service: &'static str,
        reason: String,
    },
    #[error("unreadable reply from {service}: {reason}")]
    Unreadable {
        service: &'static str,
        reason: String,
    },
    #[error("{service} refused: {message}")]
    Refused {
        service: &'static str,
        message: String,
    },
}

/// Where a request goes and how long the caller waits.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub subject: &'static str,
    /// Who answers, for error messages: "the store", "the projector".
    pub service: &'static str,
    pub timeout: Duration,
    /// The `LRS_IN` sequence the answer must include (0: any state will do).
    pub min_applied: u64,
    /// How long one attempt waits before the request is sent again (a read is safe to
    /// repeat): a request sent on a connection that died with its NATS server gets no
    /// answer, and a replica that died with a request in hand answers nothing either.
    pub attempt: Duration,
}

impl Ask {
    /// A request to the store's replicas.
    pub fn store(subject: &'static str, timeout: Duration) -> Ask {
        Ask {
            subject,
            service: "the store",
            timeout,
            min_applied: 0,
            attempt: timeout,
        }
    }

    /// A request to the projector's replicas.
    pub fn projector(subject: &'static str, timeout: Duration) -> Ask {
        Ask {
            service: "the projector",
            ..Ask::store(subject, timeout)
        }
    }

    /// The same, answered only from a state that includes `sequence`.
    pub fn after(self, sequence: u64) -> Ask {
        Ask {
            min_applied: sequence,
            ..self
        }
    }

    /// The same, sent again when an attempt got no answer within `attempt`.
    pub fn retrying_every(self, attempt: Duration) -> Ask {
        Ask { attempt, ..self }
    }
}

/// Sends one request and returns the reply's payload. Asks again, until `ask.timeout`, while
/// the replica that answers is behind, while no replica is there to answer (they are
/// reconnecting), and when an attempt got no answer within `ask.attempt`.
pub async fn ask(client: &async_nats::Client, ask: Ask, payload: Bytes) -> Result<Bytes, AskError> {
    let deadline = Instant::now() + ask.timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        if ask.min_applied > 0 {
            headers.insert(MIN_APPLIED_HEADER, ask.min_applied.to_string().as_str());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = remaining.min(ask.attempt);
        // The client's own request timeout (10 s by default) would end a longer attempt (a
        // snapshot of a large store) early, and the request would be sent again: each
        // request says how long it waits.
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload.clone())
            .timeout(Some(wait));
        let attempt = tokio::time::timeout(wait, client.send_request(ask.subject, request)).await;
        let failure = match attempt {
            Ok(Ok(reply)) => {
                let behind = reply
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(BEHIND_HEADER))
                    .is_some();
                if !behind {
                    return Ok(reply.payload);
                }
                None
            }
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => None,
        };
        if Instant::now() + pause >= deadline {
            return Err(match failure {
                Some(reason) => AskError::Unavailable {
                    service: ask.service,
                    reason,
                },
                None => AskError::Timeout(ask.timeout, ask.service),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A replica of this process that answers requests without NATS: the store's or the
/// projector's request side, handed to the gateway when they run in its process.
pub trait Here: Send + Sync {
    /// The answer to `payload` on `subject`, as the replica would send it over NATS; `None`
    /// when this replica has not applied `min_applied` within the wait a NATS request gets
    /// (the caller then asks the queue group).
    fn answer(
        &self,
        subject: &'static str,
        payload: Bytes,
        min_applied: u64,
    ) -> futures::future::BoxFuture<'static, Option<Bytes>>;
}

/// [`ask`], answered by `here` when it is given and has applied what the request needs;
/// counted in [`crate::metrics::READS`] by the way it was answered.
pub async fn ask_here_first(
    here: Option<&dyn Here>,
    client: &async_nats::Client,
    to: Ask,
    payload: Bytes,
) -> Result<Bytes, AskError> {
    let service = if to.subject == crate::subjects::API_SUMMARIES {
        "projector"
    } else {
        "store"
    };
    if let Some(here) = here {
        if let Some(answer) = here
            .answer(to.subject, payload.clone(), to.min_applied)
            .await
        {
            metrics::counter!(crate::metrics::READS, "service" => service, "via" => "process")
                .increment(1);
            return Ok(answer);
        }
    }
    metrics::counter!(crate::metrics::READS, "service" => service, "via" => "nats").increment(1);
    ask(client, to, payload).await
}

/// [`ask`] with a JSON request and a JSON reply.
pub async fn ask_json<Request: Serialize, Reply: DeserializeOwned>(
    client: &async_nats::Client,
    to: Ask,
    request: &Request,
) -> Result<Reply, AskError> {
    let reply = ask(client, to, encode(to, request)?).await?;
    decode(to, &reply)
}

/// [`ask_here_first`] with a JSON request and a JSON reply.
pub async fn ask_json_here_first<Request: Serialize, Reply: DeserializeOwned>(
    here: Option<&dyn Here>,
    client: &async_nats::Client,
    to: Ask,
    request: &Request,
) -> Result<Reply, AskError> {
    let reply = ask_here_first(here, client, to, encode(to, request)?).await?;
    decode(to, &reply)
}

fn encode<Request: Serialize>(to: Ask, request: &Request) -> Result<Bytes, AskError> {
    serde_json::to_vec(request)
        .map(Bytes::from)
        .map_err(|err| AskError::Unreadable {
            service: to.service,
            reason: format!("cannot encode the request: {err}"),
        })
}

fn decode<Reply: DeserializeOwned>(to: Ask, reply: &[u8]) -> Result<Reply, AskError> {
    serde_json::from_slice(reply).map_err(|err| AskError::Unreadable {
        service: to.service,
        reason: err.to_string(),
    })
}

/// The sequence a request needs its answer to include (0 when it did not say).
pub fn min_applied(message: &async_nats::Message) -> u64 {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(MIN_APPLIED_HEADER))
        .and_then(|value| value.as_str().parse().ok())
        .unwrap_or(0)
}

/// The headers of a "behind" reply from a replica that applied through `applied`.
pub fn behind(applied: u64) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(BEHIND_HEADER, applied.to_string().as_str());
    headers
}

/// Answers every request on `subject` with `answer` until `shutdown`, one at a time. Plain
/// subscription, no queue group: every replica answers (`lrs.api.replicas`), and the asking
/// side gathers the answers ([`gather`]).
pub async fn answer_each<F, Fut>(
    client: async_nats::Client,
    subject: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
    mut answer: F,
) -> Result<(), async_nats::SubscribeError>
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    use futures::StreamExt as _;
    let mut requests = client.subscribe(subject).await?;
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            request = requests.next() => request,
        };
        let Some(request) = request else {
            return Ok(());
        };
        let Some(reply_to) = request.reply else {
            continue;
        };
        let body = answer(request.payload).await;
        if let Err(err) = client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %err, subject, "cannot send a reply");
        }
    }
}

/// Sends one request that several services answer and gathers the answers until `done` says
/// it has them all, or `timeout`.
pub async fn gather<Reply: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &'static str,
    payload: Bytes,
    timeout: Duration,
    mut done: impl FnMut(&[Reply]) -> bool,
) -> Result<Vec<Reply>, AskError> {
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut replies =
        client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| AskError::Unavailable {
                service: "the replicas",
                reason: err.to_string(),
            })?;
    client
        .publish_with_reply(subject, inbox, payload)
        .await
        .map_err(|err| AskError::Unavailable {
            service: "the replicas",
            reason: err.to_string(),
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut gathered = Vec::new();
    while !done(&gathered) {
        let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        match serde_json::from_slice(&reply.payload) {
            Ok(parsed) => gathered.push(parsed),
            Err(err) => tracing::warn!(error = %err, subject, "unreadable answer"),
        }
    }
    Ok(gathered)
}
