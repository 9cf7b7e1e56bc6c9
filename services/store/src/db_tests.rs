//! Unit tests of applying messages.
use super::*;
use crate::ingest;
use bus::wire::StatementQuery;
use serde_json::json;
use xapi::Validator;

/// Opens the database a test just closed. sled's own I/O threads may hold its file lock for
/// a moment after the last handle is dropped, so a lock refusal is tried again (briefly).
pub(crate) fn reopen(path: &std::path::Path) -> Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Db::open(path) {
            Ok(db) => return db,
            // The lock refusal is an I/O error inside `DbError::Sled`, whose message is
            // only "sled".
            Err(err) if format!("{err:?}").contains("could not acquire lock") => {
                assert!(std::time::Instant::now() < deadline, "reopen: {err}");
                std::thread::yield_now();
            }
            Err(err) => panic!("reopen: {err}"),
        }
    }
}

fn message(n: usize) -> Vec<u8> {
    let statements: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "actor": {"mbox": format!("mailto:w{n}-{i}@example.org")},
                "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                "object": {"id": "https://hub.example/sessions/1"}
            })
        })
        .collect();
    serde_json::to_vec(&statements).expect("json")
}

fn apply(db: &Db, validator: &Validator, sequence: u64) {
    let payload = message(sequence as usize);
    let incoming = Incoming {
        sequence,
        subject: "lrs.in.tool.test",
        payload: &payload,
        published: chrono::DateTime::UNIX_EPOCH,
    };
    let parsed = ingest::decode(incoming.subject, &payload, None, &Limits::default());
    assert_eq!(
        db.apply(&incoming, parsed, validator).expect("apply"),
        Verdict::Applied
    );
}

fn by_verb(db: &Db) -> usize {
    let query = StatementQuery {
        verb: Some("http://adlnet.gov/expapi/verbs/attended".into()),
        ..StatementQuery::default()
    };
    match crate::query::run(db, &query).expect("query") {
        bus::wire::StatementReply::Page { statements, .. } => statements.len(),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[test]
fn indexes_lost_in_a_crash_are_rebuilt_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    {
        let db = Db::open(dir.path()).expect("open");
        for sequence in 1..=3 {
            apply(&db, &validator, sequence);
        }
        assert_eq!(by_verb(&db), 15);
        // What a crash before the index thread wrote anything would leave behind.
        db.wait_for_indexes().expect("indexed");
        let index_keys: Vec<sled::IVec> = db
            .tree()
            .scan_prefix([keys::INDEX])
            .keys()
            .collect::<Result<_, _>>()
            .expect("scan");
        for key in index_keys {
            db.tree().remove(key).expect("remove");
        }
        db.tree().remove(keys::META_INDEXED).expect("remove");
        db.flush().expect("flush");
    }
    let db = reopen(dir.path());
    assert_eq!(by_verb(&db), 15);
}

#[test]
fn an_earlier_message_redelivered_after_a_later_one_is_still_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    apply(&db, &validator, 2);
    assert_eq!(
        db.applied_sequence().expect("meta"),
        0,
        "1 is still missing"
    );
    assert!(db.is_applied(2).expect("check"));
    assert!(!db.is_applied(1).expect("check"));
    apply(&db, &validator, 1);
    assert_eq!(db.applied_sequence().expect("meta"), 2);
    assert_eq!(by_verb(&db), 10);
    apply(&db, &validator, 2);
    assert_eq!(by_verb(&db), 10, "and a redelivery of 2 changes nothing");
}

#[test]
fn a_redelivered_message_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    apply(&db, &validator, 1);
    apply(&db, &validator, 1);
    assert_eq!(by_verb(&db), 5);
    assert_eq!(db.applied_sequence().expect("meta"), 1);
}

#[test]
fn a_message_meeting_a_corrupt_record_is_refused_and_the_next_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    let target = Uuid::parse_str("6f0d7c3e-8a53-4a57-9d37-2c1a2b3c4d5e").expect("uuid");
    db.tree()
        .insert(keys::statement(&target), b"not a record".as_slice())
        .expect("insert");
    let void = json!({"actor": {"mbox": "mailto:a@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": target.to_string()}});
    let payload = serde_json::to_vec(&void).expect("json");
    let incoming = Incoming {
        sequence: 1,
        subject: "lrs.in.tool.test",
        payload: &payload,
        published: chrono::DateTime::UNIX_EPOCH,
    };
    let parsed = ingest::decode(incoming.subject, &payload, None, &Limits::default());
    match db
        .apply(&incoming, parsed, &validator)
        .expect("not a database error")
    {
        Verdict::Rejected(rejection) => assert_eq!(rejection.rule, "store.cannot_apply"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let rejected = db.outbox(None).expect("outbox");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1.subject, bus::subjects::REJECTED);
    apply(&db, &validator, 2);
    assert_eq!(db.applied_sequence().expect("meta"), 2, "the loop goes on");
}

#[test]
fn a_page_stops_before_passing_its_bytes_and_links_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let limits = Limits {
        page_bytes: 20_000,
        ..Limits::default()
    };
    let db = Db::open_with(dir.path(), limits, crate::db::DEFAULT_CACHE_BYTES).expect("open");
    for sequence in 1..=10u64 {
        let statement = json!({"actor": {"mbox": "mailto:a@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
            "object": {"id": format!("https://x.example/{sequence}"),
                "definition": {"description": {"en": "x".repeat(6_000)}}}});
        let payload = serde_json::to_vec(&statement).expect("json");
        let incoming = Incoming {
            sequence,
            subject: "lrs.in.tool.test",
            payload: &payload,
            published: chrono::DateTime::UNIX_EPOCH,
        };
        let parsed = ingest::decode(incoming.subject, &payload, None, &Limits::default());
        assert_eq!(
            db.apply(&incoming, parsed, &validator).expect("apply"),
            Verdict::Applied
        );
    }
    let mut query = StatementQuery {
        agent: Some("mbox:mailto:a@example.org".into()),
        ..StatementQuery::default()
    };
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let reply = crate::query::run(&db, &query).expect("query");
        let bus::wire::StatementReply::Page {
            statements,
            next_after,
            ..
        } = reply
        else {
            panic!("a page");
        };
        pages += 1;
        assert!(
            !statements.is_empty() && statements.len() <= 3,
            "{}",
            statements.len()
        );
        seen += statements.len();
        match next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen, 10);
    assert!(pages >= 4, "{pages} pages");
}

#[test]
fn old_verdicts_are_pruned_recent_ones_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    let bad = br#"{"actor": {"mbox": "not-an-address"}}"#;
    for sequence in [1u64, 2] {
        let incoming = Incoming {
            sequence,
            subject: "lrs.in.tool.test",
            payload: bad,
            published: chrono::DateTime::UNIX_EPOCH,
        };
        let parsed = ingest::decode(incoming.subject, bad, None, &Limits::default());
        assert!(matches!(
            db.apply(&incoming, parsed, &validator).expect("apply"),
            Verdict::Rejected(_)
        ));
    }
    assert_eq!(db.prune_verdicts().expect("prune"), 0, "both are recent");
    let mut batch = sled::Batch::default();
    batch.insert(keys::META_APPLIED, &(VERDICTS_KEPT + 2).to_be_bytes());
    db.tree().apply_batch(batch).expect("move the watermark");
    assert_eq!(
        db.prune_verdicts().expect("prune"),
        1,
        "sequence 1 is far behind"
    );
    assert!(db.tree().get(keys::verdict(2)).expect("read").is_some());
}
