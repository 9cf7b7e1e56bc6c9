//! Unit tests of erasure and export.
use super::*;
use crate::db::Incoming;
use bus::wire::{EventKind, StoredEvents};
use serde_json::json;
use xapi::Validator;

const ERASE: &[u8] =
    br#"{"agent": {"mbox": "mailto:ann@example.org"}, "actor": "cli:test", "reason": "ticket 1"}"#;

fn apply(db: &Db, validator: &Validator, sequence: u64, subject: &str, payload: &[u8]) -> Verdict {
    let incoming = Incoming {
        sequence,
        subject,
        payload,
        published: chrono::DateTime::UNIX_EPOCH,
        run: None,
    };
    crate::db::tests::apply_incoming(db, validator, &incoming)
}

fn stored_events(db: &Db) -> Vec<(EventKind, String)> {
    db.outbox(None)
        .expect("outbox")
        .into_iter()
        .filter(|(_, message)| message.subject == bus::subjects::STORED_EVENTS)
        .flat_map(|(_, message)| {
            let events: StoredEvents = serde_json::from_slice(&message.payload).expect("events");
            events.events.into_iter().map(|event| {
                (
                    event.kind,
                    event.statement["id"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn an_erasure_removes_a_waiting_void_and_reports_statements_still_in_the_outbox() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    let target = "6f0d7c3e-8a53-4a57-9d37-2c1a2b3c4d5e";
    let by_ann = r#"{"id": "11111111-1111-4111-8111-111111111111", "actor": {"mbox": "mailto:ann@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"}, "object": {"id": "https://x.example/1"}}"#;
    let ann_voids_later = format!(
        r#"{{"id": "22222222-2222-4222-8222-222222222222", "actor": {{"mbox": "mailto:ann@example.org"}},
        "verb": {{"id": "http://adlnet.gov/expapi/verbs/voided"}}, "object": {{"objectType": "StatementRef", "id": "{target}"}}}}"#
    );
    let by_bob = format!(
        r#"{{"id": "{target}", "actor": {{"mbox": "mailto:bob@example.org"}},
        "verb": {{"id": "http://adlnet.gov/expapi/verbs/attended"}}, "object": {{"id": "https://x.example/2"}}}}"#
    );
    assert_eq!(
        apply(&db, &validator, 1, "lrs.in.tool.t", by_ann.as_bytes()),
        Verdict::Applied
    );
    assert_eq!(
        apply(
            &db,
            &validator,
            2,
            "lrs.in.tool.t",
            ann_voids_later.as_bytes()
        ),
        Verdict::Applied
    );
    let erased = Verdict::Erased {
        statements: 2,
        documents: 0,
    };
    assert_eq!(
        apply(&db, &validator, 3, bus::subjects::IN_ERASE, ERASE),
        erased
    );
    assert_eq!(
        apply(&db, &validator, 3, bus::subjects::IN_ERASE, ERASE),
        erased,
        "a redelivered erasure is applied once"
    );
    // The void Ann sent is gone, so Bob's statement is not voided when it arrives.
    assert_eq!(
        apply(&db, &validator, 4, "lrs.in.tool.t", by_bob.as_bytes()),
        Verdict::Applied
    );
    let bob = db
        .record(&Uuid::parse_str(target).expect("uuid"))
        .expect("read")
        .expect("stored");
    assert!(!bob.voided);
    // Ann's statements were never published: their `stored` events are dropped, and the
    // erasure reports them (the projector ignores an erasure of what it never counted).
    let events = stored_events(&db);
    assert!(events.contains(&(
        EventKind::Erased,
        "11111111-1111-4111-8111-111111111111".into()
    )));
    assert!(!events.contains(&(
        EventKind::Stored,
        "11111111-1111-4111-8111-111111111111".into()
    )));
    assert!(events.contains(&(EventKind::Stored, target.into())));
    assert!(!events.iter().any(|(kind, _)| *kind == EventKind::Voided));
    // The audit entry counts, without the person.
    let audit = crate::access::Access { tree: db.tree() }
        .audit(None, 10)
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].details["statements"], 2);
    assert!(!audit[0].details.to_string().contains("ann"));
}

