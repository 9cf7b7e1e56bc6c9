//! `leerspoor bench --hub N`: a hub node in front of a central `serve` on this machine, both
//! durable (`sync_interval: always`) with their own nats-servers, the hub a leaf node of the
//! central one. Measures how many statements per second the hub node accepts (HTTP batches of
//! 100 and single statements), then how fast a backlog of N statements, written while the
//! central site did not source the hub, drains into the central store once it does.

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
    let target = crate::bench::Target {
        bases: vec![format!("http://{}", hub.http_addr())],
        key: crate::config::DEMO_KEY.to_owned(),
        secret: crate::config::DEMO_SECRET.to_owned(),
    };
    let hub_stop = tokio_util::sync::CancellationToken::new();
    let hub_run = tokio::spawn(hub.run(hub_stop.clone()));

    println!("hub node accepting (durable at the hub, central site not sourcing):");
    println!(
        "{:<28} {:>12} {:>10} {:>10} {:>10}",
        "scenario", "statements/s", "p50 ms", "p99 ms", "max ms"
    );
    let singles = 2_000.min(backlog);
    crate::bench::http_scenario(&target, singles, 1, 32, attendance)
        .await?
        .print("POST one, 32 clients");
    let batched = backlog - singles;
    crate::bench::http_scenario(&target, batched, 100, 4, attendance)
        .await?
        .print("POST batch of 100, 4 clients");

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
