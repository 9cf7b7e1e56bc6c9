//! `leerspoor bench`: ingest throughput and latency against a fresh, durable Leerspoor in this
//! process (its own nats-server with `sync_interval: always`, sled flushed before every ack,
//! every index written), plus a per-stage profile of one batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bus::server::LocalServer;
use bus::wire::Applied;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, GatewaySection, NatsConfig, StoreSection};
use crate::demo::llo_statement;
use crate::node::{Node, Parts};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Statements sent per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub statements: usize,
    /// Concurrent HTTP clients (and NATS publishers).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// HTTP batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub batches: Vec<usize>,
    /// Leave out the NATS publish scenario.
    #[arg(long)]
    pub skip_nats: bool,
    /// Summary queries over HTTP at the end (on everything stored by then).
    #[arg(long, default_value_t = 3000)]
    pub summary_queries: usize,
    /// Instead of the scenarios: store this many statements of one person, then erase them.
    #[arg(long)]
    pub erase_one_person: Option<usize>,
    /// Instead of the scenarios: store this many statements, then start a second store
    /// replica from a snapshot and measure until it caught up.
    #[arg(long)]
    pub replica_from_snapshot: Option<usize>,
    /// Instead of the scenarios: list and summary queries on projections of this many
    /// workers each (comma-separated), written straight into the projector's database.
    #[arg(long, value_delimiter = ',')]
    pub summary_lists: Vec<usize>,
    /// Instead of the scenarios: the projector's apply alone (no NATS, one thread) on this
    /// many statements of the ingest workload, in parts of 2,500 and of 10,000: statements/s.
    #[arg(long)]
    pub projector_apply: Option<usize>,
    /// A hub node in front of a central site: statements/s it accepts, and how fast a backlog
    /// of this many statements drains into the central store.
    #[arg(long)]
    pub hub: Option<usize>,
    /// Instead of the scenarios: every summary and list query, one after another, against a
    /// running gateway holding data (e.g. after `leerspoor import`), p50/p99 over HTTP.
    #[arg(long)]
    pub summary_http: Option<String>,
    /// Instead of the scenarios: the statement reads of --targets (500 of each kind, 4
    /// clients, on values from the newest page) against a running gateway holding data,
    /// p50/p99 over HTTP.
    #[arg(long)]
    pub statement_reads: Option<String>,
    /// Run the HTTP scenarios against these running gateways (comma-separated base URLs,
    /// e.g. a local cluster's) instead of an in-process Leerspoor.
    #[arg(long, value_delimiter = ',')]
    pub against: Vec<String>,
    /// The credential for --against (every scope it needs: statements/write).
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Instead of the scenarios: every performance target (ingest, singles, NATS hubs,
    /// projector lag, reads, then the same at --size with memory and disk), compared with the
    /// figures recorded last in --baseline.
    #[arg(long)]
    pub targets: bool,
    /// With --targets: how many statements the store is grown to for the second round.
    #[arg(long, default_value_t = 1_000_000)]
    pub size: usize,
    /// With --targets: the recorded figures to compare with.
    #[arg(long, default_value = "docs/perf/targets.json")]
    pub baseline: std::path::PathBuf,
    /// With --targets: keep this run's figures in --baseline as the ones to compare with.
    #[arg(long)]
    pub record: bool,
    /// With --targets: whole runs, each on a fresh node; the figures compared (and recorded)
    /// are each figure's median over them. A reference wants three or more: one run on this
    /// kind of machine can be a third off the next.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    #[arg(
        long,
        default_value = "bench",
        env = "LEERSPOOR_BENCH_PASSWORD",
        hide_env_values = true
    )]
    pub password: String,
}

/// A fresh, durable Leerspoor in this process for a benchmark: its own nats-server, the
/// store, projector and gateway, and the bench credential with every scope and no rate limit.
pub(crate) struct BenchNode {
    pub nats: LocalServer,
    /// The gateway's base URL.
    pub base: String,
    pub shutdown: CancellationToken,
    pub running: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Last: dropped (removed) after its nats-server is killed.
    pub dir: tempfile::TempDir,
}

