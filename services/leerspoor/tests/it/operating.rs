//! Operating Leerspoor: metrics, health, version pinning, log format.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

/// The value of the first sample of `name` whose labels contain every one of `labels`.
pub fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

pub async fn metrics_page(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain")));
    response.text().await.expect("text")
}

#[tokio::test]
async fn metrics_need_no_credential_and_move_with_load() {
    let app = TestApp::start().await;
    let before = metrics_page(&app.base).await;
    let accepted_before = sample(
        &before,
        "leerspoor_statements_accepted_total",
        &["source=\"http\""],
    )
    .unwrap_or(0.0);

    let statements: Vec<Value> = (0..25)
        .map(|n| {
            statement(
                &format!("w{n}@example.org"),
                "attended",
                "https://hub.example/s/1",
            )
        })
        .collect();
    let response = app.post_statements(&json!(statements)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // One the store refuses (a conflict: the same id, other content).
    let id = new_id();
    let first = with_id(
        statement("a@example.org", "attended", "https://x.example/1"),
        &id,
    );
    let other = with_id(
        statement("b@example.org", "attended", "https://x.example/1"),
        &id,
    );
    assert_eq!(
        app.post_statements(&json!([first])).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.post_statements(&json!([other])).await.status(),
        StatusCode::CONFLICT
    );
    let unauthenticated = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    let page = metrics_page(&app.base).await;
    let accepted = sample(
        &page,
        "leerspoor_statements_accepted_total",
        &["source=\"http\""],
    )
    .expect("accepted counter");
    assert_eq!(accepted - accepted_before, 26.0, "{page}");
    assert!(
        sample(
            &page,
            "leerspoor_statements_rejected_total",
            &["source=\"http\""]
        )
        .is_some_and(|rejected| rejected >= 1.0),
        "{page}"
    );
    let posts = sample(
        &page,
        "leerspoor_http_requests_total",
        &[
            "route=\"/xapi/statements\"",
            "method=\"POST\"",
            "status=\"200\"",
        ],
    )
    .expect("request counter by route");
    assert!(posts >= 2.0);
    assert!(sample(
        &page,
        "leerspoor_http_requests_total",
        &["route=\"/xapi/statements\"", "status=\"401\""],
    )
    .is_some());
    assert!(sample(
        &page,
        "leerspoor_http_request_duration_seconds_bucket",
        &[
            "route=\"/xapi/statements\"",
            "method=\"POST\"",
            "le=\"+Inf\""
        ],
    )
    .is_some_and(|count| count >= 3.0));
    assert!(sample(&page, "leerspoor_store_apply_seconds_count", &[]).is_some_and(|n| n >= 3.0));
    assert!(sample(&page, "leerspoor_store_applied_sequence", &[]).is_some_and(|n| n >= 3.0));
    assert_eq!(sample(&page, "leerspoor_nats_connected", &[]), Some(1.0));
    assert!(sample(
        &page,
        "leerspoor_consumer_pending_messages",
        &["stream=\"LRS_IN\"", "consumer=\"store\""],
    )
    .is_some());
    assert!(sample(&page, "leerspoor_sled_size_bytes", &["db=\"store\""]).is_some_and(|b| b > 0.0));
    // The projector catches up: its sequence and lag appear.
    testkit::wait_until("the projector's gauges", WAIT, || async {
        let page = metrics_page(&app.base).await;
        (sample(&page, "leerspoor_projector_applied_sequence", &[]).is_some_and(|n| n >= 1.0)
            && sample(&page, "leerspoor_projector_lag_seconds", &[]).is_some())
        .then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn readiness_follows_nats() {
    let mut app = TestApp::start().await;
    let live = reqwest::get(format!("{}/health/live", app.base))
        .await
        .expect("http");
    assert_eq!(live.status(), StatusCode::OK);
    testkit::wait_until("ready", WAIT, || async {
        let response = reqwest::get(format!("{}/health/ready", app.base))
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;

    app.nats.server.kill().await;
    let health: Value = testkit::wait_until("not ready while NATS is down", WAIT, || async {
        let response = reqwest::get(format!("{}/health/ready", app.base))
            .await
            .ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(response.json::<Value>().await.ok()?)
    })
    .await;
    assert_eq!(health["ready"], false);
    assert!(!health["problems"].as_array().expect("problems").is_empty());
    // Still live: the process runs.
    let live = reqwest::get(format!("{}/health/live", app.base))
        .await
        .expect("http");
    assert_eq!(live.status(), StatusCode::OK);

    app.nats.server.restart().await.expect("nats-server again");
    testkit::wait_until("ready again", WAIT, || async {
        let response = reqwest::get(format!("{}/health/ready", app.base))
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    let page = metrics_page(&app.base).await;
    assert!(
        sample(&page, "leerspoor_nats_connects", &[]).is_some_and(|n| n >= 2.0),
        "{page}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_store_alone_is_scraped_on_its_own_listener() {
    let nats = testkit::Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = config(&nats.url(), data.path());
    config.ops.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let node = leerspoor::node::Node::start(config, leerspoor::node::Parts::Store)
        .await
        .expect("store starts");
    let ops = format!("http://{}", node.ops_addr().expect("ops listener"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(node.run(shutdown.clone()));
    testkit::wait_until("the store alone is ready", WAIT, || async {
        let response = reqwest::get(format!("{ops}/health/ready")).await.ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    let page = metrics_page(&ops).await;
    assert!(page.contains("leerspoor_consumer_pending_messages"));
    // No xAPI here.
    let xapi = reqwest::get(format!("{ops}/xapi/about"))
        .await
        .expect("http");
    assert_eq!(xapi.status(), StatusCode::NOT_FOUND);
    shutdown.cancel();
    handle.await.expect("task").expect("stops cleanly");
}

#[tokio::test]
async fn a_deployment_pinned_to_1_0_3_answers_requests_without_a_version_in_1_0_3() {
    let app = TestApp::start_with(testkit::Nats::start().await, |config| {
        config.gateway.xapi_versions = vec!["1.0.3".into()];
    })
    .await;
    let about: Value = reqwest::get(format!("{}/xapi/about", app.base))
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(about["version"], json!(["1.0.3"]));
    let bare = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bare.headers()["x-experience-api-version"], "1.0.3");
    let two = app
        .request_as("2.0.0", Method::GET, "/xapi/statements")
        .send()
        .await
        .expect("http");
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    let error: Value = two.json().await.expect("json");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("speaks 1.0.3")),
        "{error}"
    );
    let one = app
        .request_as("1.0.3", Method::GET, "/xapi/statements")
        .send()
        .await
        .expect("http");
    assert_eq!(one.status(), StatusCode::OK);
    app.stop().await;

    // Both by default: a request without a version is answered in 2.0.0.
    let app = TestApp::start().await;
    let bare = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(bare.headers()["x-experience-api-version"], "2.0.0");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_version_in_the_configuration_is_refused_at_start() {
    let output = run_leerspoor(
        &[
            "--xapi-versions",
            "3.0",
            "--nats-url",
            "nats://127.0.0.1:1",
            "gateway",
        ],
        None,
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"3.0\" is not an xAPI version"),
        "{stderr}"
    );
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let nats = testkit::Nats::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "--log-format",
            "json",
            "--nats-url",
            &nats.url(),
            "--listen",
            "127.0.0.1:0",
            "gateway",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a log line in time")
        .expect("read")
        .expect("a line");
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{line}: {err}"));
    assert!(
        parsed["level"].is_string() && parsed["timestamp"].is_string(),
        "{parsed}"
    );
    child.kill().await.ok();
}

#[tokio::test]
async fn the_health_command_says_ready_or_not() {
    let app = TestApp::start().await;
    let ready = format!("{}/health/ready", app.base);
    let said = leerspoor_ok(&["health", "--url", &ready, "--wait", "20"], None).await;
    assert!(said.contains("\"ready\":true"), "{said}");
    app.stop().await;
    let down = run_leerspoor(&["health", "--url", &ready], None).await;
    assert_eq!(down.status.code(), Some(1));
}

/// An operator's Ctrl-C on a bench removes the data folder it made in the temporary directory
/// (gigabytes at a million statements) and its nats-server's files with it; the bench says it
/// was stopped and exits with a failure.
#[tokio::test]
async fn a_bench_stopped_by_a_signal_leaves_no_data_folder_behind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let baseline = tmp.path().join("none.json");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "bench",
            "--targets",
            "--statements",
            "200000",
            "--size",
            "0",
        ])
        .arg("--baseline")
        .arg(&baseline)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn leerspoor bench");
    let made = || {
        std::fs::read_dir(tmp.path())
            .expect("temp dir")
            .flatten()
            .any(|entry| entry.path().join("store.sled").is_dir())
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while !made() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the bench's node made its databases");
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the bench stops")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped by a signal"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("temp dir")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The binary allocates with jemalloc under the options `.cargo/config.toml` builds in (an
/// arena per CPU, no transparent huge pages): built without them, the peak memory of a grow
/// to a million statements goes back over the target (BENCHMARKS.md, the forty-second round).
/// jemalloc prints its options in use when asked to print its statistics at exit.
#[test]
fn the_binary_allocates_with_jemalloc_as_configured() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run leerspoor --version");
    assert!(out.status.success(), "{out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    for option in [r#"opt.percpu_arena: "percpu""#, r#"opt.thp: "never""#] {
        assert!(stats.contains(option), "no {option} in:\n{stats}");
    }
}
