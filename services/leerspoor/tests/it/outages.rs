//! NATS going away and coming back, processes killed without warning, NATS's data lost: the
//! services ride through what a restart would cure, converge in seconds, and refuse what
//! would lose data, saying how to recover.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leerspoor::node::{Node, Parts};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, Nats};

use crate::helpers::{
    config, hub_statement, start_node, statement, wait_for_credential_at, TestApp, KEY, SECRET,
    WAIT,
};

#[tokio::test]
async fn a_nats_restart_does_not_stop_the_services() {
    let mut app = TestApp::start().await;
    assert_eq!(
        app.post_statements(&hub_statement("a@example.org", "outage"))
            .await
            .status(),
        StatusCode::OK
    );
    app.nats.restart().await;
    // The clients reconnect, the store and projector pull again: writes and summaries work.
    let one = hub_statement("b@example.org", "outage");
    wait_until("a write succeeds after the restart", WAIT, || async {
        (app.post_statements(&one).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    wait_until("both counted", WAIT, || async {
        (app.hub_summary("outage").await?["statements"] == json!(2)).then_some(())
    })
    .await;
    assert!(app.is_running(), "no part stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_recreated_lrs_in_is_refused_until_adopted_and_never_answered_falsely() {
    let first_nats = Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let node = start_node(config(&first_nats.url(), data.path()), Parts::All).await;
    let base = format!("http://{}", node.http_addr.expect("gateway"));
    wait_for_credential_at(&base).await;
    let http = reqwest::Client::new();
    for n in 0..3 {
        let response = http
            .post(format!("{base}/xapi/statements"))
            .basic_auth(KEY, Some(SECRET))
            .header("X-Experience-API-Version", "2.0.0")
            .json(&statement(
                &format!("n{n}@example.org"),
                "attended",
                "https://x.example/1",
            ))
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::OK);
    }
    node.stop().await;
    drop(first_nats);

    // NATS's data is gone; the store's sled remembers sequence 4 of another LRS_IN (the demo
    // credential, then the three statements).
    let fresh_nats = Nats::start().await;
    let refused = Node::start(config(&fresh_nats.url(), data.path()), Parts::All).await;
    let message = format!("{:#}", refused.err().expect("the store refuses to run"));
    assert!(message.contains("--adopt-new-stream"), "{message}");
    assert!(message.contains("through sequence 4"), "{message}");

    let mut adopting = config(&fresh_nats.url(), data.path());
    adopting.store.adopt_new_stream = true;
    let node = start_node(adopting, Parts::All).await;
    let base = format!("http://{}", node.http_addr.expect("gateway"));
    let response = http
        .post(format!("{base}/xapi/statements"))
        .basic_auth(KEY, Some(SECRET))
        .header("X-Experience-API-Version", "2.0.0")
        .json(&statement(
            "new@example.org",
            "attended",
            "https://x.example/1",
        ))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<String> = response.json().await.expect("ids");
    let found = http
        .get(format!("{base}/xapi/statements?statementId={}", ids[0]))
        .basic_auth(KEY, Some(SECRET))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http");
    assert_eq!(
        found.status(),
        StatusCode::OK,
        "the acknowledged statement is stored"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_running_gateway_does_not_take_a_recreated_lrs_in_for_applied() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let gateway = start_node(config(&nats.url(), data.path()), Parts::Gateway).await;
    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;
    let app = TestApp::attach(
        nats,
        format!("http://{}", gateway.http_addr.expect("gateway")),
    );
    app.wait_for_credential().await;
    for n in 0..3 {
        let response = app
            .post_statements(&statement(
                &format!("n{n}@example.org"),
                "attended",
                "https://x.example/1",
            ))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // LRS_IN goes away under the running services and comes back empty.
    let js = async_nats::jetstream::new(app.nats_client().await);
    js.delete_stream(bus::subjects::STREAM_IN)
        .await
        .expect("delete LRS_IN");
    // The store notices another stream and stops, saying so.
    let stopped = tokio::time::timeout(WAIT, store.handle)
        .await
        .expect("the store stops");
    let message = format!("{:#}", stopped.expect("task").expect_err("an error"));
    assert!(message.contains("--adopt-new-stream"), "{message}");
    // The gateway, whose watermark counts in the old stream, answers what is true: 503.
    bus::subjects::ensure_streams(&js, &bus::subjects::Topology::default())
        .await
        .expect("LRS_IN again");
    let response = app
        .post_statements(&statement(
            "late@example.org",
            "attended",
            "https://x.example/1",
        ))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never a 200 for what no store applied"
    );
    gateway.stop().await;
}

/// `leerspoor serve` as a child process with its own nats-server, in `data_dir`; returns it
/// with its HTTP base URL and NATS URL.
fn spawn_serve(data_dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "serve",
            "--nats-port",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn leerspoor serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let ready = lines
        .find(|line| line.contains("is ready"))
        .expect("serve prints where it listens");
    std::thread::spawn(move || lines.for_each(drop));
    let word = |prefix: &str| {
        ready
            .split_whitespace()
            .find(|word| word.starts_with(prefix))
            .expect("url")
            .trim_end_matches(')')
            .to_owned()
    };
    let base = word("http://").trim_end_matches("/xapi").to_owned();
    (child, base, word("nats://"))
}

/// The pid of the nats-server `serve` started in `data_dir` (from its ports file).
fn nats_pid(data_dir: &std::path::Path) -> Option<u32> {
    let entry = std::fs::read_dir(data_dir.join("nats").join("ports"))
        .ok()?
        .flatten()
        .next()?;
    let name = entry.file_name().to_string_lossy().into_owned();
    name.trim_end_matches(".ports")
        .rsplit('_')
        .next()?
        .parse()
        .ok()
}

/// Kills `serve` and the nats-server it started (which a `kill -9` would leave behind).
fn stop_serve(mut serve: Child, data_dir: &std::path::Path) {
    let nats = nats_pid(data_dir);
    let _ = serve.kill();
    let _ = serve.wait();
    if let Some(pid) = nats {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

async fn post_as_demo(http: &reqwest::Client, base: &str, body: &Value) -> Option<StatusCode> {
    http.post(format!("{base}/xapi/statements"))
        .basic_auth("leerspoor", Some("leerspoor"))
        .header("X-Experience-API-Version", "2.0.0")
        .json(body)
        .send()
        .await
        .ok()
        .map(|response| response.status())
}

#[tokio::test]
async fn serve_guards_its_nats_with_a_password_and_restarts_it_when_it_dies() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut serve, base, nats_url) = spawn_serve(data.path());
    let http = reqwest::Client::new();
    let body = hub_statement("a@example.org", "own-nats");
    wait_until("serve answers", WAIT, || async {
        (post_as_demo(&http, &base, &body).await? == StatusCode::OK).then_some(())
    })
    .await;

    // Another user of this machine cannot talk to it without the password in the data folder.
    let refusal = async_nats::connect(&nats_url)
        .await
        .expect_err("an anonymous NATS client is refused");
    assert!(
        refusal.to_string().to_lowercase().contains("authorization"),
        "{refusal}"
    );
    let password_file = leerspoor::node::local_password_path(data.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .expect("password file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (user, password) = leerspoor::node::local_credentials(data.path()).expect("credentials");
    async_nats::ConnectOptions::with_user_and_password(user, password)
        .connect(&nats_url)
        .await
        .expect("the services' user gets in");

    // Its nats-server dies: serve starts it again and goes on.
    let pid = nats_pid(data.path()).expect("nats-server pid");
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let after = hub_statement("b@example.org", "own-nats");
    wait_until("a write succeeds after the restart", WAIT, || async {
        (post_as_demo(&http, &base, &after).await? == StatusCode::OK).then_some(())
    })
    .await;
    assert!(
        serve.try_wait().expect("status").is_none(),
        "serve is still running"
    );
    assert_ne!(nats_pid(data.path()), Some(pid), "a new nats-server");
    stop_serve(serve, data.path());
}

#[tokio::test]
async fn after_a_kill_dash_nine_serve_converges_within_seconds() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut serve, base, _) = spawn_serve(data.path());
    let http = reqwest::Client::new();
    wait_until("serve answers", WAIT, || async {
        (post_as_demo(&http, &base, &hub_statement("first@example.org", "crash")).await?
            == StatusCode::OK)
            .then_some(())
    })
    .await;
    // Writes in flight while serve is killed.
    let writes = (0..40).map(|n| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let batch: Vec<Value> = (0..50)
                .map(|i| hub_statement(&format!("w{n}-{i}@example.org"), "crash"))
                .collect();
            post_as_demo(&http, &base, &Value::Array(batch)).await
        }
    });
    let load = futures::future::join_all(writes);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        serve.kill().expect("kill -9");
        serve.wait().expect("reaped");
    };
    let (outcomes, ()) = tokio::join!(load, kill);
    // Its nats-server outlives it, as after a real crash: the next serve stops it first.
    let orphan = nats_pid(data.path()).expect("the orphaned nats-server");
    let acknowledged = outcomes
        .iter()
        .filter(|status| **status == Some(StatusCode::OK))
        .count();

    let (serve, base, nats_url) = spawn_serve(data.path());
    assert!(
        !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the orphaned nats-server was stopped"
    );
    let (user, password) = leerspoor::node::local_credentials(data.path()).expect("credentials");
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_user_and_password(user, password)
            .connect(&nats_url)
            .await
            .expect("nats"),
    );
    let waiting = |stream: &'static str| {
        let js = js.clone();
        async move {
            let mut handle = js.get_stream(stream).await.ok()?;
            Some(handle.info().await.ok()?.state.messages)
        }
    };
    // The messages delivered to the dead process come back after ack_wait (5 s): everything
    // is applied and counted well within 15 s of the restart.
    let stored = wait_until("serve answers again", WAIT, || async {
        let response = http
            .get(format!("{base}/xapi/statements?limit=1"))
            .basic_auth("leerspoor", Some("leerspoor"))
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    let () = stored;
    let started = std::time::Instant::now();
    wait_until(
        "the summary equals what is stored",
        Duration::from_secs(15),
        || async {
            let count = count_stored(&http, &base).await?;
            let response = http
                .get(format!("{base}/summaries/hubs/crash"))
                .basic_auth("leerspoor", Some("leerspoor"))
                .send()
                .await
                .ok()?;
            let hub: Value = response.json().await.ok()?;
            let drained = waiting(bus::subjects::STREAM_IN).await? == 0
                && waiting(bus::subjects::STREAM_STORED).await? == 0;
            // Nothing acknowledged is lost, nothing waits, and every stored statement is counted.
            (drained && count > acknowledged * 50 && hub["statements"] == json!(count))
                .then_some(())
        },
    )
    .await;
    eprintln!("converged {:?} after the restart", started.elapsed());
    stop_serve(serve, data.path());
}

/// How many statements the LRS holds, following `more`.
async fn count_stored(http: &reqwest::Client, base: &str) -> Option<usize> {
    let mut next = "/xapi/statements?limit=100".to_owned();
    let mut count = 0;
    loop {
        let response = http
            .get(format!("{base}{next}"))
            .basic_auth("leerspoor", Some("leerspoor"))
            .header("X-Experience-API-Version", "2.0.0")
            .send()
            .await
            .ok()?;
        let page: Value = response.json().await.ok()?;
        count += page["statements"].as_array()?.len();
        match page["more"].as_str() {
            Some(more) if !more.is_empty() => next = more.to_owned(),
            _ => return Some(count),
        }
    }
}

/// With no store to apply them, small writes sent together (a bundle waiting for its verdict,
/// the others queued behind it) each answer 503 once their own write timeout has passed, not
/// after the bundle before them has used up its own.
#[tokio::test]
async fn writes_queued_behind_a_bundle_without_a_verdict_answer_503_in_their_own_time() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut gateway_config = config(&nats.url(), data.path());
    gateway_config.gateway.write_timeout_secs = 2;
    let gateway = start_node(gateway_config, Parts::Gateway).await;
    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;
    let app = TestApp::attach(
        nats,
        format!("http://{}", gateway.http_addr.expect("gateway")),
    );
    app.wait_for_credential().await;
    store.stop().await;
    let bodies: Vec<Value> = (0..8)
        .map(|n| {
            statement(
                &format!("q{n}@example.org"),
                "attended",
                "https://x.example/1",
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let writes = bodies.iter().map(|body| app.post_statements(body));
    for response in futures::future::join_all(writes).await {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // One write timeout each (2 s), where one behind the other would take two or more.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3_900),
        "8 writes took {took:?} with a write timeout of 2 s"
    );
    gateway.stop().await;
}