impl BenchNode {
    pub async fn start() -> anyhow::Result<BenchNode> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let nats = LocalServer::start(&dir.path().join("nats"), 0).await?;
        // Every scope, and no practical rate limit: the benchmark measures ingest, not limits.
        let credential = crate::access::record(
            KEY,
            "bench",
            SECRET,
            bus::access::Scope::EVERY.to_vec(),
            None,
            Some(u32::MAX),
        )?;
        let config = Config {
            data_dir: dir.path().to_owned(),
            nats: NatsConfig {
                url: Some(nats.url()),
                ..NatsConfig::default()
            },
            gateway: GatewaySection {
                listen: "127.0.0.1:0".parse()?,
                write_timeout_secs: 60,
                ..GatewaySection::default()
            },
            store: StoreSection {
                bootstrap: Some(credential),
                ..StoreSection::default()
            },
            limits: xapi::limits::Limits::default(),
            replicas: Default::default(),
            programme: Default::default(),
            hubs: Default::default(),
            hub: Default::default(),
            ops: Default::default(),
            memory: Default::default(),
        };
        let node = Node::start(config, Parts::All).await?;
        let base = format!("http://{}", node.http_addr().context("gateway address")?);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(node.run(shutdown.clone()));
        wait_for_credential(&base, KEY, SECRET).await?;
        Ok(BenchNode {
            nats,
            base,
            shutdown,
            running,
            dir,
        })
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().to_owned()
    }

    /// Stops the node and hands over its data folder (to compact it, or look into it).
    pub async fn stop(self) -> anyhow::Result<tempfile::TempDir> {
        self.shutdown.cancel();
        self.running.await.context("node task")??;
        self.nats.stop().await;
        Ok(self.dir)
    }
}

/// GETs `url` as xAPI 2.0.0 with the credential: the JSON answer, or the status it got.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    secret: &str,
) -> anyhow::Result<T> {
    let response = client
        .get(url)
        .basic_auth(key, Some(secret))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// Where the HTTP scenarios send their statements: gateway base URLs (a worker each in turn)
/// and the credential.
#[derive(Clone)]
pub struct Target {
    pub bases: Vec<String>,
    pub key: String,
    pub secret: String,
}

pub(crate) const KEY: &str = "bench";
pub(crate) const SECRET: &str = "bench";

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.against.is_empty() {
        return against(&args).await;
    }
    if let Some(backlog) = args.hub {
        return crate::bench_hub::run(backlog).await;
    }
    if let Some(base) = &args.summary_http {
        return crate::bench_summaries::summary_http(base, &args.user, &args.password).await;
    }
    if let Some(base) = &args.statement_reads {
        crate::bench_targets::reads(base, (&args.user, &args.password)).await?;
        return Ok(());
    }
    if let Some(statements) = args.projector_apply {
        return tokio::task::spawn_blocking(move || {
            crate::bench_summaries::projector_apply(statements)
        })
        .await?;
    }
    if !args.summary_lists.is_empty() {
        let counts = args.summary_lists.clone();
        return tokio::task::spawn_blocking(move || crate::bench_summaries::summary_lists(&counts))
            .await?;
    }
    if args.targets {
        return crate::bench_targets::run(crate::bench_targets::TargetsArgs {
            statements: args.statements,
            size: args.size,
            baseline: args.baseline.clone(),
            record: args.record,
            runs: args.runs,
        })
        .await;
    }
    let BenchNode {
        dir: _dir,
        nats,
        base,
        shutdown,
        running,
    } = BenchNode::start().await?;

    if let Some(statements) = args.replica_from_snapshot {
        crate::bench_replicas::from_snapshot(&nats.url(), statements).await?;
        shutdown.cancel();
        running.await.context("node task")??;
        nats.stop().await;
        return Ok(());
    }
    if let Some(statements) = args.erase_one_person {
        crate::bench_erasure::one_person(&nats.url(), &base, (KEY, SECRET), statements).await?;
        shutdown.cancel();
        running.await.context("node task")??;
        nats.stop().await;
        return Ok(());
    }
    println!("leerspoor bench: {} statements per scenario, {} concurrent clients; durable (JetStream sync_interval: always, sled flushed before ack), fully indexed", args.statements, args.concurrency);
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10}",
        "scenario", "statements/s", "p50 ms", "p99 ms", "max ms"
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    let mut lag_notes = Vec::new();
    for batch in &args.batches {
        let stop_sampling = CancellationToken::new();
        let sampler = crate::bench_summaries::sample_lag(js.clone(), stop_sampling.clone());
        let target = Target {
            bases: vec![base.clone()],
            key: KEY.into(),
            secret: SECRET.into(),
        };
        let report = http_scenario(
            &target,
            args.statements,
            (*batch).max(1),
            args.concurrency,
            llo_statement,
        )
        .await?;
        report.print(&format!("HTTP POST, batch of {batch}"));
        let drained = crate::bench_summaries::drain_time(&js).await?;
        stop_sampling.cancel();
        let worst = sampler.await.unwrap_or(0);
        lag_notes.push(format!(
            "  projector under HTTP batches of {batch}: at most {worst} LRS_STORED messages behind; caught up {:.0} ms after the last write",
            drained.as_secs_f64() * 1000.0
        ));
    }
    if !args.skip_nats {
        let report = nats_scenario(&nats.url(), args.statements, 100, args.concurrency).await?;
        report.print("NATS publish, batch of 100");
        println!("  (NATS: all messages are published at once, so its latency is publish -> applied under a backlog of the whole run)");
        crate::bench_summaries::drain_time(&js).await?;
    }
    for note in &lag_notes {
        println!("{note}");
    }
    if args.summary_queries > 0 {
        let latency = crate::bench_summaries::summary_queries(
            &base,
            KEY,
            SECRET,
            args.summary_queries,
            args.concurrency,
        )
        .await?;
        let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
        println!(
            "summary queries over HTTP ({} on everything stored): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            args.summary_queries,
            ms(0.5),
            ms(0.99),
            latency.max() as f64 / 1000.0
        );
    }

    erasure(&base).await?;
    shutdown.cancel();
    running.await.context("node task")??;
    nats.stop().await;
    stage_profile()?;
    auth_profile()?;
    Ok(())
}

