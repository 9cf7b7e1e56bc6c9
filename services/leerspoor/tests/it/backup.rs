//! `leerspoor backup` while statements keep arriving, `leerspoor restore` into a fresh data
//! folder, and the restored replica catching up from the log to the same content.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bus::subjects::Topology;
use leerspoor::node::Parts;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, Nats};

use crate::helpers::{
    config, hub_statement, leerspoor_ok, run_leerspoor, start_node, wait_for_credential_at,
    TestApp, WAIT,
};
use crate::replicas::at_rest;

/// Posts batches of five until `stop`, counting the statements acknowledged.
fn keep_writing(
    app: &Arc<TestApp>,
    stop: &Arc<AtomicBool>,
    written: &Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let (app, stop, written) = (app.clone(), stop.clone(), written.clone());
    tokio::spawn(async move {
        let mut round = 0;
        while !stop.load(Ordering::Relaxed) {
            let batch: Vec<Value> = (0..5)
                .map(|n| hub_statement(&format!("w{round}-{n}@example.org"), "backed-up"))
                .collect();
            let response = app.post_statements(&json!(batch)).await;
            assert_eq!(response.status(), StatusCode::OK);
            written.fetch_add(5, Ordering::Relaxed);
            round += 1;
        }
    })
}

async fn written_at_least(written: &Arc<AtomicUsize>, count: usize) {
    wait_until(&format!("{count} statements written"), WAIT, || async {
        (written.load(Ordering::Relaxed) >= count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_into_a_fresh_folder_and_ends_identical() {
    let nats = Nats::start().await;
    let url = nats.url();
    let (dir_a, dir_gateway, dir_c, backups) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let alone = |dir: &std::path::Path| {
        let mut config = config(&url, dir);
        config.replicas.name = "a".into();
        config.replicas.stores = vec!["a".into()];
        config.replicas.projectors = vec!["a".into()];
        config
    };
    let node_a = start_node(alone(dir_a.path()), Parts::All).await;
    let gateway = start_node(alone(dir_gateway.path()), Parts::Gateway).await;
    let base = format!("http://{}", gateway.http_addr.expect("gateway"));
    wait_for_credential_at(&base).await;
    let app = Arc::new(TestApp::attach(nats, base));
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let writer = keep_writing(&app, &stop, &written);

    written_at_least(&written, 50).await;
    let backup_dir = backups.path().join("first");
    let backup_path = backup_dir.to_str().expect("path");
    let said = leerspoor_ok(&["backup", "--to", backup_path, "--nats-url", &url], None).await;
    assert!(said.contains("store at LRS_IN"), "{said}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("backup.json")).expect("manifest"))
            .expect("json");
    let at_backup = manifest["store"]["applied"].as_u64().expect("sequence");
    assert!(at_backup >= 10, "{manifest}");
    assert!(
        backup_dir.join("store.snapshot").exists()
            && backup_dir.join("projector.snapshot").exists()
    );
    // A backup folder is never overwritten.
    let again = run_leerspoor(&["backup", "--to", backup_path, "--nats-url", &url], None).await;
    assert!(!again.status.success());

    // Writes go on after the backup; then the replica is restored into a fresh folder.
    let after_backup = written.load(Ordering::Relaxed) + 50;
    written_at_least(&written, after_backup).await;
    let restore_args = [
        "restore",
        "--from",
        backup_path,
        "--data-dir",
        dir_c.path().to_str().expect("path"),
        "--replica",
        "c",
        "--nats-url",
        &url,
    ];
    let said = leerspoor_ok(&restore_args, None).await;
    assert!(
        said.contains(&format!("store at LRS_IN {at_backup}")),
        "{said}"
    );
    let mut restored = config(&url, dir_c.path());
    restored.replicas.name = "c".into();
    restored.replicas.stores = vec!["a".into(), "c".into()];
    restored.replicas.projectors = vec!["a".into(), "c".into()];
    let store_c = start_node(restored.clone(), Parts::Store).await;
    let projector_c = start_node(restored, Parts::Projector).await;
    // A folder with a database is not restored over.
    let refused = run_leerspoor(&restore_args, None).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exists"));

    let after_restore = written.load(Ordering::Relaxed) + 30;
    written_at_least(&written, after_restore).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let total = written.load(Ordering::Relaxed) as u64;

    let client = app.nats_client().await;
    let both = Topology {
        stores: vec!["a".into(), "c".into()],
        projectors: vec!["a".into(), "c".into()],
        stream_replicas: 1,
    };
    let statuses = at_rest(&client, &both).await;
    let stores: Vec<_> = statuses.iter().filter(|s| s.kind == "store").collect();
    assert_eq!(stores.len(), 2);
    assert!(
        stores.iter().all(|store| store.items == Some(total)),
        "{statuses:?}"
    );
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "store"),
        Some(true),
        "{statuses:?}"
    );
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "projector"),
        Some(true),
        "{statuses:?}"
    );

    // Without more backups, the hold can be let go.
    let said = leerspoor_ok(&["backup", "--release", "--nats-url", &url], None).await;
    assert!(said.contains("released 2"), "{said}");
    for part in [store_c, projector_c, node_a, gateway] {
        part.stop().await;
    }
}

/// `leerspoor compact`: refused while the node runs; on the stopped node the store's and the
/// projector's databases are copied and swapped in, and the node started again on them
/// answers the same statements and summaries and takes new ones.
#[tokio::test]
async fn a_stopped_node_compacts_and_starts_again_on_its_copies() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().expect("dir");
    let data_dir = data.path().to_str().expect("path").to_owned();
    let node = start_node(config(&nats.url(), data.path()), Parts::All).await;
    let base = format!("http://{}", node.http_addr.expect("gateway"));
    wait_for_credential_at(&base).await;
    let app = TestApp::attach(nats, base);
    for round in 0..4 {
        let batch: Vec<Value> = (0..25)
            .map(|n| hub_statement(&format!("w{round}-{n}@example.org"), "compacted"))
            .collect();
        let response = app.post_statements(&json!(batch)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let hub = wait_until("the hub's summary counts every statement", WAIT, || async {
        app.hub_summary("compacted")
            .await
            .filter(|summary| summary["statements"] == json!(100))
    })
    .await;
    let statements = crate::helpers::get_all_at(&app.base, &[]).await;
    assert_eq!(statements.len(), 100);

    let refused = run_leerspoor(&["compact", "--data-dir", &data_dir], None).await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is in use: stop `leerspoor serve`"), "{said}");

    node.stop().await;
    let said = leerspoor_ok(&["compact", "--data-dir", &data_dir], None).await;
    assert!(
        said.contains("store: ") && said.contains("projector: "),
        "{said}"
    );
    let stores: Vec<String> = std::fs::read_dir(data.path())
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("store"))
        .collect();
    assert_eq!(
        stores,
        vec!["store.sled".to_owned()],
        "the copy in its place, the original gone"
    );

    let node = start_node(config(&app.nats.url(), data.path()), Parts::All).await;
    let base = format!("http://{}", node.http_addr.expect("gateway"));
    let app = TestApp::attach(app.nats, base);
    assert_eq!(crate::helpers::get_all_at(&app.base, &[]).await, statements);
    assert_eq!(app.hub_summary("compacted").await, Some(hub));
    let response = app
        .post_statements(&json!([hub_statement("late@example.org", "compacted")]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    wait_until("the new statement counted", WAIT, || async {
        app.hub_summary("compacted")
            .await
            .filter(|summary| summary["statements"] == json!(101))
    })
    .await;
    node.stop().await;
}