#[test]
fn an_export_pages_through_every_statement_naming_the_person_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    for sequence in 1..=5u64 {
        let actor = if sequence == 3 { "bob" } else { "ann" };
        let statement = format!(
            r#"{{"actor": {{"mbox": "mailto:{actor}@example.org"}}, "verb": {{"id": "http://adlnet.gov/expapi/verbs/attended"}}, "object": {{"id": "https://x.example/{sequence}"}}}}"#
        );
        apply(
            &db,
            &validator,
            sequence,
            "lrs.in.tool.t",
            statement.as_bytes(),
        );
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (page, next) = db
            .export_statements("mbox:mailto:ann@example.org", after, 2)
            .expect("export");
        pages += 1;
        seen.extend(
            page.iter()
                .map(|entry| entry["statement"]["object"]["id"].clone()),
        );
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<Value> = [1, 2, 4, 5]
        .iter()
        .map(|n| json!(format!("https://x.example/{n}")))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 2);
}

#[test]
fn an_erasure_without_an_identifier_is_refused_and_erases_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    let verdict = apply(
        &db,
        &validator,
        1,
        bus::subjects::IN_ERASE,
        br#"{"agent": {"name": "Ann"}, "actor": "cli:test"}"#,
    );
    assert!(matches!(verdict, Verdict::Rejected(ref rejection) if rejection.rule == "erase.agent"));
    let verdict = apply(&db, &validator, 2, bus::subjects::IN_ERASE, b"not json");
    assert!(
        matches!(verdict, Verdict::Rejected(ref rejection) if rejection.rule == "erase.command")
    );
    assert_eq!(db.applied_sequence().expect("meta"), 2);
}

/// `count` statements by Ann, in messages of 100 from sequence `first`; the next sequence.
fn many_by_ann(db: &Db, validator: &Validator, first: u64, count: usize) -> u64 {
    let mut sequence = first;
    for start in (0..count).step_by(100) {
        let statements: Vec<Value> = (start..(start + 100).min(count))
            .map(|n| {
                json!({"actor": {"mbox": "mailto:ann@example.org"},
                    "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                    "object": {"id": format!("https://x.example/{n}"),
                        "definition": {"name": {"en": "a session with a long enough name to weigh something"}}}})
            })
            .collect();
        let payload = serde_json::to_vec(&statements).expect("json");
        assert_eq!(
            apply(db, validator, sequence, "lrs.in.tool.t", &payload),
            Verdict::Applied
        );
        sequence += 1;
    }
    sequence
}

