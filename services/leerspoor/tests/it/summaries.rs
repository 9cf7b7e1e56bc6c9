//! The summary API over a real pipeline: HTTP and NATS ingest, voiding, the projector.

use async_nats::jetstream;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::wait_until;

use crate::helpers::{new_id, TestApp, KEY, SECRET, WAIT};

fn llo(
    actor: Value,
    verb: &str,
    activity: &str,
    hub: &str,
    company: &str,
    duration: &str,
    at: &str,
) -> Value {
    json!({
        "id": new_id(),
        "actor": actor,
        "verb": {"id": verb},
        "object": {"id": activity},
        "result": {"duration": duration, "success": true},
        "context": {"extensions": {
            "https://w3id.org/xapi/llo/extensions/hub": hub,
            "https://w3id.org/xapi/llo/extensions/company": company,
            "https://w3id.org/xapi/llo/extensions/skills": ["http://data.europa.eu/esco/skill/cnc"]
        }},
        "timestamp": at,
    })
}

#[tokio::test]
async fn summaries_follow_http_and_hub_ingest_and_voiding() {
    let app = TestApp::start().await;
    const ATTENDED: &str = "http://adlnet.gov/expapi/verbs/attended";
    const COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";
    let ann = json!({"mbox": "mailto:ann@example.org"});
    let bob = json!({"mbox": "mailto:bob@example.org"});
    let s1 = llo(
        ann.clone(),
        ATTENDED,
        "https://eindhoven.example/s/1",
        "eindhoven",
        "KVK-1",
        "PT1H",
        "2026-01-10T09:00:00Z",
    );
    let s2 = llo(
        ann.clone(),
        ATTENDED,
        "https://eindhoven.example/s/2",
        "eindhoven",
        "KVK-1",
        "PT2H",
        "2026-02-10T09:00:00Z",
    );
    let team = json!({"objectType": "Group", "member": [ann.clone(), bob.clone()]});
    let s4 = llo(
        team,
        ATTENDED,
        "https://eindhoven.example/s/1",
        "eindhoven",
        "KVK-1",
        "PT1H",
        "2026-02-12T09:00:00Z",
    );
    for statement in [&s1, &s2, &s4] {
        assert_eq!(
            app.post_statements(statement).await.status(),
            StatusCode::OK
        );
    }
    let s3 = llo(
        bob.clone(),
        COMPLETED,
        "https://delft.example/course",
        "delft",
        "KVK-2",
        "PT30M",
        "2026-02-11T09:00:00Z",
    );
    let js = jetstream::new(app.nats_client().await);
    js.publish("lrs.in.hub.delft", s3.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let void = json!({"actor": {"mbox": "mailto:admin@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": s2["id"]}});
    assert_eq!(app.post_statements(&void).await.status(), StatusCode::OK);

    let agent =
        |who: &Value| serde_urlencoded::to_string([("agent", who.to_string())]).expect("query");
    let ann_summary = wait_until(
        "ann's summary without the voided statement",
        WAIT,
        || async {
            let found = app
                .summary(&format!("/summaries/workers?{}", agent(&ann)))
                .await?;
            (found["statements"] == json!(2) && found["months"].as_array()?.len() == 2)
                .then_some(found)
        },
    )
    .await;
    assert_eq!(ann_summary["learning_seconds"], json!(7200.0));
    assert_eq!(ann_summary["attendance"], json!(2));
    assert_eq!(ann_summary["attended_sessions"], json!(1));
    assert_eq!(ann_summary["hubs"], json!(["eindhoven"]));
    assert_eq!(ann_summary["first"], json!("2026-01-10T09:00:00.000Z"));
    assert_eq!(ann_summary["last"], json!("2026-02-12T09:00:00.000Z"));

    let bob_summary = wait_until("bob's summary with the hub statement", WAIT, || async {
        let found = app
            .summary(&format!("/summaries/workers?{}", agent(&bob)))
            .await?;
        (found["statements"] == json!(2)).then_some(found)
    })
    .await;
    assert_eq!(bob_summary["completed_activities"], json!(1));
    assert_eq!(
        bob_summary["skills"],
        json!(["http://data.europa.eu/esco/skill/cnc"])
    );
    assert_eq!(bob_summary["hubs"], json!(["delft", "eindhoven"]));

    let hub = app.summary("/summaries/hubs/eindhoven").await.expect("hub");
    assert_eq!(hub["workers"], json!(2));
    assert_eq!(hub["companies"], json!(1));
    assert_eq!(hub["statements"], json!(3));
    assert_eq!(hub["attendance"], json!(3));
    assert_eq!(hub["sessions"], json!(1));
    assert_eq!(
        hub["months"],
        json!([{"month": "2026-01", "attendance": 1, "workers": 1, "skill_workers": []}, {"month": "2026-02", "attendance": 2, "workers": 2, "skill_workers": []}])
    );
    let february = app
        .summary("/summaries/hubs/eindhoven?from=2026-02&to=2026-02")
        .await
        .expect("hub");
    assert_eq!(february["months"].as_array().map(Vec::len), Some(1));

    let kvk1 = app
        .summary("/summaries/companies/KVK-1")
        .await
        .expect("company");
    assert_eq!(kvk1["workers"], json!(2));
    assert_eq!(kvk1["statements"], json!(3));
    let kvk2 = app
        .summary("/summaries/companies/KVK-2")
        .await
        .expect("company");
    assert_eq!(kvk2["skills"], json!(1));

    let hubs = app
        .summary("/summaries/hubs?sort=statements&order=desc")
        .await
        .expect("list");
    assert_eq!(hubs["total"], json!(2));
    assert_eq!(hubs["items"][0]["hub"], json!("eindhoven"));
    let unsortable = app
        .http
        .get(format!("{}/summaries/hubs?sort=hub", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(unsortable.status(), StatusCode::BAD_REQUEST);
    let error: Value = unsortable.json().await.expect("json");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("sortable: workers")),
        "{error}"
    );
    // Lists narrowed to a hub's workers and companies, and to a company's workers.
    let at_hub = app
        .summary("/summaries/workers?hub=eindhoven&sort=statements&order=desc")
        .await
        .expect("list");
    assert_eq!(at_hub["total"], json!(2));
    assert_eq!(
        app.summary("/summaries/companies?hub=eindhoven")
            .await
            .expect("list")["total"],
        json!(1)
    );
    assert_eq!(
        app.summary("/summaries/workers?company=KVK-1")
            .await
            .expect("list")["total"],
        kvk1["workers"]
    );
    let in_february = app
        .summary("/summaries/workers?hub=eindhoven&from=2026-02&to=2026-02")
        .await
        .expect("list");
    assert_eq!(in_february["total"], json!(2));
    let mixed = app
        .http
        .get(format!("{}/summaries/hubs?hub=eindhoven", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(mixed.status(), StatusCode::BAD_REQUEST);

    let csv = app
        .http
        .get(format!("{}/summaries/hubs?format=csv", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.expect("body");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(header.split(',').any(|column| column == "hub"), "{header}");
    assert_eq!(lines.count(), 2);

    let missing = app
        .http
        .get(format!("{}/summaries/hubs/nowhere", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = app
        .http
        .get(format!(
            "{}/summaries/hubs/eindhoven?from=january",
            app.base
        ))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let anonymous = app
        .http
        .get(format!("{}/summaries/hubs", app.base))
        .send()
        .await
        .expect("http");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn demo_data_shows_up_in_the_summary_command() {
    let app = TestApp::start().await;
    let demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "demo",
            "--statements",
            "240",
            "--key",
            KEY,
            "--secret",
            SECRET,
            "--endpoint",
        ])
        .arg(format!("{}/xapi", app.base))
        .arg("--hub-nats-url")
        .arg(app.nats.url())
        .output()
        .await
        .expect("run leerspoor demo");
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let stdout = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(stdout.contains("240 statements"), "{stdout}");

    let voided: i64 = stdout
        .split_whitespace()
        .zip(stdout.split_whitespace().skip(1))
        .find(|(_, next)| *next == "voided;")
        .and_then(|(count, _)| count.parse().ok())
        .expect("the demo says how many it voided");
    // Every demo statement names a hub and counts for one worker.
    let hubs = wait_until("the projector has every demo statement", WAIT, || async {
        let list = app.summary("/summaries/hubs?limit=100").await?;
        let total: i64 = list["items"]
            .as_array()?
            .iter()
            .filter_map(|hub| hub["statements"].as_i64())
            .sum();
        (total == 240 - voided).then_some(list)
    })
    .await;
    assert_eq!(hubs["total"], json!(12));

    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "summary",
            "hubs",
            "--csv",
            "--sort",
            "statements",
            "--desc",
            "--nats-url",
        ])
        .arg(app.nats.url())
        .output()
        .await
        .expect("run leerspoor summary");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let csv = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(csv.starts_with("hub,"), "{csv}");
    assert_eq!(csv.lines().count(), 13, "a header and twelve hubs");
}

#[tokio::test]
async fn a_rebuild_recomputes_from_the_store_even_when_the_stream_is_gone() {
    let app = TestApp::start().await;
    let ann = json!({"mbox": "mailto:ann@example.org"});
    for (n, at) in [
        "2026-03-01T10:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-04-01T10:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let statement = llo(
            ann.clone(),
            "http://adlnet.gov/expapi/verbs/attended",
            &format!("https://x.example/s/{n}"),
            "zwolle",
            "KVK-9",
            "PT1H",
            at,
        );
        assert_eq!(
            app.post_statements(&statement).await.status(),
            StatusCode::OK
        );
    }
    let before = wait_until("the projector caught up", WAIT, || async {
        let hub = app.summary("/summaries/hubs/zwolle").await?;
        (hub["statements"] == json!(3)).then_some(hub)
    })
    .await;

    // LRS_STORED expired: a rebuild must not need it.
    let js = jetstream::new(app.nats_client().await);
    js.get_stream(bus::subjects::STREAM_STORED)
        .await
        .expect("stream")
        .purge()
        .await
        .expect("purge");
    let rebuild = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args(["project", "--rebuild", "--nats-url"])
        .arg(app.nats.url())
        .output()
        .await
        .expect("run leerspoor project --rebuild");
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert!(
        String::from_utf8_lossy(&rebuild.stdout).contains("\"statements\":3"),
        "{}",
        String::from_utf8_lossy(&rebuild.stdout)
    );
    let after = app
        .summary("/summaries/hubs/zwolle")
        .await
        .expect("hub after rebuild");
    assert_eq!(after, before);

    // The rebuilt projection goes on with new events.
    let later = llo(
        ann,
        "http://adlnet.gov/expapi/verbs/attended",
        "https://x.example/s/9",
        "zwolle",
        "KVK-9",
        "PT1H",
        "2026-05-01T10:00:00Z",
    );
    assert_eq!(app.post_statements(&later).await.status(), StatusCode::OK);
    wait_until(
        "the rebuilt projection counts new statements",
        WAIT,
        || async {
            let hub = app.summary("/summaries/hubs/zwolle").await?;
            (hub["statements"] == json!(4)).then_some(())
        },
    )
    .await;
}

/// `leerspoor project --compact`: with nothing erased, a copy that would take more than the
/// database in use is removed and the database stays; after an erasure the copy is swapped in
/// (it takes the erased bytes out), answers the same and goes on.
#[tokio::test]
async fn a_compaction_swaps_in_a_copy_that_answers_the_same_and_goes_on() {
    let app = TestApp::start().await;
    let ann = json!({"mbox": "mailto:ann@example.org"});
    let bob = json!({"mbox": "mailto:bob@example.org"});
    let post_by = |who: &Value, n: usize| {
        llo(
            who.clone(),
            "http://adlnet.gov/expapi/verbs/attended",
            &format!("https://x.example/s/{n}"),
            "zwolle",
            "KVK-9",
            "PT1H",
            &format!("2026-03-{:02}T10:00:00Z", n + 1),
        )
    };
    let post = |n: usize| post_by(&ann, n);
    for n in 0..3 {
        assert_eq!(app.post_statements(&post(n)).await.status(), StatusCode::OK);
    }
    let before = wait_until("the projector caught up", WAIT, || async {
        let hub = app.summary("/summaries/hubs/zwolle").await?;
        (hub["statements"] == json!(3)).then_some(hub)
    })
    .await;
    let nats_url = app.nats.url();
    let compact_args = ["project", "--compact", "--nats-url", &nats_url];
    let compact = || crate::helpers::leerspoor_ok(&compact_args, None);

    // Nothing erased, and a copy of three statements' summaries takes more than the database
    // sled wrote them into: the database in use stays.
    let said = compact().await;
    assert!(said.starts_with("compacted: "), "{said}");
    assert!(said.contains("kept; its copy took"), "{said}");
    assert!(app.data_dir().join("projector.sled").is_dir());
    assert_eq!(
        app.summary("/summaries/hubs/zwolle").await,
        Some(before.clone())
    );

    // Bob's statement, erased: his bytes are in sled's old pages until a copy.
    assert_eq!(
        app.post_statements(&post_by(&bob, 9)).await.status(),
        StatusCode::OK
    );
    wait_until("bob counted", WAIT, || async {
        let hub = app.summary("/summaries/hubs/zwolle").await?;
        (hub["statements"] == json!(4)).then_some(())
    })
    .await;
    crate::helpers::leerspoor_ok(
        &["erase-agent", &bob.to_string(), "--nats-url", &nats_url],
        None,
    )
    .await;
    wait_until("bob's statement no longer counted", WAIT, || async {
        let hub = app.summary("/summaries/hubs/zwolle").await?;
        (hub["statements"] == json!(3)).then_some(())
    })
    .await;
    let before = app
        .summary("/summaries/hubs/zwolle")
        .await
        .expect("hub before the compaction");
    let said = compact().await;
    assert!(said.starts_with("compacted: "), "{said}");
    assert!(!said.contains("kept;"), "{said}");
    // The copy is the database in use, named for restarts; the one it replaced is gone.
    let named = std::fs::read_to_string(app.data_dir().join("projector.current"))
        .expect("projector.current");
    assert!(named.starts_with("projector-"), "{named}");
    assert!(app.data_dir().join(named.trim()).is_dir());
    assert!(!app.data_dir().join("projector.sled").exists());
    let after = app
        .summary("/summaries/hubs/zwolle")
        .await
        .expect("hub after the compaction");
    assert_eq!(after, before);

    assert_eq!(app.post_statements(&post(3)).await.status(), StatusCode::OK);
    wait_until("the copy counts new statements", WAIT, || async {
        let hub = app.summary("/summaries/hubs/zwolle").await?;
        (hub["statements"] == json!(4)).then_some(())
    })
    .await;

    // An action this projector does not know (a newer `leerspoor` asking) is refused, not
    // taken for a rebuild: the database in use stays.
    // Maintenance is answered between two pulls, each of which waits up to 5 s when idle.
    let request = async_nats::Request::new()
        .payload(
            serde_json::to_vec(&json!({"action": "defragment"}))
                .expect("json")
                .into(),
        )
        .timeout(Some(std::time::Duration::from_secs(60)));
    let reply = app
        .nats_client()
        .await
        .send_request(bus::subjects::API_REBUILD, request)
        .await
        .expect("an answer");
    let answer: Value = serde_json::from_slice(&reply.payload).expect("json");
    let error = answer["error"].as_str().expect("an error");
    assert!(
        error.contains("\"defragment\"") && error.contains("rebuild, compact"),
        "{error}"
    );
    let still = std::fs::read_to_string(app.data_dir().join("projector.current"))
        .expect("projector.current");
    assert_eq!(still, named, "no rebuild swapped another database in");
}

/// Waits until every hub, company and worker summary the API lists equals a projection of
/// just `stored`, made afresh.
pub async fn summaries_match(base: &str, stored: Vec<Value>, deadline: std::time::Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let fresh = projector::projection::Projection::open(dir.path()).expect("open");
    let events = bus::wire::StoredEvents {
        sequence: 1,
        events: stored
            .into_iter()
            .map(|statement| bus::wire::StoredEvent {
                kind: bus::wire::EventKind::Stored,
                position: 0,
                statement,
            })
            .collect(),
    };
    fresh.apply(1, &events).expect("apply");
    for (kind, path) in [
        (bus::wire::SummaryKind::Hub, "hubs"),
        (bus::wire::SummaryKind::Company, "companies"),
        (bus::wire::SummaryKind::Worker, "workers"),
    ] {
        let expected = fresh.all(kind).expect("recomputed");
        wait_until("the summaries match a recomputation", deadline, || async {
            let served = all_summaries(base, path).await?;
            (served == expected).then_some(())
        })
        .await;
    }
}

/// Every summary, as the API lists it.
pub async fn all_summaries(base: &str, kind: &str) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    loop {
        let page = crate::helpers::summary_at(
            base,
            &format!("/summaries/{kind}?limit=500&offset={}", items.len()),
        )
        .await?;
        let got = page["items"].as_array()?.clone();
        let total = page["total"].as_u64()? as usize;
        items.extend(got);
        if items.len() >= total {
            return Some(items);
        }
    }
}

#[tokio::test]
async fn thousands_of_demo_statements_with_a_projector_restart_match_a_recomputation() {
    use leerspoor::node::Parts;
    let nats = testkit::Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let config = crate::helpers::config(&nats.url(), data.path());
    let front = crate::helpers::start_node(config.clone(), Parts::Gateway).await;
    let store = crate::helpers::start_node(config.clone(), Parts::Store).await;
    let mut projector = crate::helpers::start_node(config.clone(), Parts::Projector).await;
    let base = format!("http://{}", front.http_addr.expect("gateway"));
    let http = reqwest::Client::new();
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    let statements: Vec<Value> = (0..3000).map(leerspoor::demo::llo_statement).collect();
    for (index, batch) in statements.chunks(100).enumerate() {
        if index == 15 {
            // Restart the projector mid-way.
            projector.stop().await;
            projector = crate::helpers::start_node(config.clone(), Parts::Projector).await;
        }
        if index % 3 == 2 {
            for statement in batch {
                let hub = statement["context"]["extensions"]
                    ["https://w3id.org/xapi/llo/extensions/hub"]
                    .as_str()
                    .expect("hub");
                js.publish(format!("lrs.in.hub.{hub}"), statement.to_string().into())
                    .await
                    .expect("publish");
            }
        } else {
            let response = http
                .post(format!("{base}/xapi/statements"))
                .basic_auth(KEY, Some(SECRET))
                .header("X-Experience-API-Version", "2.0.0")
                .json(&batch)
                .send()
                .await
                .expect("http");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, StatusCode::OK, "batch {index}: {body}");
        }
    }
    let voids: Vec<Value> = statements
        .iter()
        .step_by(37)
        .map(|statement| json!({"actor": {"mbox": "mailto:records@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": statement["id"]}}))
        .collect();
    let response = http
        .post(format!("{base}/xapi/statements"))
        .basic_auth(KEY, Some(SECRET))
        .header("X-Experience-API-Version", "2.0.0")
        .json(&voids)
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let surviving = statements.len() - voids.len();

    // The recomputation: the stored, non-voided statements, projected afresh.
    let app_like = TestApp::attach(nats, base.clone());
    let stored = wait_until("every statement stored", WAIT * 3, || async {
        let all = app_like.get_all(&[("limit", "100")]).await;
        (all.len() == surviving + voids.len()).then_some(all)
    })
    .await;
    summaries_match(&app_like.base, stored, WAIT * 3).await;
    projector.stop().await;
    store.stop().await;
    front.stop().await;
}

/// One LLO statement for the programme figures: a worker of `company` at `hub` in `month`.
fn at_hub(worker: &str, hub: &str, company: &str, month: &str, group: Option<&str>) -> Value {
    let mut statement = llo(
        json!({"mbox": format!("mailto:{worker}@example.org")}),
        "http://adlnet.gov/expapi/verbs/attended",
        "https://hub.example/s/1",
        hub,
        company,
        "PT1H",
        &format!("{month}-10T09:00:00Z"),
    );
    if let Some(group) = group {
        statement["context"]["extensions"]["https://w3id.org/xapi/llo/extensions/learner-group"] =
            json!(group);
    }
    statement
}

#[tokio::test]
async fn the_programme_counts_companies_reached_by_hub_type_and_region_from_the_registry() {
    let app = TestApp::start().await;
    let nats_url = app.nats.url();
    // The registry: from the command line and over the admin route.
    let said = crate::helpers::leerspoor_ok(
        &[
            "hubs",
            "set",
            "eindhoven",
            "--name",
            "Technohub Eindhoven",
            "--type",
            "technohub",
            "--region",
            "Brabant",
            "--nats-url",
            &nats_url,
        ],
        None,
    )
    .await;
    assert!(said.contains("registered"), "{said}");
    let put = app
        .request(reqwest::Method::PUT, "/admin/hubs/delft")
        .json(&json!({"name": "Fieldlab Delft", "type": "fieldlab", "region": "Zuid-Holland"}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let bad = app
        .request(reqwest::Method::PUT, "/admin/hubs/delft")
        .json(&json!({"name": "Fieldlab Delft", "type": "lab", "region": "Zuid-Holland"}))
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.expect("text").contains("technohub"));
    let missing = app
        .request(reqwest::Method::DELETE, "/admin/hubs/nowhere")
        .send()
        .await
        .expect("delete");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let listed =
        crate::helpers::leerspoor_ok(&["hubs", "list", "--json", "--nats-url", &nats_url], None)
            .await;
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed.as_array().expect("hubs").len(), 2);

    // Company A at Eindhoven in January and at Delft in March, B at Delft in February, C at
    // a hub nobody registered in February.
    let statements = json!([
        at_hub("ann", "eindhoven", "KVK-A", "2026-01", Some("youth")),
        at_hub("ann", "delft", "KVK-A", "2026-03", Some("youth")),
        at_hub("bob", "delft", "KVK-B", "2026-02", Some("worker")),
        at_hub("cas", "elsewhere", "KVK-C", "2026-02", None),
        at_hub("dirk", "eindhoven", "KVK-A", "2026-02", Some("jobseeker")),
    ]);
    assert_eq!(
        app.post_statements(&statements).await.status(),
        StatusCode::OK
    );
    let programme = wait_until("the programme counts every statement", WAIT, || async {
        let programme = app.summary("/summaries/programme").await?;
        (programme["statements"] == json!(5)).then_some(programme)
    })
    .await;
    assert_eq!(programme["target"], json!(6000));
    assert_eq!(programme["companies_reached"], json!(3));
    let cumulative: Vec<(String, i64)> = programme["months"]
        .as_array()
        .expect("months")
        .iter()
        .map(|month| {
            (
                month["month"].as_str().expect("month").to_owned(),
                month["companies_reached"].as_i64().expect("reached"),
            )
        })
        .collect();
    assert_eq!(
        cumulative,
        [
            ("2026-01".into(), 1),
            ("2026-02".into(), 3),
            ("2026-03".into(), 3)
        ]
    );
    let by = |field: &str, name: &str| -> Value {
        programme[field]
            .as_array()
            .expect("rows")
            .iter()
            .find(|row| row[if field == "by_type" { "type" } else { "region" }] == json!(name))
            .cloned()
            .unwrap_or_else(|| panic!("{field} {name}: {programme}"))
    };
    assert_eq!(by("by_type", "technohub")["companies_reached"], json!(1));
    let fieldlabs = by("by_type", "fieldlab");
    assert_eq!(fieldlabs["companies_reached"], json!(2), "A and B at Delft");
    let fieldlab_months: Vec<i64> = fieldlabs["months"]
        .as_array()
        .expect("months")
        .iter()
        .map(|month| month["companies_reached"].as_i64().expect("n"))
        .collect();
    assert_eq!(
        fieldlab_months,
        [0, 1, 2],
        "B first in February, A at Delft in March"
    );
    assert_eq!(by("by_type", "unregistered")["companies_reached"], json!(1));
    let brabant = by("by_region", "Brabant");
    assert_eq!(brabant["workers"], json!(2));
    assert_eq!(
        brabant["learner_groups"],
        json!({"youth": 1, "jobseeker": 1})
    );
    assert_eq!(
        programme["learner_groups"],
        json!({"youth": 1, "worker": 1, "jobseeker": 1, "unknown": 1}),
        "a statement without a learner group counts as unknown"
    );

    // The registry changes after the fact: Delft becomes a technohub in Brabant.
    crate::helpers::leerspoor_ok(
        &[
            "hubs",
            "set",
            "delft",
            "--name",
            "Technohub Delft",
            "--type",
            "technohub",
            "--region",
            "Brabant",
            "--nats-url",
            &nats_url,
        ],
        None,
    )
    .await;
    let programme = app
        .summary("/summaries/programme")
        .await
        .expect("programme");
    let technohubs = programme["by_type"]
        .as_array()
        .expect("types")
        .iter()
        .find(|row| row["type"] == json!("technohub"))
        .cloned()
        .expect("technohubs");
    assert_eq!(technohubs["companies_reached"], json!(2));
    assert_eq!(technohubs["hubs"], json!(2));
    let csv = app
        .request(
            reqwest::Method::GET,
            "/summaries/programme?format=csv&table=regions",
        )
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert!(
        csv.lines()
            .next()
            .expect("header")
            .contains("learner_groups.youth"),
        "{csv}"
    );
    assert!(csv.contains("Brabant,2,2,"), "{csv}");
    let printed =
        crate::helpers::leerspoor_ok(&["summary", "programme", "--nats-url", &nats_url], None)
            .await;
    assert!(
        printed.contains("companies reached: 3 of 6000"),
        "{printed}"
    );
    app.stop().await;
}