/// Erases one demo worker over the admin route on everything stored by now, and waits for
/// the projector to drop their summary.
async fn erasure(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let worker = json!({"mbox": "mailto:worker7@example.org"});
    let started = Instant::now();
    let response = http
        .post(format!("{base}/admin/erasures"))
        .basic_auth(KEY, Some(SECRET))
        .json(&json!({"agent": worker, "reason": "bench"}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "erasure: {}",
        response.status()
    );
    let counts: Value = response.json().await?;
    let applied = started.elapsed();
    let summary = format!(
        "{base}/summaries/workers?agent={}",
        serde_urlencoded::to_string([("v", worker.to_string())])?.trim_start_matches("v=")
    );
    loop {
        let status = http
            .get(&summary)
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await?
            .status();
        if status == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "summary still there"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "erasure of one worker ({} statements) over POST /admin/erasures: applied in {:.0} ms; their summary gone after {:.0} ms",
        counts["statements"],
        applied.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// What authentication costs: an Argon2id check (a credential's first request to a gateway,
/// or a wrong secret) and the remembered-secret check every later request pays.
fn auth_profile() -> anyhow::Result<()> {
    use argon2::{PasswordHash, PasswordVerifier};
    const ROUNDS: u32 = 10;
    let hash = crate::access::hash_secret(SECRET)?;
    let parsed = PasswordHash::new(&hash).map_err(|err| anyhow::anyhow!("{err}"))?;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        argon2::Argon2::default()
            .verify_password(SECRET.as_bytes(), &parsed)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    }
    let argon = started.elapsed() / ROUNDS;
    let known: [u8; 32] = sha2::Sha256::digest(SECRET.as_bytes()).into();
    let started = Instant::now();
    for _ in 0..100_000 {
        let digest: [u8; 32] = sha2::Sha256::digest(std::hint::black_box(SECRET).as_bytes()).into();
        std::hint::black_box(subtle::ConstantTimeEq::ct_eq(&digest[..], &known[..]));
    }
    let remembered = started.elapsed() / 100_000;
    println!(
        "authentication: Argon2id check {:.1} ms (first request of a credential, or a wrong secret); remembered-secret check {:.2} us (every other request)",
        argon.as_secs_f64() * 1000.0,
        remembered.as_secs_f64() * 1e6
    );
    Ok(())
}

pub(crate) struct Report {
    pub statements: usize,
    /// Bytes of statement JSON sent.
    pub bytes: usize,
    elapsed: Duration,
    /// Per request (HTTP) or per message (NATS), in microseconds.
    latency: Histogram<u64>,
}

impl Report {
    pub(crate) fn rate(&self) -> f64 {
        self.statements as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn print(&self, name: &str) {
        let rate = self.rate();
        let ms = |quantile: f64| self.latency.value_at_quantile(quantile) as f64 / 1000.0;
        println!(
            "{name:<28} {rate:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            ms(0.5),
            ms(0.99),
            self.latency.max() as f64 / 1000.0
        );
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")
}

/// Publishes statements `range` (made by `statement`) on `lrs.in.tool.bench` as a hub would:
/// batches of 100, 64 in flight, every ack awaited (and counted on `progress`). Returns the
/// bytes published.
pub async fn publish_batches(
    js: &jetstream::Context,
    range: std::ops::Range<usize>,
    statement: impl Fn(usize) -> Value,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<usize> {
    let messages: Vec<usize> = (range.start / 100..range.end.div_ceil(100)).collect();
    let mut bytes = 0;
    for window in messages.chunks(64) {
        let mut acks = Vec::new();
        for message in window {
            let body: Vec<Value> = (message * 100..(message + 1) * 100)
                .map(&statement)
                .collect();
            let body = serde_json::to_vec(&body)?;
            bytes += body.len();
            acks.push(js.publish("lrs.in.tool.bench", body.into()).await?);
        }
        for ack in acks {
            ack.await?;
            progress.inc(100);
        }
    }
    Ok(bytes)
}

/// The HTTP scenarios against running gateways (`--against`): the same statements, batches
/// and clients as in-process, so the figures compare.
async fn against(args: &BenchArgs) -> anyhow::Result<()> {
    let target = Target {
        bases: args
            .against
            .iter()
            .map(|base| {
                base.trim_end_matches('/')
                    .trim_end_matches("/xapi")
                    .to_owned()
            })
            .collect(),
        key: args.user.clone(),
        secret: args.password.clone(),
    };
    println!(
        "leerspoor bench --against {}: {} statements per scenario, {} concurrent clients",
        target.bases.join(","),
        args.statements,
        args.concurrency
    );
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10}",
        "scenario", "statements/s", "p50 ms", "p99 ms", "max ms"
    );
    for batch in &args.batches {
        let report = http_scenario(
            &target,
            args.statements,
            (*batch).max(1),
            args.concurrency,
            llo_statement,
        )
        .await?;
        report.print(&format!("HTTP POST, batch of {batch}"));
    }
    Ok(())
}

/// POSTs `total` statements (`statement(n)`, in requests of `batch`) to `target` from
/// `concurrency` clients; throughput and per-request latency.
pub(crate) async fn http_scenario(
    target: &Target,
    total: usize,
    batch: usize,
    concurrency: usize,
    statement: fn(usize) -> Value,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let requests = total.div_ceil(batch);
    // Bodies are made before the clock starts: the load generator's own work is not the LRS's.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..requests)
            .map(|request| {
                let body: Vec<Value> = (0..batch).map(|n| statement(request * batch + n)).collect();
                let body = if batch == 1 {
                    body[0].clone()
                } else {
                    Value::Array(body)
                };
                serde_json::to_vec(&body)
            })
            .collect::<Result<_, _>>()?,
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let bodies = bodies.clone();
        let url = format!(
            "{}/xapi/statements",
            target.bases[worker % target.bases.len()]
        );
        let (key, secret) = (target.key.clone(), target.secret.clone());
        workers.spawn(async move {
            let mut latency = histogram()?;
            loop {
                let request = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if request >= requests {
                    return Ok::<_, anyhow::Error>(latency);
                }
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .basic_auth(&key, Some(&secret))
                    .header("X-Experience-API-Version", "2.0.0")
                    .header("Content-Type", "application/json")
                    .body(bodies[request].clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "POST answered {}",
                    response.status()
                );
                latency.record(sent.elapsed().as_micros() as u64)?;
            }
        });
    }
    let mut latency = histogram()?;
    while let Some(worker) = workers.join_next().await {
        latency.add(worker??)?;
    }
    Ok(Report {
        bytes: bodies.iter().map(Vec::len).sum(),
        statements: requests * batch,
        elapsed: started.elapsed(),
        latency,
    })
}

/// Publishes like a hub would and measures until the store announced every message applied.
async fn nats_scenario(
    url: &str,
    total: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let client = async_nats::connect(url).await?;
    let mut applied = client.subscribe(bus::subjects::APPLIED).await?;
    let js = jetstream::new(client.clone());
    let messages = total.div_ceil(batch);
    let bodies: Vec<Vec<u8>> = (0..messages)
        .map(|message| {
            let body: Vec<Value> = (0..batch)
                .map(|n| llo_statement(message * batch + n))
                .collect();
            serde_json::to_vec(&body)
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut published: HashMap<u64, Instant> = HashMap::with_capacity(messages);
    let mut last_sequence = 0;
    // Publishes are pipelined in windows, as a hub's client library does.
    for window in bodies.chunks(concurrency.max(1) * 4) {
        let mut acks = Vec::new();
        for body in window {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("bench-{}", uuid::Uuid::new_v4()).as_str(),
            );
            let sent = Instant::now();
            let ack = js
                .publish_with_headers("lrs.in.tool.bench", headers, body.clone().into())
                .await?;
            acks.push((sent, ack));
        }
        for (sent, ack) in acks {
            let ack = ack.await?;
            published.insert(ack.sequence, sent);
            last_sequence = last_sequence.max(ack.sequence);
        }
    }
    let mut latency = histogram()?;
    let mut through = 0;
    let mut pending: Vec<u64> = published.keys().copied().collect();
    pending.sort_unstable();
    let mut pending = pending.into_iter().peekable();
    while through < last_sequence {
        let message = tokio::time::timeout(Duration::from_secs(60), applied.next())
            .await
            .context("store stopped announcing")?
            .context("announcements ended")?;
        let announcement: Applied = serde_json::from_slice(&message.payload)?;
        through = through.max(announcement.through);
        let now = Instant::now();
        while let Some(sequence) = pending.next_if(|sequence| *sequence <= through) {
            if let Some(sent) = published.get(&sequence) {
                latency.record(now.duration_since(*sent).as_micros() as u64)?;
            }
        }
    }
    Ok(Report {
        bytes: bodies.iter().map(Vec::len).sum(),
        statements: messages * batch,
        elapsed: started.elapsed(),
        latency,
    })
}

/// The store's whole apply of one 100-statement `lrs.in.http` message (parse, validate, conflict
/// checks, records, indexes, outbox), on a database that already holds 20,000 statements.
/// Returns microseconds per message on the apply thread, and until the index thread is done.
fn store_apply_per_message(validator: &xapi::Validator) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let db = store::db::Db::open(&dir.path().join("store.sled"))?;
    let authority = json!({"objectType": "Agent", "account": {"homePage": "https://x.example", "name": "bench"}});
    let message = |n: usize| -> anyhow::Result<Vec<u8>> {
        let statements: Vec<Value> = (0..100).map(|i| llo_statement(n * 100 + i)).collect();
        Ok(serde_json::to_vec(&bus::wire::HttpBatch {
            authority: authority.clone(),
            version: "2.0.0".into(),
            statements,
            define: true,
            bodies: Vec::new(),
        })?)
    };
    let warm: Vec<Vec<u8>> = (0..200).map(message).collect::<anyhow::Result<_>>()?;
    let timed: Vec<Vec<u8>> = (200..250).map(message).collect::<anyhow::Result<_>>()?;
    let mut sequence = 0;
    let mut apply = |payload: &[u8]| -> anyhow::Result<()> {
        sequence += 1;
        let incoming = store::db::Incoming {
            sequence,
            subject: bus::subjects::IN_HTTP,
            payload,
            published: chrono::Utc::now(),
            run: None,
        };
        let parsed = store::ingest::decode(
            incoming.subject,
            payload,
            None,
            None,
            &xapi::limits::Limits::default(),
        );
        let verdict = db.apply(&incoming, parsed, validator)?;
        anyhow::ensure!(verdict == bus::wire::Verdict::Applied, "{verdict:?}");
        Ok(())
    };
    for payload in &warm {
        apply(payload)?;
    }
    db.wait_for_indexes()?;
    let started = Instant::now();
    for payload in &timed {
        apply(payload)?;
    }
    let applied = started.elapsed();
    db.wait_for_indexes()?;
    let indexed = started.elapsed();
    let per_message = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / timed.len() as f64;
    Ok((per_message(applied), per_message(indexed)))
}

/// Where the time of one batch of 100 goes, stage by stage, in this process.
fn stage_profile() -> anyhow::Result<()> {
    const ROUNDS: usize = 50;
    let batch: Vec<Value> = (0..100).map(llo_statement).collect();
    let body = serde_json::to_vec(&batch)?;
    let validator = xapi::Validator::new()?;
    let time = |work: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            work()?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64)
    };
    let parse = time(&mut || {
        let parsed: Value = serde_json::from_slice(&body)?;
        std::hint::black_box(parsed);
        Ok(())
    })?;
    let validate = time(&mut || {
        validator
            .check_batch(&batch, xapi::XapiVersion::V2_0_0)
            .map_err(|err| anyhow::anyhow!("{err}"))
    })?;
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let records: Vec<(Vec<u8>, Vec<u8>)> = batch
        .iter()
        .map(|statement| {
            Ok((
                uuid::Uuid::new_v4().as_bytes().to_vec(),
                serde_json::to_vec(statement)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let index_entries: usize = batch
        .iter()
        .map(|statement| {
            store::indexer::entry_terms(&xapi::statement::index_terms(statement)).len()
        })
        .sum();
    let mut counter = 0u64;
    let statements_write = time(&mut || {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in &records {
            counter += 1;
            let mut unique = key.clone();
            unique.extend_from_slice(&counter.to_be_bytes());
            sled_batch.insert(unique, value.as_slice());
        }
        db.apply_batch(sled_batch)?;
        Ok(())
    })?;
    let index_write = time(&mut || {
        let mut sled_batch = sled::Batch::default();
        for _ in 0..index_entries {
            counter += 1;
            let mut key = vec![b'i'];
            key.extend_from_slice(&counter.to_be_bytes());
            sled_batch.insert(key, &[] as &[u8]);
        }
        db.apply_batch(sled_batch)?;
        Ok(())
    })?;
    let flush = time(&mut || {
        db.insert(b"m", &counter.to_be_bytes())?;
        db.flush()?;
        Ok(())
    })?;
    let (store_apply, store_indexed) = store_apply_per_message(&validator)?;
    // The batch as the store publishes it on `LRS_STORED`: completed, with an authority.
    let authority = json!({"objectType": "Agent", "account": {"homePage": "https://leerspoor.example", "name": KEY}});
    let stored_message = serde_json::to_vec(&bus::wire::StoredEvents {
        sequence: 1,
        events: batch
            .iter()
            .enumerate()
            .map(|(n, statement)| {
                let mut statement = statement.clone();
                let stored = "2026-12-01T10:00:00.000Z";
                xapi::statement::complete_for_store(
                    &mut statement,
                    stored,
                    &authority,
                    xapi::XapiVersion::V2_0_0,
                );
                bus::wire::StoredEvent {
                    kind: bus::wire::EventKind::Stored,
                    position: n as u64 + 1,
                    statement,
                }
            })
            .collect(),
    })?;
    let projector_read = time(&mut || {
        let message = projector::events::decode(&stored_message)?;
        std::hint::black_box(projector::contribution::effects(&message));
        Ok(())
    })?;
    println!();
    println!("stage profile, one batch of 100 statements ({} bytes, {index_entries} index entries), mean of {ROUNDS} rounds:", body.len());
    for (stage, micros) in [
        ("parse JSON", parse),
        ("validate (schema + rules)", validate),
        ("sled write: statements", statements_write),
        ("sled write: index entries", index_write),
        ("sled flush (fsync)", flush),
        ("store: apply one message", store_apply),
        ("store: ... and index it", store_indexed),
        ("projector: read 100 events", projector_read),
        (
            "projector: apply 100 events",
            100.0 / crate::bench_summaries::projection_events_per_second()? * 1e6,
        ),
    ] {
        println!(
            "  {stage:<28} {micros:>10.0} µs  ({:>8.0} statements/s alone)",
            100.0 / micros * 1e6
        );
    }
    println!(
        "  publish + JetStream fsync and the HTTP round trip: the HTTP p50 above, minus the stages"
    );
    Ok(())
}

/// Waits (30 s at most) until the gateway at `base` takes a credential the store was asked
/// to make at start (`[store] bootstrap`, the demo credential): the store makes it through
/// `LRS_IN` once it runs, and the gateway loads it at a request. The bench and the tests.
pub async fn wait_for_credential(base: &str, key: &str, secret: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = http
            .get(format!("{base}/xapi/statements?limit=1"))
            .basic_auth(key, Some(secret))
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .map(|response| response.status());
        if matches!(&status, Ok(status) if *status != reqwest::StatusCode::UNAUTHORIZED) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the bench credential was not taken within 30 s ({status:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
