//! How the services pull from their streams (`bus::pull`), on a real nats-server.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, consumer::pull, consumer::Consumer, stream};
use tokio_util::sync::CancellationToken;

const STREAM: &str = "PULLS";

/// A stream of its own on `nats` and a durable consumer on it, as the services make theirs.
async fn stream_and_consumer(nats: &testkit::Nats) -> (jetstream::Context, Consumer<pull::Config>) {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["pulls.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let consumer = bus::pull::durable(&js, STREAM, "puller", Duration::from_secs(60))
        .await
        .expect("consumer");
    (js, consumer)
}

async fn publish(js: &jetstream::Context, payload: &'static str) {
    js.publish("pulls.one", payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// A pull of at most three messages lingering `linger`, started on its own task.
fn start_pull(
    consumer: &Consumer<pull::Config>,
    linger: Duration,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<Option<Vec<jetstream::Message>>, bus::pull::PullError>> {
    let (consumer, shutdown) = (consumer.clone(), shutdown.clone());
    tokio::spawn(async move {
        bus::pull::next_batch(&consumer, STREAM, 3, 1 << 20, linger, &shutdown).await
    })
}

/// Until the server says of the consumer what `holds` asks.
async fn until_consumer(
    consumer: &Consumer<pull::Config>,
    what: &str,
    holds: fn(&consumer::Info) -> bool,
) {
    testkit::wait_until(what, Duration::from_secs(20), || {
        let mut consumer = consumer.clone();
        async move { holds(consumer.info().await.ok()?).then_some(()) }
    })
    .await;
}

/// Until the first message is delivered and the pull for the rest waits on the server (a
/// pull without linger has returned with what was there by then).
async fn lingering(consumer: &Consumer<pull::Config>) {
    until_consumer(
        consumer,
        "the first message delivered and a pull waiting for more",
        |info| info.num_ack_pending == 1 && info.num_waiting == 1,
    )
    .await;
}

/// The batch a pull returned, within `deadline`.
async fn batch_of(
    pull: tokio::task::JoinHandle<Result<Option<Vec<jetstream::Message>>, bus::pull::PullError>>,
    deadline: Duration,
) -> Vec<String> {
    tokio::time::timeout(deadline, pull)
        .await
        .expect("the pull ends in time")
        .expect("pull task")
        .expect("pull")
        .expect("a batch, not nothing")
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect()
}

/// A lingering pull (`Puller::with_linger`): after a batch's first message the pull waits for
/// more, and returns as soon as the batch is full: fewer, fuller batches for a consumer whose
/// cost is per batch. (The projector's pulls lingered until its reader took pulls beside the
/// apply; no service lingers now.)
#[tokio::test]
async fn a_lingering_pull_takes_what_arrives_after_its_first_message_until_full() {
    let nats = testkit::Nats::start().await;
    let (js, consumer) = stream_and_consumer(&nats).await;
    publish(&js, "1").await;
    let pull = start_pull(
        &consumer,
        Duration::from_secs(120),
        &CancellationToken::new(),
    );
    lingering(&consumer).await;
    publish(&js, "2").await;
    publish(&js, "3").await;
    // Full at three: back long before the linger is over.
    assert_eq!(
        batch_of(pull, Duration::from_secs(60)).await,
        ["1", "2", "3"]
    );
}

/// Shutdown during a linger: the message already delivered comes back in the batch, to be
/// applied and acknowledged, instead of being dropped to return only after `ack_wait`.
#[tokio::test]
async fn shutdown_while_a_pull_lingers_keeps_the_messages_delivered() {
    let nats = testkit::Nats::start().await;
    let (js, consumer) = stream_and_consumer(&nats).await;
    publish(&js, "1").await;
    let shutdown = CancellationToken::new();
    let pull = start_pull(&consumer, Duration::from_secs(2), &shutdown);
    lingering(&consumer).await;
    shutdown.cancel();
    assert_eq!(batch_of(pull, Duration::from_secs(30)).await, ["1"]);
}

/// A consumer behind does not linger: a pull whose first message has others behind it takes
/// what is there and returns, where a linger would hold every one of them (the projector,
/// when it lingered, spent a sixth of each cycle so under a backlog).
#[tokio::test]
async fn a_pull_with_messages_behind_its_first_takes_them_without_lingering() {
    let nats = testkit::Nats::start().await;
    let (js, consumer) = stream_and_consumer(&nats).await;
    publish(&js, "1").await;
    publish(&js, "2").await;
    let pull = start_pull(
        &consumer,
        Duration::from_secs(120),
        &CancellationToken::new(),
    );
    // Not full (three at most), yet back long before the linger would be over.
    assert_eq!(batch_of(pull, Duration::from_secs(60)).await, ["1", "2"]);
}

/// A message applied is acknowledged through its `Ack` (what the store and projector hold
/// instead of the message until they ack): the server takes the ack (nothing pending, the ack
/// floor at the message) and the message leaves the set kept in progress. Before the ack the
/// server still counts it pending. (That the payload is let go is a memory effect, measured by
/// the heap profile in BENCHMARKS.md, not asserted here.)
#[tokio::test]
async fn a_message_applied_is_acknowledged_through_its_ack() {
    let nats = testkit::Nats::start().await;
    let (js, mut consumer) = stream_and_consumer(&nats).await;
    publish(&js, "applied").await;
    let batch = bus::pull::next_batch(
        &consumer,
        STREAM,
        3,
        1 << 20,
        Duration::ZERO,
        &CancellationToken::new(),
    )
    .await
    .expect("pull")
    .expect("a batch");
    let in_flight = bus::pull::InFlight::default();
    in_flight.add(&batch);
    let acks: Vec<bus::pull::Ack> = batch.into_iter().map(bus::pull::Ack::from).collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(in_flight.len(), 1);
    let info = consumer.info().await.expect("consumer info");
    assert_eq!(
        info.num_ack_pending, 1,
        "delivered and not yet acknowledged"
    );
    acks[0]
        .send(jetstream::AckKind::Ack, &in_flight)
        .await
        .expect("ack sent");
    assert!(in_flight.is_empty());
    until_consumer(&consumer, "the server to take the ack", |info| {
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 1
    })
    .await;
}
