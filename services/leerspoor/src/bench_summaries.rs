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

pub(crate) async fn pending_on(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<u64> {
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
    drain_within(js, Duration::from_secs(600)).await
}

/// [`drain_time`], waiting at most `limit`.
pub async fn drain_within(js: &jetstream::Context, limit: Duration) -> anyhow::Result<Duration> {
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
            started.elapsed() < limit,
            "the projector did not catch up in {} s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// Each summary and list query over HTTP against a running gateway, 300 times each (the
/// programme 100), one client: p50/p99 per query. Ids are taken from the lists themselves.
pub async fn summary_http(base: &str, key: &str, secret: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}{path}", base.trim_end_matches('/'));
        async move {
            let sent = Instant::now();
            let body: serde_json::Value =
                crate::bench::get_json(&client, &url, key, secret).await?;
            Ok::<_, anyhow::Error>((sent.elapsed(), body))
        }
    };
    let ids = |list: &serde_json::Value, field: &str| -> Vec<String> {
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item[field].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, hubs) = get("/summaries/hubs?sort=workers&order=desc&limit=100".into()).await?;
    let (_, workers) =
        get("/summaries/workers?sort=statements&order=desc&limit=200".into()).await?;
    let (_, companies) =
        get("/summaries/companies?sort=workers&order=desc&limit=200".into()).await?;
    let (_, deep) =
        get("/summaries/workers?sort=learning_seconds&order=desc&offset=980&limit=20".into())
            .await?;
    let (hubs, workers, companies) = (
        ids(&hubs, "hub"),
        ids(&workers, "worker"),
        ids(&companies, "company"),
    );
    anyhow::ensure!(
        !hubs.is_empty() && !workers.is_empty() && !companies.is_empty(),
        "the gateway at {base} has no summaries to ask for"
    );
    let cursor = deep["next_cursor"].as_str().unwrap_or_default().to_owned();
    let hub = hubs[0].clone();
    let encode =
        |text: &str| serde_urlencoded::to_string([("v", text)]).unwrap_or_default()[2..].to_owned();
    type Path = Box<dyn Fn(usize) -> String>;
    let queries: Vec<(&str, Path, usize)> = vec![
        (
            "GET /summaries/programme",
            Box::new(|_| "/summaries/programme".into()),
            100,
        ),
        (
            "GET /summaries/hubs/{hub}",
            Box::new({
                let hubs = hubs.clone();
                move |n| format!("/summaries/hubs/{}", hubs[n % hubs.len()])
            }),
            300,
        ),
        (
            "GET /summaries/companies/{company}",
            Box::new({
                let companies = companies.clone();
                move |n| {
                    format!(
                        "/summaries/companies/{}",
                        encode(&companies[n % companies.len()])
                    )
                }
            }),
            300,
        ),
        (
            "GET /summaries/workers?agent=",
            Box::new({
                let workers = workers.clone();
                move |n| {
                    format!(
                        "/summaries/workers?agent={}",
                        encode(&agent_of(&workers[n % workers.len()]).to_string())
                    )
                }
            }),
            300,
        ),
        (
            "GET /summaries/hubs?sort=workers&order=desc",
            Box::new(|_| "/summaries/hubs?sort=workers&order=desc".into()),
            300,
        ),
        (
            "GET /summaries/workers?sort=statements&order=desc&limit=20",
            Box::new(|_| "/summaries/workers?sort=statements&order=desc&limit=20".into()),
            300,
        ),
        (
            "GET /summaries/workers?sort=learning_seconds&order=desc&cursor=(1,000th)&limit=20",
            Box::new(move |_| {
                format!(
                    "/summaries/workers?sort=learning_seconds&order=desc&limit=20&cursor={cursor}"
                )
            }),
            300,
        ),
        (
            "GET /summaries/workers?sort=learning_seconds&order=desc&offset=1000&limit=20",
            Box::new(|_| {
                "/summaries/workers?sort=learning_seconds&order=desc&offset=1000&limit=20".into()
            }),
            300,
        ),
        (
            "GET /summaries/companies?sort=workers&order=desc&limit=20",
            Box::new(|_| "/summaries/companies?sort=workers&order=desc&limit=20".into()),
            300,
        ),
        (
            "GET /summaries/companies?hub={hub}&sort=workers&order=desc&limit=20",
            Box::new({
                let hub = hub.clone();
                move |_| format!("/summaries/companies?hub={hub}&sort=workers&order=desc&limit=20")
            }),
            100,
        ),
        (
            "GET /summaries/workers?company={company}&sort=statements&order=desc&limit=20",
            Box::new({
                let companies = companies.clone();
                move |n| {
                    format!(
                        "/summaries/workers?company={}&sort=statements&order=desc&limit=20",
                        encode(&companies[n % companies.len()])
                    )
                }
            }),
            300,
        ),
        (
            "GET /summaries/workers?hub={hub}&sort=statements&order=desc&limit=20",
            Box::new(move |_| {
                format!("/summaries/workers?hub={hub}&sort=statements&order=desc&limit=20")
            }),
            20,
        ),
    ];
    println!("{:<82} {:>6} {:>9} {:>9}", "query", "n", "p50 ms", "p99 ms");
    for (name, path, rounds) in queries {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for n in 0..rounds {
            let (took, _) = get(path(n)).await?;
            latency.record(took.as_micros() as u64)?;
        }
        println!(
            "{:<82} {:>6} {:>9.2} {:>9.2}",
            name,
            rounds,
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    Ok(())
}

/// The Agent a worker's IFI key names (`mbox:…`, `account:HOME|NAME`, `openid:…`,
/// `mbox_sha1sum:…`).
fn agent_of(key: &str) -> serde_json::Value {
    let (kind, value) = key.split_once(':').unwrap_or(("mbox", key));
    match kind {
        "account" => {
            let (home, name) = value.rsplit_once('|').unwrap_or((value, ""));
            serde_json::json!({"account": {"homePage": home, "name": name}})
        }
        other => serde_json::json!({ other: value }),
    }
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
                crate::bench::get_json::<serde_json::Value>(&client, &url, &key, &secret).await?;
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

/// `leerspoor bench --projector-apply N`: the projector's own work alone, as it applies a
/// backlog: N statements of the ingest scenarios' workload in `LRS_STORED` messages of 100
/// (as the store publishes them), each decoded and reduced to its effects, applied in parts
/// of 2,500 and of 10,000 statements (the most one part holds) to a fresh database and
/// flushed after each part; then as the service applies (parts of 2,500 written behind, a
/// checkpoint after every 10,000 statements, about a second of ingest). No NATS, one thread:
/// statements/s, and the time decoding, applying and flushing (or checkpointing) took.
pub fn projector_apply(statements: usize) -> anyhow::Result<()> {
    let payloads = (0..statements.div_ceil(100))
        .map(|message| {
            let events: Vec<StoredEvent> = (message * 100..((message + 1) * 100).min(statements))
                .map(|n| {
                    let mut statement = llo_statement(n);
                    statement["stored"] = serde_json::json!(format!(
                        "2026-12-01T{:02}:{:02}:{:02}.{:03}Z",
                        n / 3_600_000 % 24,
                        n / 60_000 % 60,
                        n / 1_000 % 60,
                        n % 1_000
                    ));
                    StoredEvent {
                        kind: EventKind::Stored,
                        position: n as u64 + 1,
                        statement,
                    }
                })
                .collect();
            let sequence = message as u64 + 1;
            Ok(serde_json::to_vec(&StoredEvents { sequence, events })?)
        })
        .collect::<anyhow::Result<Vec<Vec<u8>>>>()?;
    println!("projector alone, {statements} statements in messages of 100:");
    // (statements per part, statements per checkpoint when written behind)
    for (part, behind) in [(2_500, None), (10_000, None), (2_500, Some(10_000))] {
        let dir = tempfile::tempdir()?;
        let projection =
            projector::projection::Projection::open(&dir.path().join("projector.sled"))
                .context("projection")?;
        let (mut decoding, mut applying, mut flushing) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut pending: Vec<(u64, Vec<projector::contribution::Effect>)> = Vec::new();
        let mut events = 0;
        let mut since_checkpoint = 0;
        // Keys the checkpoints wrote to sled (written behind).
        let mut checkpointed = 0;
        let started = Instant::now();
        for (index, payload) in payloads.iter().enumerate() {
            let at = Instant::now();
            let message = projector::events::decode(payload)?;
            events += message.events.len();
            pending.push((index as u64 + 1, projector::contribution::effects(&message)));
            decoding += at.elapsed();
            let last = index + 1 == payloads.len();
            if events >= part || last {
                let at = Instant::now();
                match behind {
                    None => projection.apply_effects(&pending)?,
                    Some(_) => projection.apply_behind(&pending)?,
                }
                applying += at.elapsed();
                since_checkpoint += events;
                if behind.is_none_or(|every| since_checkpoint >= every) || last {
                    let at = Instant::now();
                    checkpointed += projection.checkpoint()?;
                    projection.flush()?;
                    flushing += at.elapsed();
                    since_checkpoint = 0;
                }
                pending.clear();
                events = 0;
            }
        }
        let how = match behind {
            None => String::new(),
            Some(every) => format!(" behind, checkpoints of {every}"),
        };
        let keys = match behind {
            None => String::new(),
            Some(_) => format!(", {checkpointed} keys"),
        };
        println!(
            "  parts of {part:>6}{how}: {:>7.0} statements/s (decode {:.1} s, apply {:.1} s, flush {:.1} s{keys})",
            statements as f64 / started.elapsed().as_secs_f64(),
            decoding.as_secs_f64(),
            applying.as_secs_f64(),
            flushing.as_secs_f64()
        );
        // The database as it is, then copied into a fresh one (what a compaction does while
        // the projector applies; here nothing is applied meanwhile).
        let before = projection.size_on_disk().unwrap_or(0);
        let current = projector::rebuild::Current::new(projection);
        let at = Instant::now();
        let report = projector::compact::Copying::start(&current.get(), dir.path())?
            .finish(dir.path(), &current)?;
        println!(
            "  {:>16}  database {:.0} MB; copied into a fresh one in {:.1} s: {:.0} MB",
            "",
            before as f64 / 1e6,
            at.elapsed().as_secs_f64(),
            report.bytes_after as f64 / 1e6
        );
    }
    Ok(())
}

/// One measured query: its n-th instance.
type Query = Box<dyn Fn(usize) -> bus::wire::SummaryQuery>;

/// `leerspoor bench --summary-lists N,M,...`: for each number of workers, a projection of two
/// statements per worker (written straight into a fresh database, no NATS), then list and
/// single-summary queries through the projector's own query function, p50/p99 of each. Shows
/// whether list queries depend on how many workers there are.
pub fn summary_lists(worker_counts: &[usize]) -> anyhow::Result<()> {
    use bus::wire::{SummaryKind, SummaryQuery};
    println!(
        "{:>9} {:>12} {:<58} {:>9} {:>9}",
        "workers", "apply ev/s", "query", "p50 ms", "p99 ms"
    );
    for &workers in worker_counts {
        let dir = tempfile::tempdir()?;
        let projection = std::sync::Arc::new(
            projector::projection::Projection::open(dir.path()).context("projection")?,
        );
        let statement = |n: usize| {
            let mut statement = llo_statement(n);
            let worker = n % workers;
            statement["actor"] =
                serde_json::json!({"mbox": format!("mailto:w{worker}@example.org")});
            statement["context"]["extensions"]["https://w3id.org/xapi/llo/extensions/company"] =
                serde_json::json!(format!("KVK-{:06}", worker % (workers / 50).max(1)));
            statement
        };
        let started = Instant::now();
        let total = workers * 2;
        let mut sequence = 0;
        for chunk in (0..total).collect::<Vec<_>>().chunks(100 * 64) {
            let messages: Vec<(u64, StoredEvents)> = chunk
                .chunks(100)
                .map(|part| {
                    sequence += 1;
                    (
                        sequence,
                        StoredEvents {
                            sequence,
                            events: part
                                .iter()
                                .map(|n| StoredEvent {
                                    kind: EventKind::Stored,
                                    position: 0,
                                    statement: statement(*n),
                                })
                                .collect(),
                        },
                    )
                })
                .collect();
            let borrowed: Vec<(u64, &StoredEvents)> = messages
                .iter()
                .map(|(sequence, events)| (*sequence, events))
                .collect();
            projection.apply_all(&borrowed)?;
        }
        projection.flush()?;
        let rate = total as f64 / started.elapsed().as_secs_f64();
        let list = |kind, sort: &str, offset| SummaryQuery::List {
            kind,
            sort: Some(sort.to_owned()),
            descending: true,
            offset,
            limit: 20,
            filter: Default::default(),
            cursor: None,
        };
        // The cursor of the 1,000th worker by learning time: page 51 of 20 without the walk.
        let deep = projection
            .list(
                SummaryKind::Worker,
                Some("learning_seconds"),
                true,
                980,
                20,
                &Default::default(),
                None,
            )?
            .map_err(anyhow::Error::msg)?
            .cursors
            .last()
            .cloned();
        let queries: Vec<(String, Query)> = vec![
            (
                "workers?sort=statements&order=desc&limit=20".into(),
                Box::new(move |_| list(SummaryKind::Worker, "statements", 0)),
            ),
            (
                "workers?sort=learning_seconds&order=desc&offset=1000&limit=20".into(),
                Box::new(move |_| list(SummaryKind::Worker, "learning_seconds", 1000)),
            ),
            (
                "workers?sort=learning_seconds&order=desc&cursor=(1,000th)&limit=20".into(),
                Box::new(move |_| SummaryQuery::List {
                    kind: SummaryKind::Worker,
                    sort: Some("learning_seconds".into()),
                    descending: true,
                    offset: 0,
                    limit: 20,
                    filter: Default::default(),
                    cursor: deep.clone(),
                }),
            ),
            (
                "companies?sort=workers&order=desc&limit=20".into(),
                Box::new(move |_| list(SummaryKind::Company, "workers", 0)),
            ),
            (
                "hubs?sort=statements&order=desc".into(),
                Box::new(move |_| list(SummaryKind::Hub, "statements", 0)),
            ),
            (
                "one worker".into(),
                Box::new(move |n| SummaryQuery::One {
                    kind: SummaryKind::Worker,
                    id: format!("mbox:mailto:w{}@example.org", (n * 7919) % workers),
                    from: None,
                    to: None,
                }),
            ),
            (
                "one company".into(),
                Box::new(move |n| SummaryQuery::One {
                    kind: SummaryKind::Company,
                    id: format!("KVK-{:06}", n % (workers / 50).max(1)),
                    from: None,
                    to: None,
                }),
            ),
            (
                "one hub".into(),
                Box::new(|n| SummaryQuery::One {
                    kind: SummaryKind::Hub,
                    id: crate::demo::HUBS[n % crate::demo::HUBS.len()].to_owned(),
                    from: None,
                    to: None,
                }),
            ),
            (
                "programme (cached)".into(),
                Box::new(move |_| SummaryQuery::Programme {
                    hubs: registry(),
                    target: 6000,
                }),
            ),
            (
                // Another target each time: computed afresh from the member keys.
                "programme (computed)".into(),
                Box::new(move |n| SummaryQuery::Programme {
                    hubs: registry(),
                    target: 6001 + n as u64,
                }),
            ),
        ];
        let mut first = true;
        for (name, query) in queries {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let rounds = if name.contains("computed") { 20 } else { 200 };
            for n in 0..rounds {
                let asked = Instant::now();
                let reply = projector::service::run_query(&projection, query(n), 1 << 20)?;
                std::hint::black_box(serde_json::to_vec(&reply)?);
                latency.record(asked.elapsed().as_micros() as u64)?;
            }
            println!(
                "{:>9} {:>12} {:<58} {:>9.2} {:>9.2}",
                if first {
                    workers.to_string()
                } else {
                    String::new()
                },
                if first {
                    format!("{rate:.0}")
                } else {
                    String::new()
                },
                name,
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency.value_at_quantile(0.99) as f64 / 1000.0
            );
            first = false;
        }
    }
    Ok(())
}

/// The demo's hub registry.
fn registry() -> Vec<bus::hubs::HubEntry> {
    crate::demo::REGISTRY
        .iter()
        .map(|(id, name, kind, region)| bus::hubs::HubEntry {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
            kind: *kind,
            region: (*region).to_owned(),
        })
        .collect()
}
