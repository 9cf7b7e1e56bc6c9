//! `leerspoor export` and `leerspoor import` (file and another LRS), and
//! `GET /admin/exports/statements`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Statements of every kind an export must carry: plain, hub, voided and voiding, one with a
/// registration and a result.
async fn fill(app: &TestApp) -> usize {
    let mut batch: Vec<Value> = (0..40)
        .map(|n| {
            statement(
                &format!("w{n}@example.org"),
                "attended",
                "https://hub.example/s/1",
            )
        })
        .collect();
    batch.extend((0..10).map(|n| hub_statement(&format!("h{n}@example.org"), "delft")));
    let mut scored = statement("ann@example.org", "completed", "https://x.example/course");
    scored["result"] = json!({"score": {"scaled": 0.8}, "completion": true});
    scored["context"] = json!({"registration": new_id()});
    batch.push(scored);
    let response = app.post_statements(&json!(batch)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<String> = response.json().await.expect("ids");
    let voiding = json!({
        "actor": {"mbox": "mailto:admin@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": ids[3]},
    });
    assert_eq!(app.post_statements(&voiding).await.status(), StatusCode::OK);
    batch.len() + 1
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a statement per line"))
        .collect()
}

#[tokio::test]
async fn an_export_imported_into_another_leerspoor_exports_the_same() {
    let source = TestApp::start().await;
    let count = fill(&source).await;
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first.ndjson");
    let said = leerspoor_ok(
        &[
            "export",
            "--to",
            first.to_str().expect("path"),
            "--nats-url",
            &source.nats.url(),
        ],
        None,
    )
    .await;
    assert!(
        said.contains(&format!("exported {count} statements")),
        "{said}"
    );
    let exported = lines(&first);
    assert_eq!(exported.len(), count, "voided statements are exported too");

    let target = TestApp::start().await;
    let data = tempfile::tempdir().expect("dir");
    let said = leerspoor_ok(
        &[
            "import",
            first.to_str().expect("path"),
            "--nats-url",
            &target.nats.url(),
            "--data-dir",
            data.path().to_str().expect("path"),
        ],
        None,
    )
    .await;
    assert!(
        said.contains(&format!("imported {count} statements, refused 0")),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "kept the source's stored on {count} and its authority on {count}"
        )),
        "{said}"
    );
    let second = dir.path().join("second.ndjson");
    leerspoor_ok(
        &[
            "export",
            "--to",
            second.to_str().expect("path"),
            "--nats-url",
            &target.nats.url(),
        ],
        None,
    )
    .await;
    assert_eq!(
        lines(&second),
        exported,
        "the same statements, stored and authority included"
    );
    // The voided one is voided there too.
    let voided_id = exported[3]["id"].as_str().expect("id");
    let voided = target
        .get(&format!("/xapi/statements?voidedStatementId={voided_id}"))
        .await;
    assert_eq!(voided.status(), StatusCode::OK);
    let plain = target
        .get(&format!("/xapi/statements?statementId={voided_id}"))
        .await;
    assert_eq!(plain.status(), StatusCode::NOT_FOUND);

    // Over HTTP, with a filter: the same lines as the file's, filtered.
    let response = target
        .request(
            Method::GET,
            "/admin/exports/statements?verb=http%3A%2F%2Fadlnet.gov%2Fexpapi%2Fverbs%2Fcompleted",
        )
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.expect("body");
    let over_http: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let completed: Vec<Value> = exported
        .iter()
        .filter(|statement| statement["verb"]["id"] == "http://adlnet.gov/expapi/verbs/completed")
        .cloned()
        .collect();
    assert_eq!(over_http, completed);
    let bad = target
        .request(Method::GET, "/admin/exports/statements?since=yesterday")
        .send()
        .await
        .expect("http");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn an_interrupted_import_resumes_without_duplicates_and_reports_bad_lines() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().expect("dir");
    // 120 statements without ids, and two bad lines.
    let mut text = String::new();
    for n in 0..120 {
        let mut statement = statement(
            &format!("i{n}@example.org"),
            "attended",
            "https://x.example/1",
        );
        statement["stored"] = json!("2024-03-01T10:00:00.000Z");
        text.push_str(&serde_json::to_string(&statement).expect("json"));
        text.push('\n');
        if n == 50 {
            text.push_str("{not json\n");
        }
        if n == 90 {
            text.push_str("{\"actor\": {\"mbox\": \"ann\"}, \"verb\": {\"id\": \"x\"}, \"object\": {\"id\": \"y\"}}\n");
        }
    }
    let full = dir.path().join("full.ndjson");
    std::fs::write(&full, &text).expect("write");
    // "Interrupted": the first 60 lines only, with the same state file.
    let cut: String = text
        .lines()
        .take(60)
        .map(|line| format!("{line}\n"))
        .collect();
    let half = dir.path().join("half.ndjson");
    std::fs::write(&half, cut).expect("write");
    let state = dir.path().join("import.state");
    let run = |file: std::path::PathBuf| {
        let (state, url) = (state.clone(), app.nats.url());
        async move {
            let args = [
                "import",
                file.to_str().expect("path"),
                "--state",
                state.to_str().expect("path"),
                "--batch",
                "25",
                "--nats-url",
                &url,
            ];
            let output = run_leerspoor(&args, None).await;
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            (
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (said, errors) = run(half).await;
    assert!(said.contains("imported 59 statements, refused 1"), "{said}");
    assert!(errors.contains("refused line 52: not JSON"), "{errors}");
    let (said, errors) = run(full.clone()).await;
    assert!(
        said.contains("imported 61 statements, refused 1 (resumed after 60 already done)"),
        "{said}"
    );
    assert!(errors.contains("refused line 93"), "{errors}");
    // The state lost: everything again, and still nothing twice.
    std::fs::remove_file(&state).expect("remove state");
    let (said, _) = run(full).await;
    assert!(
        said.contains("imported 120 statements, refused 2"),
        "{said}"
    );
    let stored = app.get_all(&[]).await;
    assert_eq!(stored.len(), 120);
    assert!(stored
        .iter()
        .all(|statement| statement["stored"] == "2024-03-01T10:00:00.000Z"));
    app.stop().await;
}

#[tokio::test]
async fn statements_come_over_from_another_lrs_through_its_more_links() {
    let source = TestApp::start().await;
    fill(&source).await;
    let target = TestApp::start().await;
    let data = tempfile::tempdir().expect("dir");
    let args = [
        "import",
        "--from-lrs",
        &format!("{}/xapi", source.base),
        "--user",
        KEY,
        "--password",
        SECRET,
        "--batch",
        "7",
        "--nats-url",
        &target.nats.url(),
        "--data-dir",
        data.path().to_str().expect("path"),
    ];
    let said = leerspoor_ok(&args, None).await;
    let at_source = source.get_all(&[("ascending", "true")]).await;
    assert!(
        said.contains(&format!(
            "imported {} statements, refused 0",
            at_source.len()
        )),
        "{said}"
    );
    let at_target = target.get_all(&[("ascending", "true")]).await;
    assert_eq!(
        at_target, at_source,
        "the same statements, stored and authority kept"
    );
    // Again: done already, nothing more.
    let said = leerspoor_ok(&args, None).await;
    assert!(said.contains("imported 0 statements"), "{said}");
    assert_eq!(target.get_all(&[]).await.len(), at_source.len());
    source.stop().await;
    target.stop().await;
}
