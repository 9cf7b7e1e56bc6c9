//! The right to erasure, end to end: `leerspoor erase-agent --export` and the admin route
//! remove a person from statements, indexes, documents, summaries and the bus, and leave
//! everything else as it was.

use async_nats::jetstream;
use bus::access::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::wait_until;

use sha2::Digest as _;

use crate::attachments::{attachment, multipart, part_with_hash, BOUNDARY};
use crate::helpers::{new_id, TestApp, KEY, WAIT};
use crate::summaries::summaries_match;

const ANN: &str = "ann@example.org";
const CAROL: &str = "carol@example.org";

fn agent(email: &str) -> Value {
    json!({"objectType": "Agent", "name": email, "mbox": format!("mailto:{email}")})
}

fn llo(actor: Value, verb: &str, activity: &str, hub: &str, company: &str) -> Value {
    json!({
        "id": new_id(),
        "actor": actor,
        "verb": {"id": format!("http://adlnet.gov/expapi/verbs/{verb}")},
        "object": {"id": activity},
        "result": {"duration": "PT2H", "success": true, "score": {"scaled": 0.8}},
        "context": {"extensions": {
            "https://w3id.org/xapi/llo/extensions/hub": hub,
            "https://w3id.org/xapi/llo/extensions/company": company,
            "https://w3id.org/xapi/llo/extensions/skills": ["http://data.europa.eu/esco/skill/welding"]
        }},
        "timestamp": "2026-03-02T09:00:00Z",
    })
}

fn encoded(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    serde_urlencoded::to_string([("v", text)]).expect("encode")[2..].to_owned()
}

fn state_url(email: &str) -> String {
    format!(
        "/xapi/activities/state?activityId={}&agent={}&stateId=bookmark",
        encoded(&json!("https://x.example/courses/welding")),
        encoded(&agent(email))
    )
}

async fn status(app: &TestApp, path: &str) -> StatusCode {
    app.request_with(KEY, Method::GET, path)
        .send()
        .await
        .expect("http")
        .status()
}

/// Every hub, company and worker summary equals a projection of just the statements stored
/// now (waiting for the projector to get there).
async fn summaries_match_the_stored_statements(app: &TestApp) {
    let stored = app.get_all(&[("limit", "100")]).await;
    summaries_match(&app.base, stored, WAIT).await;
}

