//! Restarts, crashes and outages: nothing acknowledged is lost, nothing is applied twice.

use std::collections::BTreeSet;
use std::process::Stdio;

use async_nats::jetstream;
use bus::subjects;
use bus::wire::{EventKind, StoredEvents};
use leerspoor::node::Parts;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, Nats};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{
    config, grant_via_cli, ids, new_id, start_node, statement, with_id, TestApp, KEY, SECRET, WAIT,
};

/// Publishes `batches` messages of `per_batch` statements with known ids; returns the ids.
async fn publish_batches(js: &jetstream::Context, batches: usize, per_batch: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut acks = Vec::new();
    for batch in 0..batches {
        let statements: Vec<Value> = (0..per_batch)
            .map(|n| {
                with_id(
                    statement(
                        &format!("w{batch}-{n}@example.org"),
                        "attended",
                        "https://x.example/1",
                    ),
                    &new_id(),
                )
            })
            .collect();
        all.extend(ids(&statements));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("load-{batch}").as_str());
        let ack = js
            .publish_with_headers(
                "lrs.in.tool.load",
                headers,
                Value::Array(statements).to_string().into(),
            )
            .await
            .expect("publish");
        acks.push(ack);
    }
    for ack in acks {
        ack.await.expect("jetstream ack");
    }
    all
}

/// Messages on LRS_STORED so far.
async fn stored_messages(js: &jetstream::Context) -> u64 {
    let mut stream = js
        .get_stream(subjects::STREAM_STORED)
        .await
        .expect("stream");
    stream.info().await.expect("info").state.messages
}

/// The ids of every `stored` event on LRS_STORED, in stream order.
async fn stored_event_ids(js: &jetstream::Context) -> Vec<String> {
    let stream = js
        .get_stream(subjects::STREAM_STORED)
        .await
        .expect("stream");
    let mut ids = Vec::new();
    for sequence in 1..=stored_messages(js).await {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let events: StoredEvents = serde_json::from_slice(&message.payload).expect("events");
        ids.extend(
            events
                .events
                .iter()
                .filter(|event| event.kind == EventKind::Stored)
                .map(|event| event.statement["id"].as_str().expect("id").to_owned()),
        );
    }
    ids
}

/// Waits until LRS_STORED holds at least as many `stored` events as statements were published:
/// the outbox publishes after the statements are readable, so the listing can be first.
async fn every_event_stored(js: &jetstream::Context, published: &[String]) -> Vec<String> {
    wait_until("every stored event on LRS_STORED", WAIT, || async {
        let ids = stored_event_ids(js).await;
        (ids.len() >= published.len()).then_some(ids)
    })
    .await
}

async fn count_via_http(http: &reqwest::Client, base: &str) -> Option<Vec<String>> {
    list_via_http(http, base, "limit=100").await
}

/// Every statement id a query returns, following `more`.
async fn list_via_http(http: &reqwest::Client, base: &str, query: &str) -> Option<Vec<String>> {
    let mut next = format!("/xapi/statements?{query}");
    let mut found = Vec::new();
    loop {
        let response = http
            .get(format!("{base}{next}"))
            .basic_auth(KEY, Some(SECRET))
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let page: Value = response.json().await.ok()?;
        found.extend(ids(page["statements"].as_array()?));
        match page["more"].as_str() {
            Some(more) if !more.is_empty() => next = more.to_owned(),
            _ => return Some(found),
        }
    }
}

/// Waits until the listing holds at least as many statements as were published.
async fn every_statement_listed(
    http: &reqwest::Client,
    base: &str,
    published: &[String],
) -> Vec<String> {
    wait_until("every statement applied", WAIT, || async {
        let found = count_via_http(http, base).await?;
        (found.len() >= published.len()).then_some(found)
    })
    .await
}

/// `found` holds every id of `published` once and nothing else; `what` names the listing.
fn assert_exactly(what: &str, found: &[String], published: &[String]) {
    let got: BTreeSet<&String> = found.iter().collect();
    assert_eq!(
        got.len(),
        found.len(),
        "{what}: no statement is listed twice"
    );
    let wanted: BTreeSet<&String> = published.iter().collect();
    let missing: Vec<_> = wanted.difference(&got).collect();
    let extra: Vec<_> = got.difference(&wanted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: every published statement, and nothing else: {} of {} missing (first {:?}), {} not published (first {:?})",
        missing.len(),
        wanted.len(),
        missing.first(),
        extra.len(),
        extra.first(),
    );
}

