//! A store's ingest paced by the projector beside it (`bus::pace`), on a real nats-server.

use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{statement, TestApp};

async fn announce(client: &async_nats::Client, applied: u64) {
    bus::pace::announce(client, "main", applied).await;
    client.flush().await.expect("flush");
}

/// Until `pace` has taken the announcement that puts the projector `behind` messages back.
async fn until_behind(pace: &mut bus::pace::Pace, behind: u64) {
    testkit::wait_until(
        "the announcement to reach the store's pace",
        Duration::from_secs(20),
        || {
            let reached = pace.behind() == Some(behind);
            async move { reached.then_some(()) }
        },
    )
    .await;
}

fn bounds(fresh: Duration, longest_wait: Duration) -> bus::pace::Bounds {
    bus::pace::Bounds {
        behind: 10,
        fresh,
        longest_wait,
    }
}

async fn follow(client: &async_nats::Client, bounds: bus::pace::Bounds) -> bus::pace::Pace {
    let pace = bus::pace::Pace::follow(client, "main", bounds)
        .await
        .expect("follow");
    client.flush().await.expect("flush");
    pace
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_store_waits_while_its_projector_is_too_far_behind() {
    let nats = testkit::Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let shutdown = CancellationToken::new();
    let mut pace = follow(&client, bounds(LONG, LONG)).await;
    pace.published().record(100);
    assert_eq!(pace.behind(), None, "no projector announced anything yet");
    assert!(
        pace.wait(&shutdown).await.is_zero(),
        "no projector, no wait"
    );

    announce(&client, 95).await;
    until_behind(&mut pace, 5).await;
    assert!(
        pace.wait(&shutdown).await.is_zero(),
        "five behind is within the bound of ten"
    );

    // Another replica's projector is not this store's.
    bus::pace::announce(&client, "other", 1).await;
    announce(&client, 50).await;
    until_behind(&mut pace, 50).await;
    let mut waiting = Box::pin(pace.wait(&shutdown));
    assert!(
        (&mut waiting).now_or_never().is_none(),
        "fifty behind: the store waits"
    );
    announce(&client, 70).await;
    announce(&client, 95).await;
    let waited = waiting.await;
    assert!(!waited.is_zero(), "it waited for the projector");
    assert_eq!(pace.behind(), Some(5), "until it was within the bound");

    pace.published().record(200);
    let mut waiting = Box::pin(pace.wait(&shutdown));
    assert!((&mut waiting).now_or_never().is_none(), "105 behind");
    shutdown.cancel();
    waiting.await;
}

#[tokio::test]
async fn a_projector_that_stopped_announcing_holds_no_store_back() {
    let nats = testkit::Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let shutdown = CancellationToken::new();
    let mut pace = follow(&client, bounds(Duration::from_millis(300), LONG)).await;
    pace.published().record(1_000);
    announce(&client, 1).await;
    until_behind(&mut pace, 999).await;
    // No announcement comes after this one: the wait ends when it goes stale, not never.
    pace.wait(&shutdown).await;
    assert_eq!(
        pace.behind(),
        None,
        "a stale announcement counts for nothing"
    );
    assert!(pace.wait(&shutdown).await.is_zero(), "and no wait follows");
}

#[tokio::test]
async fn a_projector_catching_up_slows_a_store_without_stopping_it() {
    let nats = testkit::Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let shutdown = CancellationToken::new();
    let mut pace = follow(&client, bounds(LONG, Duration::from_millis(300))).await;
    pace.published().record(1_000);
    announce(&client, 1).await;
    until_behind(&mut pace, 999).await;
    // Fresh and far behind: each pull still comes, after the longest wait.
    for _ in 0..2 {
        let waited = pace.wait(&shutdown).await;
        assert!(!waited.is_zero());
        assert_eq!(pace.behind(), Some(999), "still fresh, still behind");
    }
}

#[tokio::test]
async fn the_projector_announces_what_it_applied_for_its_store() {
    let app = TestApp::start().await;
    app.wait_for_credential().await;
    let client = app.nats_client().await;
    let mut announcements = client
        .subscribe(bus::subjects::projector_applied("main"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let response = app
        .post_statements(&json!([statement(
            "pace@example.org",
            "completed",
            "https://example.org/pace"
        )]))
        .await;
    assert_eq!(response.status(), 200);
    let js = async_nats::jetstream::new(client.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied = next_announced(&mut announcements, deadline).await;
        let last = stored_last(&js).await;
        assert!(applied <= last, "never beyond what was published");
        if applied == last {
            break;
        }
    }
    app.stop().await;
}

/// The sequence in the next announcement of the projector, which must come before `deadline`.
async fn next_announced(
    announcements: &mut async_nats::Subscriber,
    deadline: std::time::Instant,
) -> u64 {
    let message = tokio::time::timeout_at(deadline.into(), announcements.next())
        .await
        .expect("the projector announced LRS_STORED's last sequence")
        .expect("subscription open");
    serde_json::from_slice::<bus::pace::ProjectorApplied>(&message.payload)
        .expect("an announcement")
        .applied
}

/// `LRS_STORED`'s last sequence.
async fn stored_last(js: &async_nats::jetstream::Context) -> u64 {
    js.get_stream(bus::subjects::STREAM_STORED)
        .await
        .expect("LRS_STORED")
        .info()
        .await
        .expect("info")
        .state
        .last_sequence
}

/// Until the projector has announced applying `LRS_STORED` through its last message (as of
/// the call).
async fn until_projector_applied_all(
    js: &async_nats::jetstream::Context,
    announcements: &mut async_nats::Subscriber,
) {
    let last = stored_last(js).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Beyond it too: a message published since (the projector announces the latest).
    while next_announced(announcements, deadline).await < last {}
}

/// An operator sees ingest held to the projector's pace: every wait before a pull is a sample
/// of `leerspoor_store_pace_wait_seconds`.
#[tokio::test]
async fn a_store_that_waited_for_its_projector_says_so_in_its_metrics() {
    let app = TestApp::start().await;
    app.wait_for_credential().await;
    let client = app.nats_client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut announcements = client
        .subscribe(bus::subjects::projector_applied("main"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let post = |n: u64| {
        let app = &app;
        async move {
            let body = json!([statement(
                &format!("paced{n}@example.org"),
                "completed",
                "https://example.org/paced"
            )]);
            assert_eq!(app.post_statements(&body).await.status(), 200);
        }
    };
    // One write at a time until `LRS_STORED` holds more messages than the bound (writes that
    // reach the store together may share one).
    let bound = bus::pace::Bounds::default().behind;
    let mut n = 0;
    while stored_last(&js).await <= bound + 1 {
        assert!(
            n < 4 * bound,
            "{n} writes and still not {bound} LRS_STORED messages"
        );
        post(n).await;
        n += 1;
    }
    until_projector_applied_all(&js, &mut announcements).await;
    let count = |page: &str| {
        crate::operating::sample(page, "leerspoor_store_pace_wait_seconds_count", &[])
            .unwrap_or(0.0)
    };
    let before = count(&crate::operating::metrics_page(&app.base).await);

    // A projector that says it applied only the first message: after its next write, the
    // store waits before it pulls again, until the real projector announces it caught up.
    announce(&client, 1).await;
    post(n).await;
    let page = testkit::wait_until(
        "a wait for the projector in the store's metrics",
        Duration::from_secs(20),
        || async {
            let page = crate::operating::metrics_page(&app.base).await;
            (count(&page) > before).then_some(page)
        },
    )
    .await;
    let waited = crate::operating::sample(&page, "leerspoor_store_pace_wait_seconds_sum", &[])
        .expect("the seconds waited");
    assert!(waited > 0.0, "{waited} s waited");
    until_projector_applied_all(&js, &mut announcements).await;
    app.stop().await;
}