#[tokio::test]
async fn erasing_a_person_leaves_nothing_of_them_and_everything_else() {
    let app = TestApp::start().await;
    let bob = agent("bob@example.org");
    let mut by_ann = llo(
        agent(ANN),
        "attended",
        "https://x.example/s/1",
        "zwolle",
        "KVK-1",
    );
    let about_ann = json!({"id": new_id(), "actor": agent("teacher@example.org"),
        "verb": {"id": "http://adlnet.gov/expapi/verbs/mentored"}, "object": agent(ANN)});
    let mut instructed_by_ann = llo(
        bob.clone(),
        "attended",
        "https://x.example/s/2",
        "zwolle",
        "KVK-2",
    );
    instructed_by_ann["context"]["instructor"] = agent(ANN);
    let as_member = llo(
        json!({"objectType": "Group", "member": [agent(ANN), bob.clone()]}),
        "attended",
        "https://x.example/s/3",
        "zwolle",
        "KVK-2",
    );
    let voided_of_ann = llo(
        agent(ANN),
        "completed",
        "https://x.example/c/1",
        "zwolle",
        "KVK-1",
    );
    let void = json!({"id": new_id(), "actor": agent("teacher@example.org"),
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": voided_of_ann["id"]}});
    let bob_refers = json!({"id": new_id(), "actor": bob.clone(),
        "verb": {"id": "http://adlnet.gov/expapi/verbs/commented"},
        "object": {"objectType": "StatementRef", "id": by_ann["id"]}});
    let mut bob_alone = llo(
        bob.clone(),
        "attended",
        "https://x.example/s/4",
        "zwolle",
        "KVK-2",
    );
    let by_carol = llo(
        agent(CAROL),
        "attended",
        "https://x.example/s/5",
        "delft",
        "KVK-3",
    );
    // Attachment bodies: Ann's certificate (only hers), Bob's, and a leaflet both use.
    let (ann_only, bob_only, shared): (&[u8], &[u8], &[u8]) =
        (b"certificate: Ann", b"certificate: Bob", b"course leaflet");
    by_ann["attachments"] = json!([attachment(
        "https://x.example/certificate",
        "text/plain",
        ann_only
    )]);
    instructed_by_ann["attachments"] = json!([attachment(
        "https://x.example/leaflet",
        "text/plain",
        shared
    )]);
    bob_alone["attachments"] = json!([
        attachment("https://x.example/certificate", "text/plain", bob_only),
        attachment("https://x.example/leaflet", "text/plain", shared)
    ]);
    let erased_later = [
        &by_ann,
        &about_ann,
        &instructed_by_ann,
        &as_member,
        &voided_of_ann,
    ];
    let kept = [&void, &bob_refers, &bob_alone];
    let everything = json!([
        by_ann,
        about_ann,
        instructed_by_ann,
        as_member,
        voided_of_ann,
        void,
        bob_refers,
        bob_alone,
        by_carol
    ]);
    let response = app
        .request_with(KEY, Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(multipart(
            &everything,
            &[
                ("text/plain", ann_only),
                ("text/plain", bob_only),
                ("text/plain", shared),
            ],
        ))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    for (email, body) in [
        (ANN, json!({"page": 7})),
        ("bob@example.org", json!({"page": 2})),
    ] {
        let response = app
            .request_with(KEY, Method::POST, &state_url(email))
            .json(&body)
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let profile = format!(
        "/xapi/agents/profile?agent={}&profileId=prefs",
        encoded(&agent(ANN))
    );
    let response = app
        .request_with(KEY, Method::PUT, &profile)
        .header("If-None-Match", "*")
        .json(&json!({"language": "nl"}))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    summaries_match_the_stored_statements(&app).await;
    let ann_summary = format!("/summaries/workers?agent={}", encoded(&agent(ANN)));
    assert_eq!(status(&app, &ann_summary).await, StatusCode::OK);

    // The operator's way: export, then erase, with a reason for the audit log.
    let export_file = tempfile::NamedTempFile::new().expect("temp file");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args([
            "erase-agent",
            &json!({"mbox": format!("mailto:{ANN}")}).to_string(),
        ])
        .arg("--export")
        .arg(export_file.path())
        .args(["--reason", "ticket 42", "--nats-url", &app.nats.url()])
        .output()
        .await
        .expect("run erase-agent");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("erased 5 statements and 2 documents"),
        "{stdout}"
    );
    let export: Value =
        serde_json::from_slice(&std::fs::read(export_file.path()).expect("export")).expect("json");
    let mut exported: Vec<&str> = export["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .map(|entry| entry["statement"]["id"].as_str().expect("id"))
        .collect();
    exported.sort_unstable();
    let mut expected: Vec<&str> = erased_later
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        exported, expected,
        "the export holds exactly what was erased"
    );
    assert_eq!(export["documents"].as_array().map(Vec::len), Some(2));
    assert!(export["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .any(|document| document["text"].as_str() == Some(r#"{"page":7}"#)));

    // Gone from statements and indexes.
    for statement in erased_later {
        let id = statement["id"].as_str().expect("id");
        assert_eq!(
            status(&app, &format!("/xapi/statements?statementId={id}")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&app, &format!("/xapi/statements?voidedStatementId={id}")).await,
            StatusCode::NOT_FOUND
        );
    }
    let ann_agent = json!({"mbox": format!("mailto:{ANN}")}).to_string();
    assert!(app
        .get_all(&[("agent", ann_agent.as_str()), ("related_agents", "true")])
        .await
        .is_empty());
    // Everything else is intact: the void, Bob's comment on Ann's statement, Bob, Carol.
    for statement in kept.iter().chain([&&by_carol]) {
        let id = statement["id"].as_str().expect("id");
        assert_eq!(
            status(&app, &format!("/xapi/statements?statementId={id}")).await,
            StatusCode::OK
        );
    }
    let bob_json = json!({"mbox": "mailto:bob@example.org"}).to_string();
    let mut bobs = crate::helpers::ids(&app.get_all(&[("agent", bob_json.as_str())]).await);
    bobs.sort();
    let mut expected_bobs = vec![
        bob_refers["id"].as_str().expect("id").to_owned(),
        bob_alone["id"].as_str().expect("id").to_owned(),
    ];
    expected_bobs.sort();
    assert_eq!(bobs, expected_bobs);
    // Attachment bodies: Ann's certificate is deleted; Bob's and the shared leaflet stay.
    let bucket = jetstream::new(app.nats_client().await)
        .get_object_store(bus::subjects::ATTACHMENTS_BUCKET)
        .await
        .expect("bucket");
    let sha = |body: &[u8]| format!("{:x}", sha2::Sha256::digest(body));
    wait_until("Ann's attachment body is deleted", WAIT, || async {
        let gone = matches!(bucket.get(sha(ann_only)).await,
            Err(err) if err.kind() == jetstream::object_store::GetErrorKind::NotFound);
        gone.then_some(())
    })
    .await;
    let bobs_statement = app
        .request_with(
            KEY,
            Method::GET,
            &format!(
                "/xapi/statements?statementId={}&attachments=true",
                bob_alone["id"].as_str().expect("id")
            ),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(bobs_statement.status(), StatusCode::OK);
    let body = bobs_statement.bytes().await.expect("body");
    assert_eq!(part_with_hash(&body, &sha(bob_only)), Some(bob_only));
    assert_eq!(part_with_hash(&body, &sha(shared)), Some(shared));
    // Documents: Ann's are gone, Bob's are not.
    assert_eq!(status(&app, &state_url(ANN)).await, StatusCode::NOT_FOUND);
    assert_eq!(status(&app, &profile).await, StatusCode::NOT_FOUND);
    assert_eq!(
        status(&app, &state_url("bob@example.org")).await,
        StatusCode::OK
    );
    // Summaries: no worker summary for Ann, the rest equal to a recomputation.
    wait_until("Ann's summary is gone", WAIT, || async {
        (status(&app, &ann_summary).await == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    summaries_match_the_stored_statements(&app).await;

    // The admin route does the same for Carol; without the admin scope it is a 403.
    let analyst = app
        .grant("analyst", &[Scope::SummariesRead, Scope::All], None)
        .await;
    let erase_carol = json!({"agent": {"mbox": format!("mailto:{CAROL}")}, "reason": "ticket 43"});
    let refused = app
        .request_with(&analyst, Method::POST, "/admin/erasures")
        .json(&erase_carol)
        .send()
        .await
        .expect("http");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let erased: Value = app
        .request_with(KEY, Method::POST, "/admin/erasures")
        .json(&erase_carol)
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(erased, json!({"statements": 1, "documents": 0}));
    let bad = app
        .request_with(KEY, Method::POST, "/admin/erasures")
        .json(&json!({"agent": {"name": "no identifier"}}))
        .send()
        .await
        .expect("http");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    summaries_match_the_stored_statements(&app).await;

    // The audit log says what went and why, never whom.
    let audit = app.audit_log().await;
    let erasures: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| entry["action"] == "agent.erase")
        .collect();
    assert_eq!(erasures.len(), 2);
    assert_eq!(erasures[0]["details"]["statements"], 5);
    assert_eq!(erasures[0]["details"]["documents"], 2);
    assert_eq!(erasures[0]["details"]["attachments"], 1);
    assert_eq!(erasures[0]["details"]["reason"], "ticket 42");
    assert!(erasures[0]["actor"]
        .as_str()
        .is_some_and(|actor| actor.starts_with("cli:")));
    assert_eq!(erasures[1]["actor"], format!("credential:{KEY}"));
    assert!(!audit.to_string().contains("ann@") && !audit.to_string().contains("carol@"));

    // Nothing waits on the bus: LRS_IN and LRS_STORED keep a message only until it is applied.
    let js = jetstream::new(app.nats_client().await);
    for stream in [bus::subjects::STREAM_IN, bus::subjects::STREAM_STORED] {
        wait_until("the streams are drained", WAIT, || async {
            let mut handle = js.get_stream(stream).await.ok()?;
            (handle.info().await.ok()?.state.messages == 0).then_some(())
        })
        .await;
    }

    // And nothing is left in either sled database: no value, no key, no index entry.
    let data = app.stop_keeping_data().await;
    let store = store::db::Db::open_tree(
        &data.path().join("store.sled"),
        store::db::DEFAULT_CACHE_BYTES,
    )
    .expect("store sled");
    let projection = projector::projection::Projection::open_tree(
        &projector::rebuild::active_path(data.path()),
        projector::projection::DEFAULT_CACHE_BYTES,
    )
    .expect("projector sled");
    for (name, tree) in [("store", &store), ("projector", &projection)] {
        for item in tree.iter() {
            let (key, value) = item.expect("read");
            for email in [ANN, CAROL] {
                let found =
                    |bytes: &[u8]| bytes.windows(email.len()).any(|w| w == email.as_bytes());
                assert!(
                    !found(&key) && !found(&value),
                    "{email} left in the {name} database"
                );
            }
        }
    }
    for email in [ANN, CAROL] {
        let term = format!("mbox:mailto:{email}");
        let prefix = store::keys::posting_prefix(store::keys::IndexKind::RelatedAgent, &term);
        assert_eq!(
            store.scan_prefix(prefix).count(),
            0,
            "index entries of {email}"
        );
    }
    assert!(
        store
            .scan_prefix(store::keys::posting_prefix(
                store::keys::IndexKind::RelatedAgent,
                "mbox:mailto:bob@example.org"
            ))
            .count()
            > 0,
        "Bob's index entries stay"
    );
}