/// A NATS server, a data folder and a gateway node on them, with a JetStream context and an
/// HTTP client: what the tests of a store that stops, dies or starts late begin with.
struct GatewayUp {
    nats: Nats,
    data: tempfile::TempDir,
    gateway: crate::helpers::Running,
    base: String,
    js: jetstream::Context,
    http: reqwest::Client,
}

impl GatewayUp {
    async fn start() -> GatewayUp {
        let nats = Nats::start().await;
        let data = tempfile::tempdir().expect("temp dir");
        let gateway = start_node(config(&nats.url(), data.path()), Parts::Gateway).await;
        let base = format!("http://{}", gateway.http_addr.expect("gateway"));
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
        GatewayUp {
            nats,
            data,
            gateway,
            base,
            js,
            http: reqwest::Client::new(),
        }
    }
}

#[tokio::test]
async fn the_store_stopped_mid_stream_resumes_without_loss_or_duplicates() {
    let GatewayUp {
        nats,
        data,
        gateway,
        base,
        js,
        http,
    } = GatewayUp::start().await;
    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;

    let published = publish_batches(&js, 200, 10).await;
    // Stop the store as soon as it is part-way through.
    wait_until("some statements applied", WAIT, || async {
        (stored_messages(&js).await > 0).then_some(())
    })
    .await;
    store.stop().await;

    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;
    let found = every_statement_listed(&http, &base, &published).await;
    assert_exactly("the statements listed", &found, &published);
    assert_exactly(
        "the stored events on LRS_STORED",
        &every_event_stored(&js, &published).await,
        &published,
    );
    store.stop().await;
    gateway.stop().await;
}

/// A batch delivered while more earlier messages are missing than one gap fill reads (256),
/// as when a connection that had pulled them died: the store applies what it read, and the
/// batch's later messages wait for the rest rather than take positions before them; a message
/// deleted from `LRS_IN` meanwhile is passed over. Every replica's positions follow the log's
/// order, which their equal digests rest on.
#[tokio::test]
async fn a_batch_behind_a_wide_gap_waits_and_positions_follow_the_log() {
    const TAKEN: usize = 300;
    let GatewayUp {
        nats,
        data,
        gateway,
        base,
        js,
        http,
    } = GatewayUp::start().await;
    let mut published = publish_batches(&js, 400, 1).await;

    // Another connection takes the first 300 from the store's consumer and keeps them in
    // progress: the store meets a gap of 300 below its first batch. One of them an operator
    // deletes from LRS_IN: it will never come, and the store passes over it.
    let consumer = bus::pull::durable(
        &js,
        subjects::STREAM_IN,
        &subjects::store_consumer(subjects::MAIN_REPLICA),
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("the store's consumer");
    let mut taken = Vec::new();
    let mut messages = consumer
        .fetch()
        .max_messages(TAKEN)
        .messages()
        .await
        .expect("fetch");
    while let Some(message) = futures::StreamExt::next(&mut messages).await {
        taken.push(message.expect("message"));
    }
    assert_eq!(taken.len(), TAKEN);
    const DELETED: u64 = 10;
    js.get_stream(subjects::STREAM_IN)
        .await
        .expect("LRS_IN")
        .delete_message(DELETED)
        .await
        .expect("delete");
    published.remove(DELETED as usize - 1);
    let release = tokio_util::sync::CancellationToken::new();
    let holder = tokio::spawn({
        let release = release.clone();
        async move {
            loop {
                for message in &taken {
                    let _ = message.ack_with(jetstream::AckKind::Progress).await;
                }
                tokio::select! {
                    _ = release.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
                }
            }
            // Given back: delivered to the store at once.
            for message in &taken {
                let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
            }
        }
    });

    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;
    // The store applied its first batch and what it read of the gap.
    wait_until("the gap's first part applied", WAIT, || async {
        (stored_event_ids(&js).await.len() >= 255).then_some(())
    })
    .await;
    release.cancel();
    holder.await.expect("holder");

    let found = every_statement_listed(&http, &base, &published).await;
    assert_exactly("the statements listed", &found, &published);
    let in_order = list_via_http(&http, &base, "ascending=true&limit=100")
        .await
        .expect("listing in order");
    let first_out_of_place = in_order
        .iter()
        .zip(&published)
        .position(|(listed, sent)| listed != sent);
    assert_eq!(
        first_out_of_place, None,
        "positions follow the log: the n-th message's statement is the n-th stored"
    );
    assert_eq!(
        every_event_stored(&js, &published).await,
        published,
        "stored events in the log's order"
    );
    store.stop().await;
    gateway.stop().await;
}

fn write_fast_redelivery_config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("data dir");
    let path = dir.join("store.toml");
    std::fs::write(&path, "[store]\nack_wait_secs = 2\n").expect("write config");
    path
}