#[test]
fn a_large_erasure_goes_in_chunks_that_each_fit_one_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    db.set_max_payload(64 * 1024);
    let next = many_by_ann(&db, &validator, 1, 2_500);
    // Everything stored so far has been published.
    let published: Vec<sled::IVec> = db
        .outbox_page(None, None, 1_000)
        .expect("outbox")
        .into_iter()
        .flat_map(|entry| entry.keys)
        .collect();
    db.remove_outbox(&published).expect("remove");
    let erased = apply(&db, &validator, next, bus::subjects::IN_ERASE, ERASE);
    assert_eq!(
        erased,
        Verdict::Erased {
            statements: 2_500,
            documents: 0
        }
    );
    let messages = db.outbox(None).expect("outbox");
    assert!(messages.len() > 10, "{} messages", messages.len());
    let mut ids = std::collections::HashSet::new();
    for (_, message) in &messages {
        assert!(
            message.payload.len() <= db.message_budget(),
            "{}",
            message.payload.len()
        );
        let events: StoredEvents = serde_json::from_slice(&message.payload).expect("events");
        for event in events.events {
            assert_eq!(event.kind, EventKind::Erased);
            ids.insert(event.statement["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(
        ids.len(),
        2_500,
        "every statement's erasure is published once"
    );
    let msg_ids: std::collections::HashSet<&str> = messages
        .iter()
        .map(|(_, message)| message.msg_id.as_str())
        .collect();
    assert_eq!(msg_ids.len(), messages.len(), "message ids are unique");
    let query = bus::wire::StatementQuery {
        agent: Some("mbox:mailto:ann@example.org".into()),
        ..bus::wire::StatementQuery::default()
    };
    match crate::query::run(&db, &query).expect("query") {
        bus::wire::StatementReply::Page { statements, .. } => assert!(statements.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_erasure_interrupted_between_chunks_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    {
        let db = Db::open(dir.path()).expect("open");
        let next = many_by_ann(&db, &validator, 1, 1_500);
        assert_eq!(next, 16);
        // What a crash after the first chunk's batch leaves: some statements gone, the
        // progress record, and the message not applied.
        let progress = json!({"sequence": 16, "statements": 1000, "attachments": 0, "chunks": 3, "after": null});
        db.tree()
            .insert(
                keys::META_ERASING,
                serde_json::to_vec(&progress).expect("json"),
            )
            .expect("insert");
        db.wait_for_indexes().expect("indexed");
        let mut batch = sled::Batch::default();
        let erased_first: Vec<u64> = db
            .indexed_under("mbox:mailto:ann@example.org", None)
            .take(1_000)
            .collect::<Result<_, _>>()
            .expect("index");
        let mut unindexed = crate::indexer::PostingChanges::default();
        for position in erased_first {
            let record = db.record_at(position).expect("read").expect("record");
            db.remove_record(&mut batch, &mut unindexed, &record)
                .expect("remove");
        }
        unindexed
            .merge_into(db.tree(), crate::indexer::Change::Remove, &mut batch)
            .expect("merge");
        db.tree().apply_batch(batch).expect("apply");
        db.flush().expect("flush");
    }
    let db = crate::db::tests::reopen(dir.path());
    let erased = apply(&db, &validator, 16, bus::subjects::IN_ERASE, ERASE);
    assert_eq!(
        erased,
        Verdict::Erased {
            statements: 1_500,
            documents: 0
        },
        "counts carry on"
    );
    assert!(db.tree().get(keys::META_ERASING).expect("read").is_none());
    let audit = crate::access::Access { tree: db.tree() }
        .audit(None, 10)
        .expect("audit");
    assert_eq!(audit[0].details["statements"], 1_500);
}

#[test]
fn an_erasure_redacts_verdicts_and_pending_rejections_that_quote_the_person() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    // A hub's statement naming the wrong hub, and a malformed mbox: both rejected, both
    // quoting Ann's address in their verdicts and rejections.
    let wrong_hub = br#"{"actor": {"mbox": "mailto:ann@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
        "object": {"id": "https://x.example/1"}, "context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "delft"}}}"#;
    let bad_mbox = br#"{"actor": {"mbox": "ann@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
        "object": {"id": "https://x.example/1"}}"#;
    assert!(matches!(
        apply(&db, &validator, 1, "lrs.in.hub.eindhoven", wrong_hub),
        Verdict::Rejected(_)
    ));
    assert!(matches!(
        apply(&db, &validator, 2, "lrs.in.tool.t", bad_mbox),
        Verdict::Rejected(_)
    ));
    let quoted = |db: &Db| {
        db.tree()
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| {
                key.first() == Some(&keys::VERDICT) || key.first() == Some(&keys::OUTBOX)
            })
            .any(|(_, value)| String::from_utf8_lossy(&value).contains("ann@example.org"))
    };
    assert!(quoted(&db), "the rejections quote her before");
    apply(&db, &validator, 3, bus::subjects::IN_ERASE, ERASE);
    assert!(!quoted(&db), "and not after");
    assert!(
        matches!(db.verdict(2).expect("verdict"), Some(Verdict::Rejected(_))),
        "the verdicts stay, without the quote"
    );
    let scrubs = db.rejected_scrubs().expect("scrubs");
    assert_eq!(scrubs.len(), 1, "LRS_REJECTED is to be searched for her");
    assert!(scrubs[0].1.contains(&"ann@example.org".to_owned()));
}

#[test]
fn identifying_texts_are_what_a_quote_would_show() {
    assert_eq!(
        identifying_texts("mbox:mailto:ann@x.org"),
        ["mailto:ann@x.org", "ann@x.org"]
    );
    assert_eq!(
        identifying_texts("account:https://x.org|ann7"),
        ["https://x.org|ann7", "ann7"]
    );
    assert_eq!(
        identifying_texts("account:https://x.org|a"),
        ["https://x.org|a"],
        "too short alone"
    );
}
