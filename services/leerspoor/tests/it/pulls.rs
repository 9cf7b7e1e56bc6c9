//! How the services pull from their streams (`bus::pull`), on a real nats-server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

const STREAM: &str = "PULLS";

/// The projector's pulls linger: after a batch's first message the pull waits for more, and
/// returns as soon as the batch is full. Under single-statement load that makes fewer,
/// fuller batches, each one sled flush and two pull requests.
#[tokio::test]
async fn a_lingering_pull_takes_what_arrives_after_its_first_message_until_full() {
    let nats = testkit::Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["pulls.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let consumer = bus::pull::durable(&js, STREAM, "lingering", Duration::from_secs(60))
        .await
        .expect("consumer");
    let publish = |n: u32| {
        let js = js.clone();
        async move {
            js.publish("pulls.one", n.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    };
    publish(1).await;
    let pulling = consumer.clone();
    let pull = tokio::spawn(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        bus::pull::next_batch(
            &pulling,
            STREAM,
            3,
            1 << 20,
            Duration::from_secs(120),
            &shutdown,
        )
        .await
    });
    // The first message is delivered and the pull for the rest waits on the server: only
    // now do the others arrive (a pull without linger has returned with one message here).
    testkit::wait_until(
        "the first message delivered and a pull waiting for more",
        Duration::from_secs(20),
        || {
            let mut consumer = consumer.clone();
            async move {
                let info = consumer.info().await.ok()?;
                (info.num_ack_pending == 1 && info.num_waiting == 1).then_some(())
            }
        },
    )
    .await;
    publish(2).await;
    publish(3).await;
    // Full at three: back long before the linger is over.
    let batch = tokio::time::timeout(Duration::from_secs(60), pull)
        .await
        .expect("a full batch does not wait out its linger")
        .expect("pull task")
        .expect("pull")
        .expect("a batch");
    let payloads: Vec<String> = batch
        .iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["1", "2", "3"]);
}

/// Shutdown during a linger: the message already delivered comes back in the batch, to be
/// applied and acknowledged, instead of being dropped to return only after `ack_wait`.
#[tokio::test]
async fn shutdown_while_a_pull_lingers_keeps_the_messages_delivered() {
    let nats = testkit::Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["pulls.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let consumer = bus::pull::durable(&js, STREAM, "stopping", Duration::from_secs(60))
        .await
        .expect("consumer");
    js.publish("pulls.one", "1".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pulling = consumer.clone();
    let stopping = shutdown.clone();
    let pull = tokio::spawn(async move {
        bus::pull::next_batch(
            &pulling,
            STREAM,
            3,
            1 << 20,
            Duration::from_secs(2),
            &stopping,
        )
        .await
    });
    testkit::wait_until(
        "the first message delivered and a pull waiting for more",
        Duration::from_secs(20),
        || {
            let mut consumer = consumer.clone();
            async move {
                let info = consumer.info().await.ok()?;
                (info.num_ack_pending == 1 && info.num_waiting == 1).then_some(())
            }
        },
    )
    .await;
    shutdown.cancel();
    let batch = tokio::time::timeout(Duration::from_secs(30), pull)
        .await
        .expect("the pull ends")
        .expect("pull task")
        .expect("pull")
        .expect("the batch begun, not nothing");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].payload.as_ref(), b"1");
}
