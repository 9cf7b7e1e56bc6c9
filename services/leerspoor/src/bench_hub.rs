//! `leerspoor bench --hub N`: a hub node in front of a central `serve` on this machine, both
//! durable (`sync_interval: always`) with their own nats-servers, the hub a leaf node of the
//! central one. Measures how many statements per second the hub node accepts (HTTP batches of
//! 100 and single statements), then how fast a backlog of N statements, written while the
//! central site did not source the hub, drains into the central store once it does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::config::Config;
use crate::hubnode::HubNode;
use crate::node::{Node, Parts};

const HUB: &str = "bench-hub";

/// Statement number `n` of the hub: 5,000 workers of 200 companies.
fn attendance(n: usize) -> Value {
    json!({
        "actor": {"mbox": format!("mailto:w{}@bench.example", n % 5000)},
        "verb": {"id": xapi::llo::VERB_ATTENDED},
        "object": {"id": format!("https://bench.example/sessions/{}", n % 300)},
        "result": {"duration": format!("PT{}M", 30 + n % 150)},
        "timestamp": format!("2026-{:02}-{:02}T09:00:00Z", 1 + n % 12, 1 + n % 28),
        "context": {"extensions": {
            xapi::llo::HUB: HUB,
            xapi::llo::COMPANY: format!("KVK-{}", n % 200),
        }},
    })
}

/// Writes `total` statements in requests of `batch`, `clients` at a time; statements/s.
async fn write(
    base: &str,
    total: usize,
    batch: usize,
    clients: usize,
    first: usize,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let next = next.clone();
        let url = format!("{base}/xapi/statements");
        tasks.push(tokio::spawn(async move {
            loop {
                let at = next.fetch_add(batch, Ordering::Relaxed);
                if at >= total {
                    return anyhow::Ok(());
                }
                let end = (at + batch).min(total);
                let body: Vec<Value> = (first + at..first + end).map(attendance).collect();
                let body = if batch == 1 {
                    body.into_iter().next().unwrap_or_default()
                } else {
                    Value::Array(body)
                };
                let response = http
                    .post(&url)
                    .basic_auth(crate::config::DEMO_KEY, Some(crate::config::DEMO_SECRET))
                    .header("X-Experience-API-Version", "2.0.0")
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the hub node answered {}",
                    response.status()
                );
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(backlog: usize) -> anyhow::Result<()> {
    let central_dir = tempfile::tempdir().context("temp dir")?;
    let hub_dir = tempfile::tempdir().context("temp dir")?;
    let mut central_config = Config::load(None)?;
    central_config.data_dir = central_dir.path().to_owned();
    central_config.nats.port = 0;
    central_config.gateway.listen = "127.0.0.1:0".parse()?;
    central_config.hubs.leaf_listen = Some("127.0.0.1:0".parse()?);
    let central = Node::start(central_config.clone(), Parts::All).await?;
    let leaf = central.leaf_addr().context("the central leaf port")?;
    let nats_url = central.nats_url().to_owned();
    let central_stop = tokio_util::sync::CancellationToken::new();
    let central_run = tokio::spawn(central.run(central_stop.clone()));
    let (user, password) =
        crate::node::local_credentials(central_dir.path()).context("serve's NATS password")?;
    let admin = async_nats::ConnectOptions::new()
        .user_and_password(user, password)
        .custom_inbox_prefix("_LRS_INBOX")
        .connect(nats_url.as_str())
        .await?;
    // The hub's user first, its source later: the hub builds a backlog meanwhile.
    let hub_password = crate::access::new_secret();
    crate::hubs::make_user(&admin, HUB, &hub_password).await?;

    let mut hub_config = Config::load(None)?;
    hub_config.data_dir = hub_dir.path().to_owned();
    hub_config.hub.id = Some(HUB.to_owned());
    hub_config.hub.central_nats = Some(format!("nats-leaf://hub-{HUB}:{hub_password}@{leaf}"));
    hub_config.hub.listen = "127.0.0.1:0".parse()?;
    let hub = HubNode::start(&hub_config).await?;
    let base = format!("http://{}", hub.http_addr());
    let hub_stop = tokio_util::sync::CancellationToken::new();
    let hub_run = tokio::spawn(hub.run(hub_stop.clone()));

    println!("hub node accepting (durable at the hub, central site not sourcing):");
    let singles = 2_000.min(backlog);
    let rate = write(&base, singles, 1, 32, 0).await?;
    println!("  single-statement POSTs, 32 clients: {rate:>8.0} statements/s");
    let batched = backlog - singles;
    let rate = write(&base, batched, 100, 4, singles).await?;
    println!(
        "  batches of 100, 4 clients:          {rate:>8.0} statements/s ({batched} statements)"
    );

    println!("draining a backlog of {backlog} statements into the central store:");
    let js = async_nats::jetstream::new(admin.clone());
    let before = js
        .get_stream(bus::subjects::STREAM_IN)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let started = Instant::now();
    bus::leaf::add_source(&js, HUB).await?;
    let messages = before + (singles + batched.div_ceil(100)) as u64;
    let mut sourced_at = None;
    loop {
        let mut stream = js.get_stream(bus::subjects::STREAM_IN).await?;
        let info = stream.info().await?.clone();
        let lag = info.sources.first().map_or(u64::MAX, |source| source.lag);
        if sourced_at.is_none() && info.state.last_sequence >= messages && lag == 0 {
            sourced_at = Some(started.elapsed());
        }
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&bus::subjects::store_consumer(bus::subjects::MAIN_REPLICA))
            .await
            .map_err(|err| anyhow::anyhow!("the store's consumer: {err}"))?;
        let store = consumer.info().await?;
        if sourced_at.is_some() && store.num_pending == 0 && store.num_ack_pending == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the backlog did not drain in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let applied = started.elapsed();
    let sourced = sourced_at.unwrap_or(applied);
    println!(
        "  in LRS_IN after {:.1} s ({:.0} statements/s), applied by the store after {:.1} s ({:.0} statements/s)",
        sourced.as_secs_f64(),
        backlog as f64 / sourced.as_secs_f64(),
        applied.as_secs_f64(),
        backlog as f64 / applied.as_secs_f64()
    );
    hub_stop.cancel();
    hub_run.await??;
    central_stop.cancel();
    central_run.await??;
    Ok(())
}
