//! `leerspoor bench --replica-from-snapshot N`: a store of N statements, then a second store
//! replica that starts from a snapshot of it (taken, sent through the object store, loaded)
//! and applies what came after, while writes go on. How long a new replica takes to join.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bus::subjects::{Topology, MAIN_REPLICA};

use crate::config::{Config, NatsConfig};
use crate::demo::llo_statement;
use crate::node::{Node, Parts};

pub async fn from_snapshot(nats_url: &str, statements: usize) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await?;
    let js = jetstream::new(client.clone());
    let started = Instant::now();
    crate::bench::publish_batches(
        &js,
        0..statements,
        llo_statement,
        &indicatif::ProgressBar::hidden(),
    )
    .await?;
    crate::bench_summaries::drain_time(&js).await?;
    println!(
        "{statements} statements stored in the main replica in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Replica "b", from a snapshot, while 100,000 more statements arrive.
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        nats: NatsConfig {
            url: Some(nats_url.to_owned()),
            ..NatsConfig::default()
        },
        ..Config::default()
    };
    config.store.demo_credential = false;
    config.replicas.name = "b".into();
    config.replicas.stores = vec![MAIN_REPLICA.into(), "b".into()];
    config.replicas.from_snapshot = true;
    let more = statements / 10;
    let writing = tokio::spawn({
        let js = js.clone();
        async move {
            crate::bench::publish_batches(
                &js,
                statements..statements + more,
                llo_statement,
                &indicatif::ProgressBar::hidden(),
            )
            .await
        }
    });
    let joining = Instant::now();
    let node = Node::start(config, Parts::Store).await?;
    let loaded = joining.elapsed();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(node.run(shutdown.clone()));
    writing.await.context("writer")??;
    let topology = Topology {
        stores: vec![MAIN_REPLICA.into(), "b".into()],
        ..Topology::default()
    };
    let caught_up = loop {
        let statuses =
            crate::replicas::statuses(&client, &topology, false, Duration::from_secs(10)).await?;
        let stores: Vec<_> = statuses.iter().filter(|s| s.kind == "store").collect();
        if stores.len() == 2 && stores.iter().all(|status| status.lag == Some(0)) {
            break joining.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let statuses =
        crate::replicas::statuses(&client, &topology, true, Duration::from_secs(600)).await?;
    let identical = crate::replicas::identical(&statuses, "store");
    println!(
        "replica b from a snapshot: started (snapshot taken, sent, loaded) in {:.1} s, caught up \
         with {more} statements written meanwhile after {:.1} s; digests {}",
        loaded.as_secs_f64(),
        caught_up.as_secs_f64(),
        match identical {
            Some(true) => "equal",
            Some(false) => "DIFFER",
            None => "not comparable",
        }
    );
    shutdown.cancel();
    running.await.context("replica task")??;
    anyhow::ensure!(identical == Some(true), "the replicas differ: {statuses:?}");
    Ok(())
}
