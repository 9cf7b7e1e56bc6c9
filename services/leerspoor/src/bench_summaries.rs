//! The projector's side of `leerspoor bench`: how far it falls behind the store under ingest
//! load, how fast it applies on its own, and how fast summary queries answer over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bus::wire::{EventKind, StoredEvent, StoredEvents};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::demo::llo_statement;

/// Messages on `LRS_STORED` the projector has not applied yet.
async fn pending(js: &jetstream::Context) -> anyhow::Result<u64> {
    pending_on(
        js,
        bus::subjects::STREAM_STORED,
        &bus::subjects::projector_consumer(bus::subjects::MAIN_REPLICA),
    )
    .await
}

async fn pending_on(js: &jetstream::Context, stream: &str, consumer: &str) -> anyhow::Result<u64> {
    let stream = js.get_stream(stream).await?;
    let info = stream
        .get_consumer::<jetstream::consumer::pull::Config>(consumer)
        .await
        .map_err(|err| anyhow::anyhow!("consumer {consumer}: {err}"))?
        .info()
        .await?
        .clone();
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Samples the projector's backlog every 100 ms until stopped; returns the largest seen.
pub fn sample_lag(js: jetstream::Context, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut worst = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return worst,
                _ = tick.tick() => {
                    if let Ok(now) = pending(&js).await {
                        worst = worst.max(now);
                    }
                }
            }
        }
    })
}

/// Time until the store has applied everything on `LRS_IN` and the projector everything on
/// `LRS_STORED`.
pub async fn drain_time(js: &jetstream::Context) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // The store first (a backlog on LRS_IN becomes events later), then the projector.
    while pending_on(
        js,
        bus::subjects::STREAM_IN,
        &bus::subjects::store_consumer(bus::subjects::MAIN_REPLICA),
    )
    .await?
        > 0
        || pending(js).await? > 0
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the projector did not catch up in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// p50/p99 of summary queries over HTTP: hubs, workers and the hub list, `queries` in all.
pub async fn summary_queries(
    base: &str,
    key: &str,
    secret: &str,
    queries: usize,
    concurrency: usize,
) -> anyhow::Result<Histogram<u64>> {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let next = next.clone();
        let (base, key, secret) = (base.to_owned(), key.to_owned(), secret.to_owned());
        workers.spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= queries {
                    return Ok::<_, anyhow::Error>(latency);
                }
                let statement = llo_statement(n);
                let hub = statement["context"]["extensions"]
                    ["https://w3id.org/xapi/llo/extensions/hub"]
                    .as_str()
                    .unwrap_or("eindhoven")
                    .to_owned();
                let url = match n % 3 {
                    0 => format!("{base}/summaries/hubs/{hub}"),
                    1 => format!(
                        "{base}/summaries/workers?{}",
                        serde_urlencoded::to_string([("agent", statement["actor"].to_string())])?
                    ),
                    _ => format!("{base}/summaries/companies?sort=workers&order=desc&limit=20"),
                };
                let sent = Instant::now();
                let response = client
                    .get(&url)
                    .basic_auth(&key, Some(&secret))
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "GET {url}: {}",
                    response.status()
                );
                response.bytes().await?;
                latency.record(sent.elapsed().as_micros() as u64)?;
            }
        });
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(worker) = workers.join_next().await {
        latency.add(worker??)?;
    }
    Ok(latency)
}

/// Events per second the projection applies alone: 100-statement messages into a database
/// already holding 20,000 statements.
pub fn projection_events_per_second() -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let projection = projector::projection::Projection::open(dir.path()).context("projection")?;
    let message = |sequence: u64| StoredEvents {
        sequence,
        events: (0..100)
            .map(|i| StoredEvent {
                kind: EventKind::Stored,
                position: 0,
                statement: llo_statement(sequence as usize * 100 + i),
            })
            .collect(),
    };
    for sequence in 1..=200 {
        projection.apply(sequence, &message(sequence))?;
    }
    let timed: Vec<StoredEvents> = (201..=250).map(message).collect();
    let started = Instant::now();
    for (offset, events) in timed.iter().enumerate() {
        projection.apply(201 + offset as u64, events)?;
    }
    projection.flush()?;
    Ok(50.0 * 100.0 / started.elapsed().as_secs_f64())
}