/// `leerspoor store` as a child process, so the test can kill it without warning.
fn spawn_store(nats_url: &str, data_dir: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args(["store", "--nats-url", nats_url, "--data-dir"])
        .arg(data_dir)
        .env("LEERSPOOR_CONFIG", write_fast_redelivery_config(data_dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A test that fails part-way does not leave the store running after it.
        .kill_on_drop(true)
        .spawn()
        .expect("spawn leerspoor store")
}

#[tokio::test]
async fn a_killed_store_loses_nothing_and_applies_nothing_twice() {
    let GatewayUp {
        nats,
        data,
        gateway,
        base,
        js,
        http,
    } = GatewayUp::start().await;

    let mut store = spawn_store(&nats.url(), data.path());
    grant_via_cli(&nats.url()).await;
    let published = publish_batches(&js, 300, 10).await;
    wait_until("some statements applied", WAIT, || async {
        (stored_messages(&js).await > 0).then_some(())
    })
    .await;
    store.kill().await.expect("kill -9");

    let store = spawn_store(&nats.url(), data.path());
    let found = every_statement_listed(&http, &base, &published).await;
    assert_exactly("the statements listed", &found, &published);
    assert_exactly(
        "the stored events on LRS_STORED",
        &every_event_stored(&js, &published).await,
        &published,
    );
    // The indexes are complete too (the store re-indexes what a crash left unindexed).
    let by_verb = list_via_http(
        &http,
        &base,
        "verb=http%3A%2F%2Fadlnet.gov%2Fexpapi%2Fverbs%2Fattended",
    )
    .await
    .expect("verb query");
    assert_exactly("the statements listed by verb", &by_verb, &published);
    drop(store);
    gateway.stop().await;
}

#[tokio::test]
async fn gateway_and_store_in_separate_processes_serve_the_api() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let config_path = data.path().join("leerspoor.toml");
    std::fs::write(&config_path, "[gateway]\nlisten = \"127.0.0.1:0\"\n").expect("write config");
    let store = spawn_store(&nats.url(), &data.path().join("store"));
    grant_via_cli(&nats.url()).await;
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args(["gateway", "--nats-url", &nats.url(), "--config"])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn leerspoor gateway");
    let stdout = gateway.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready_line = loop {
        let line = lines
            .next_line()
            .await
            .expect("read the gateway's output")
            .expect("gateway prints its endpoint");
        if line.contains("http://") {
            break line;
        }
    };
    // Keep reading, as a supervisor would, so the gateway never writes into a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let endpoint = ready_line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("url")
        .trim_end_matches("/xapi")
        .to_owned();

    let http = reqwest::Client::new();
    let body = statement("ann@example.org", "attended", "https://x.example/1");
    let response = http
        .post(format!("{endpoint}/xapi/statements"))
        .basic_auth(KEY, Some(SECRET))
        .header("X-Experience-API-Version", "1.0.3")
        .json(&body)
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let posted: Vec<String> = response.json().await.expect("ids");
    let found = count_via_http(&http, &endpoint).await.expect("listing");
    assert_eq!(found, posted);
    drop((store, gateway));
}

#[tokio::test]
async fn with_nats_down_a_write_is_a_503_with_retry_after_never_a_false_200() {
    let mut app = TestApp::start().await;
    app.nats.server.kill().await;
    let response = app
        .post_statements(&json!(statement(
            "a@example.org",
            "attended",
            "https://x.example/1"
        )))
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "unavailable");
}
