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

pub(crate) fn apply(db: &Db, validator: &Validator, sequence: u64) {
    apply_in_run(db, validator, sequence, None);
}

fn apply_in_run(db: &Db, validator: &Validator, sequence: u64, run: Option<u64>) {
    let payload = message(sequence as usize);
    assert_eq!(
        apply_payload(db, validator, sequence, &payload, run),
        Verdict::Applied
    );
}

/// The verdict on `payload` published by a tool as `LRS_IN` sequence `sequence`.
fn apply_payload(
    db: &Db,
    validator: &Validator,
    sequence: u64,
    payload: &[u8],
    run: Option<u64>,
) -> Verdict {
    let incoming = Incoming {
        sequence,
        subject: "lrs.in.tool.test",
        payload,
        published: chrono::DateTime::UNIX_EPOCH,
        run,
    };
    apply_incoming(db, validator, &incoming)
}

/// The verdict on `incoming` as the store decodes a message without headers (a tool's or
/// hub's); every test module applies its messages through here.
pub(crate) fn apply_incoming(db: &Db, validator: &Validator, incoming: &Incoming<'_>) -> Verdict {
    let parsed = ingest::decode(
        incoming.subject,
        incoming.payload,
        None,
        None,
        &Limits::default(),
    );
    db.apply(incoming, parsed, validator).expect("apply")
}

pub(crate) fn by_verb(db: &Db) -> usize {
    let query = StatementQuery {
        verb: Some("http://adlnet.gov/expapi/verbs/attended".into()),
        ..StatementQuery::default()
    };
    match crate::query::run(db, &query).expect("query") {
        bus::wire::StatementReply::Page { statements, .. } => statements.len(),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The store's database runs no sled flusher thread: its segment cleaner rewrote a reopened
/// store's log without end (BENCHMARKS.md, the thirty-eighth round). The cache is as asked.
#[test]
fn the_stores_database_is_opened_without_a_flusher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Db::sled_config(dir.path(), 3 * 1024 * 1024);
    assert_eq!(config.flush_every_ms, None);
    assert_eq!(config.cache_capacity, 3 * 1024 * 1024);
    assert_eq!(config.path, dir.path());
}

/// A store made in sled's default segments (before `sledconf`) opens with them (sled refuses
/// another size) and goes on from what it held; a new one is made in large segments.
#[test]
fn a_store_made_in_sleds_default_segments_opens_with_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let old = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let db = Db::from_tree(old, Limits::default()).expect("store");
    for sequence in 1..=2 {
        apply(&db, &validator, sequence);
    }
    db.flush().expect("flush");
    drop(db);
    let made_with = sledconf::segment_size(dir.path());
    assert!(made_with.is_some_and(|size| size != sledconf::SEGMENT_BYTES));
    let db = reopen(dir.path());
    apply(&db, &validator, 3);
    assert_eq!(by_verb(&db), 15);
    drop(db);
    assert_eq!(sledconf::segment_size(dir.path()), made_with);

    let new = tempfile::tempdir().expect("temp dir");
    drop(Db::open(new.path()).expect("open"));
    assert_eq!(
        sledconf::segment_size(new.path()),
        Some(sledconf::SEGMENT_BYTES)
    );
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
            .scan_prefix([keys::POSTING])
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

/// Puts a database's records back in the layout from before `R` keys (`p` + position -> id,
/// `s` + id -> record), except the positions `moved` keeps: a move a crash interrupted.
fn into_the_layout_before_records_by_position(db: &Db, moved: impl Fn(u64) -> bool) {
    let mut batch = sled::Batch::default();
    for item in db.tree().scan_prefix([keys::RECORD]) {
        let (key, bytes) = item.expect("record");
        let position = keys::trailing_u64(&key).expect("position");
        if moved(position) {
            continue;
        }
        // Before `R` keys, records were their JSON.
        let json = crate::db::unpack(&key, &bytes)
            .expect("record")
            .into_owned();
        let record: Record = serde_json::from_slice(&json).expect("record");
        let id = Uuid::parse_str(record.statement["id"].as_str().expect("id")).expect("uuid");
        batch.remove(key);
        batch.insert(keys::position(position), id.as_bytes().as_slice());
        batch.insert(keys::statement(&id), json);
    }
    db.tree().apply_batch(batch).expect("batch");
    db.flush().expect("flush");
}

/// A store with four messages of five statements applied, for the tests of older layouts.
fn twenty_statements() -> (tempfile::TempDir, Validator, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    for sequence in 1..=4 {
        apply(&db, &validator, sequence);
    }
    (dir, validator, db)
}

#[test]
fn records_stored_by_id_are_moved_to_their_positions_at_open() {
    let (dir, validator, db) = twenty_statements();
    let digest = db.digest().expect("digest");
    let records: Vec<(u64, Record)> = (1..=20)
        .map(|position| {
            let record = db.record_at(position).expect("read").expect("record");
            (position, record)
        })
        .collect();
    // Half moved when the process stopped, half not.
    into_the_layout_before_records_by_position(&db, |position| position % 2 == 0);
    assert!(
        db.record_at(1).expect("read").is_none(),
        "not in the new layout"
    );
    drop(db);
    let db = reopen(dir.path());
    assert_eq!(db.digest().expect("digest"), digest);
    assert_eq!(db.tree().scan_prefix([keys::POSITION]).count(), 0);
    for (position, record) in &records {
        let id = Uuid::parse_str(record.statement["id"].as_str().expect("id")).expect("uuid");
        let by_id = db.record(&id).expect("read").expect("by id");
        assert_eq!(by_id.statement, record.statement);
        assert_eq!(by_id.position, *position);
        let at = db.record_at(*position).expect("read").expect("at");
        assert_eq!(at.statement, record.statement);
    }
    assert_eq!(by_verb(&db), 20);
    // Applying goes on after the moved records.
    apply(&db, &validator, 5);
    assert_eq!(by_verb(&db), 25);
    assert!(db.record_at(25).expect("read").is_some());
}

/// The statements of the page by verb, as the text they are sent as.
fn page_by_verb(db: &Db) -> Vec<String> {
    let query = StatementQuery {
        verb: Some("http://adlnet.gov/expapi/verbs/attended".into()),
        ..StatementQuery::default()
    };
    match crate::query::run(db, &query).expect("query") {
        bus::wire::StatementReply::Page { statements, .. } => statements
            .iter()
            .map(|statement| statement.get().to_owned())
            .collect(),
        other => panic!("not a page: {other:?}"),
    }
}

/// Records are kept packed (see `packed`), in well under half their JSON's bytes; records an
/// older Leerspoor kept as their JSON read the same beside them: by id, at their position, in
/// pages, in the digest.
#[test]
fn records_are_kept_packed_and_those_kept_as_json_read_alike() {
    let (_dir, validator, db) = twenty_statements();
    let digest = db.digest().expect("digest");
    let page = page_by_verb(&db);
    assert_eq!(page.len(), 20);
    let (mut packed, mut json) = (0, 0);
    let mut as_before = sled::Batch::default();
    for item in db.tree().scan_prefix([keys::RECORD]) {
        let (key, bytes) = item.expect("record");
        assert_eq!(
            bytes.first(),
            Some(&0x02),
            "packed with the second dictionary"
        );
        let text = unpack(&key, &bytes).expect("unpacks").into_owned();
        serde_json::from_slice::<Record>(&text).expect("a record");
        (packed, json) = (packed + bytes.len(), json + text.len());
        if keys::trailing_u64(&key).is_some_and(|position| position % 2 == 1) {
            as_before.insert(key, text);
        }
    }
    assert!(packed * 2 < json, "{packed} bytes packed of {json}");
    db.tree().apply_batch(as_before).expect("batch");
    assert_eq!(
        db.record_bytes_at(1)
            .expect("read")
            .map(|(_, bytes)| bytes[0]),
        Some(b'{')
    );
    assert_eq!(db.digest().expect("digest"), digest);
    assert_eq!(page_by_verb(&db), page);
    for position in 1..=20 {
        let record = db.record_at(position).expect("read").expect("record");
        let id = Uuid::parse_str(record.statement["id"].as_str().expect("id")).expect("uuid");
        assert_eq!(
            db.record(&id).expect("read").expect("by id").position,
            position
        );
    }
    apply(&db, &validator, 5);
    assert_eq!(by_verb(&db), 25);
}

/// The index as versions before postings wrote it: `i` + kind + term hash + position per
/// statement and term.
fn into_the_index_before_postings(db: &Db, keep: impl Fn(&[u8]) -> bool) {
    db.wait_for_indexes().expect("indexed");
    let postings: Vec<(sled::IVec, sled::IVec)> = db
        .tree()
        .scan_prefix([keys::POSTING])
        .collect::<Result<_, _>>()
        .expect("scan");
    for (key, value) in postings {
        let block = keys::trailing_u64(&key).expect("block");
        for position in keys::Postings::decode(&value)
            .expect("postings")
            .positions(block)
        {
            let mut old = vec![keys::INDEX];
            old.extend_from_slice(&key[1..18]);
            old.extend_from_slice(&position.to_be_bytes());
            db.tree().insert(old, &[] as &[u8]).expect("insert");
        }
        if !keep(&key) {
            db.tree().remove(key).expect("remove");
        }
    }
    db.flush().expect("flush");
}

#[test]
fn an_index_from_before_postings_is_rebuilt_at_open() {
    let (dir, validator, db) = twenty_statements();
    let digest = db.digest().expect("digest");
    // The verbs' postings stay, as a crash part-way through the rebuild leaves some.
    into_the_index_before_postings(&db, |key| key[1] == keys::IndexKind::Verb as u8);
    drop(db);
    let db = reopen(dir.path());
    assert_eq!(db.digest().expect("digest"), digest);
    assert_eq!(db.tree().scan_prefix([keys::INDEX]).count(), 0);
    assert_eq!(by_verb(&db), 20);
    let by_agent = StatementQuery {
        agent: Some("mbox:mailto:w3-2@example.org".into()),
        ..StatementQuery::default()
    };
    match crate::query::run(&db, &by_agent).expect("query") {
        bus::wire::StatementReply::Page { statements, .. } => assert_eq!(statements.len(), 1),
        other => panic!("unexpected reply {other:?}"),
    }
    // Indexing goes on after the rebuilt postings.
    apply(&db, &validator, 5);
    assert_eq!(by_verb(&db), 25);
}

/// Outbox entries name their statements by position now; an entry written by an earlier
/// version names them by id and goes out the same.
#[test]
fn outbox_events_by_position_and_by_id_go_out_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    apply(&db, &validator, 1);
    let entries = db.outbox(None).expect("outbox");
    let (key, current) = entries.first().expect("an entry");
    let written = db.tree().get(key).expect("read").expect("entry");
    let written: Value = serde_json::from_slice(&written).expect("json");
    assert_eq!(written["Events"]["events"][0], json!(["stored", 1]));
    // The same entry as the version before positions wrote it.
    let ids: Vec<Value> = (1..=5)
        .map(|position| {
            let record = db.record_at(position).expect("read").expect("record");
            json!(["stored", record.statement["id"]])
        })
        .collect();
    let before = json!({"Events": {"sequence": 1, "events": ids}});
    db.tree()
        .insert(key, serde_json::to_vec(&before).expect("json"))
        .expect("insert");
    let entries = db.outbox(None).expect("outbox");
    let (_, by_id) = entries.first().expect("an entry");
    assert_eq!(by_id.payload, current.payload);
    assert_eq!(by_id.msg_id, current.msg_id);
}

/// What the outbox holds as (msg id, `sequence`, positions of its events) per message.
fn outbox_messages(db: &Db) -> Vec<(String, u64, Vec<u64>)> {
    db.outbox(None)
        .expect("outbox")
        .into_iter()
        .map(|(_, message)| {
            let events: Value = serde_json::from_slice(&message.payload).expect("json");
            let positions = events["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .filter_map(|event| event["position"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            (
                message.msg_id,
                events["sequence"].as_u64().unwrap_or(0),
                positions,
            )
        })
        .collect()
}

/// The events of a run of messages go out as one message, under an id that names the run, the
/// same each time the outbox is read (a republish after a crash is dropped as a duplicate);
/// a message between them that is not a run's ends the run, and a page never ends inside one.
#[test]
fn a_run_of_messages_goes_out_as_one_message_with_one_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    for sequence in 1..=3 {
        apply_in_run(&db, &validator, sequence, Some(1));
    }
    apply_in_run(&db, &validator, 4, Some(4));
    apply(&db, &validator, 5);
    // A rejection (published on LRS_REJECTED) between two messages of one run.
    assert!(matches!(
        apply_payload(&db, &validator, 6, b"not json", Some(6)),
        Verdict::Rejected(_)
    ));
    apply_in_run(&db, &validator, 7, Some(6));
    let positions = |range: std::ops::RangeInclusive<u64>| range.collect::<Vec<u64>>();
    let expected = vec![
        ("events-1..3".to_owned(), 3, positions(1..=15)),
        ("events-4".to_owned(), 4, positions(16..=20)),
        ("events-5".to_owned(), 5, positions(21..=25)),
        ("rejected-6".to_owned(), 6, Vec::new()),
        ("events-7".to_owned(), 7, positions(26..=30)),
    ];
    assert_eq!(outbox_messages(&db), expected);
    assert_eq!(outbox_messages(&db), expected, "read again, the same");
    let first_page = db.outbox_page(None, None, 1).expect("page");
    assert_eq!(first_page.len(), 1);
    assert_eq!(first_page[0].keys.len(), 3, "the whole run");
    assert_eq!(first_page[0].messages.len(), 1);
    // What a page published is removed with every key of it; the rest reads as before.
    db.remove_outbox(&first_page[0].keys).expect("remove");
    assert_eq!(outbox_messages(&db), expected[1..].to_vec());
}

/// A statement stored before is found by its id when it comes again, before and after a
/// restart: the ids filter is filled by the writer as it stores, and from the id keys after
/// open (sled answers until then).
#[test]
fn a_stored_id_is_found_again_before_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let statement = |object: &str| {
        json!([{"id": "0c1f5f3e-2b7a-4d0e-9a51-6f3a1c2b9d41",
            "actor": {"mbox": "mailto:a@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
            "object": {"id": format!("https://x.example/{object}")}}])
    };
    let apply_one = |db: &Db, sequence: u64, statement: &Value| {
        let payload = serde_json::to_vec(statement).expect("json");
        apply_payload(db, &validator, sequence, &payload, None)
    };
    {
        let db = Db::open(dir.path()).expect("open");
        assert_eq!(apply_one(&db, 1, &statement("a")), Verdict::Applied);
        assert!(matches!(
            apply_one(&db, 2, &statement("b")),
            Verdict::Conflict { .. }
        ));
        assert_eq!(apply_one(&db, 3, &statement("a")), Verdict::Applied);
        assert_eq!(db.last_position().expect("last"), 1, "stored once");
    }
    let db = reopen(dir.path());
    // Whether or not the fill is over.
    assert!(matches!(
        apply_one(&db, 4, &statement("b")),
        Verdict::Conflict { .. }
    ));
    assert!(db.ids_filled(), "the fill completes");
    assert!(matches!(
        apply_one(&db, 5, &statement("b")),
        Verdict::Conflict { .. }
    ));
    assert_eq!(apply_one(&db, 6, &statement("a")), Verdict::Applied);
    assert_eq!(db.last_position().expect("last"), 1, "still stored once");
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
        .insert(keys::statement(&target), &7u64.to_be_bytes())
        .expect("insert");
    db.tree()
        .insert(keys::record(7), b"not a record".as_slice())
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
        run: None,
    };
    let parsed = ingest::decode(incoming.subject, &payload, None, None, &Limits::default());
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
            run: None,
        };
        let parsed = ingest::decode(incoming.subject, &payload, None, None, &Limits::default());
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
            run: None,
        };
        let parsed = ingest::decode(incoming.subject, bad, None, None, &Limits::default());
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

/// Queries with `since` and `until` skip blocks of positions whose statements all lie outside
/// the window, and still return exactly what checking every statement returns: both orders,
/// with and without an index, page by page, with imported statements that keep an older
/// `stored` of their own, and after the spans are written again at open for a database from
/// before them.
#[test]
fn time_windows_skip_blocks_outside_them_and_miss_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.sled");
    let validator = Validator::new().expect("validator");
    let mut db = Db::open(&path).expect("open");
    let start = chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
    let mut sequence = 0;
    let mut publish = |db: &Db, subject: &str, payload: Vec<u8>, seconds: i64| {
        sequence += 1;
        let incoming = Incoming {
            sequence,
            subject,
            payload: &payload,
            published: start + chrono::TimeDelta::seconds(seconds),
            run: None,
        };
        let parsed = ingest::decode(subject, &payload, None, None, &Limits::default());
        assert_eq!(
            db.apply(&incoming, parsed, &validator).expect("apply"),
            Verdict::Applied
        );
    };
    // 2,997 statements over three blocks, one message of 5 a second (the first of 2); every
    // 97th message an import of statements stored long before.
    for n in 0..600i64 {
        if n % 97 == 96 {
            let old: Vec<Value> = (0..5)
                .map(|i| {
                    json!({
                        "actor": {"mbox": format!("mailto:old{n}-{i}@example.org")},
                        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                        "object": {"id": "https://hub.example/sessions/1"},
                        "stored": (start - chrono::TimeDelta::seconds(1000 - n)).to_rfc3339(),
                    })
                })
                .collect();
            let payload = serde_json::to_vec(&old).expect("json");
            publish(&db, bus::subjects::IN_IMPORT, payload, n);
        } else if n == 0 {
            // Two, so that message 410 starts block 2 (position 2048).
            let two: Vec<Value> = serde_json::from_slice(&message(0)).expect("json");
            let payload = serde_json::to_vec(&two[..2]).expect("json");
            publish(&db, "lrs.in.tool.test", payload, n);
        } else {
            publish(&db, "lrs.in.tool.test", message(n as usize), n);
        }
    }
    let at =
        |seconds: i64| xapi::time::format_timestamp(start + chrono::TimeDelta::seconds(seconds));
    let windows = [
        (Some(at(590)), None),
        // Up to the end of block 1, and from the first position of block 2.
        (Some(at(409)), None),
        (None, Some(at(409))),
        (Some(at(100)), Some(at(130))),
        (None, Some(at(3))),
        (Some(at(-600)), Some(at(-300))),
        (Some(at(-2000)), None),
        (Some(at(700)), None),
    ];
    let check = |db: &Db| {
        // Every statement, oldest position first, with its `stored`.
        let mut all = Vec::new();
        for position in 1..=db.last_position().expect("last") {
            if let Some(record) = db.record_at(position).expect("record") {
                all.push(record.statement);
            }
        }
        assert_eq!(all.len(), 2_997);
        for (since, until) in &windows {
            let expected: Vec<String> = all
                .iter()
                .filter(|statement| {
                    let stored = statement["stored"].as_str().expect("stored");
                    since.as_deref().is_none_or(|since| stored > since)
                        && until.as_deref().is_none_or(|until| stored <= until)
                })
                .map(|statement| statement["id"].as_str().expect("id").to_owned())
                .collect();
            for ascending in [true, false] {
                for verb in [None, Some("http://adlnet.gov/expapi/verbs/attended")] {
                    let mut query = StatementQuery {
                        since: since.clone(),
                        until: until.clone(),
                        verb: verb.map(str::to_owned),
                        ascending,
                        limit: 400,
                        ..StatementQuery::default()
                    };
                    let mut got = Vec::new();
                    loop {
                        let bus::wire::StatementReply::Page {
                            statements,
                            next_after,
                            ..
                        } = crate::query::run(db, &query).expect("query")
                        else {
                            panic!("a page");
                        };
                        for statement in statements {
                            let statement: Value =
                                serde_json::from_str(statement.get()).expect("statement");
                            got.push(statement["id"].as_str().expect("id").to_owned());
                        }
                        match next_after {
                            Some(after) => query.after = Some(after),
                            None => break,
                        }
                    }
                    let mut wanted = expected.clone();
                    if !ascending {
                        wanted.reverse();
                    }
                    assert_eq!(
                        got, wanted,
                        "{since:?}..{until:?} ascending {ascending} {verb:?}"
                    );
                }
            }
        }
    };
    check(&db);
    // Blocks are skipped: the last ten seconds lie in the last block only; an imported
    // statement widens only its own block.
    let recent = StatementQuery {
        since: Some(at(590)),
        ..StatementQuery::default()
    };
    let skipped = crate::query::excluded_blocks(&db, &recent);
    assert_eq!(skipped.into_iter().collect::<Vec<_>>(), [0, 1]);
    let long_ago = StatementQuery {
        until: Some(at(-500)),
        ..StatementQuery::default()
    };
    assert!(crate::query::excluded_blocks(&db, &long_ago).is_empty());
    let spans: Vec<_> = db
        .tree()
        .scan_prefix([keys::STORED_SPAN])
        .map(|item| item.expect("span"))
        .collect();
    assert_eq!(spans.len(), 3, "three blocks of positions");
    // The spans the queries read in memory are the database's, as the writes left them.
    let decoded = |spans: &[(sled::IVec, sled::IVec)]| -> Vec<(u64, keys::Span)> {
        spans
            .iter()
            .map(|(key, value)| {
                let block = keys::trailing_u64(key).expect("block");
                (block, keys::Span::decode(value).expect("span"))
            })
            .collect()
    };
    let in_memory = |db: &Db| -> Vec<(u64, keys::Span)> {
        db.spans()
            .iter()
            .map(|(block, span)| (*block, span.clone()))
            .collect()
    };
    assert_eq!(in_memory(&db), decoded(&spans));
    // The last span covers the last position.
    let last = keys::Span::decode(&spans[2].1).expect("span");
    assert_eq!(last.through, db.last_position().expect("last"));
    // A database from before spans, and one where a version without them stored block 2
    // (the last span left covers position 2047): the missing spans are written at open.
    let written: Vec<_> = spans.iter().map(|(_, value)| value.clone()).collect();
    for from_block in [0, 2] {
        for (key, _) in &spans[from_block..] {
            db.tree().remove(key).expect("remove");
        }
        drop(db);
        db = reopen(&path);
        let rebuilt: Vec<_> = db
            .tree()
            .scan_prefix([keys::STORED_SPAN])
            .map(|item| item.expect("span").1)
            .collect();
        assert_eq!(rebuilt, written, "from block {from_block}");
        assert_eq!(in_memory(&db), decoded(&spans), "from block {from_block}");
        check(&db);
    }
}

/// A page says the latest `stored` among its own statements (its `Last-Modified`), in either
/// direction and on every page; asked for joined, the store sends the same page as a frame:
/// the same statements between brackets, the same cursor and latest `stored`, and the time
/// it was answered.
#[test]
fn a_page_says_its_latest_stored_joined_or_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    let db = Db::open(dir.path()).expect("open");
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .expect("time")
        .to_utc();
    for sequence in 1..=7u64 {
        let payload = message(sequence as usize);
        let incoming = Incoming {
            sequence,
            subject: "lrs.in.tool.test",
            payload: &payload,
            // A message a minute: each message's statements share their `stored`.
            published: start + chrono::TimeDelta::minutes(sequence as i64),
            run: None,
        };
        let parsed = ingest::decode(incoming.subject, &payload, None, None, &Limits::default());
        assert_eq!(
            db.apply(&incoming, parsed, &validator).expect("apply"),
            Verdict::Applied
        );
    }
    let stored_of = |statement: &Value| statement["stored"].as_str().map(str::to_owned);
    for ascending in [false, true] {
        let mut query = StatementQuery {
            verb: Some("http://adlnet.gov/expapi/verbs/attended".into()),
            ascending,
            limit: 8,
            ..StatementQuery::default()
        };
        let mut pages = 0;
        loop {
            let json = crate::api::statements(&db, &serde_json::to_vec(&query).expect("query"))
                .expect("json reply");
            let bus::wire::StatementReply::Page {
                statements,
                next_after,
                consistent_through,
                last_modified,
                ..
            } = serde_json::from_slice(&json).expect("a page")
            else {
                panic!("a page");
            };
            pages += 1;
            let latest = statements.iter().filter_map(stored_of).max();
            assert!(latest.is_some());
            assert_eq!(last_modified, latest, "page {pages}, ascending {ascending}");
            query.joined = true;
            let framed = crate::api::statements(&db, &serde_json::to_vec(&query).expect("query"))
                .expect("joined reply");
            let (head, joined) = bus::wire::read_joined_page(&framed)
                .expect("readable")
                .expect("a joined page");
            assert_eq!(head.next_after, next_after);
            // The time the answer was made: the joined one was made after.
            assert!(head.consistent_through >= consistent_through);
            assert_eq!(head.last_modified, latest);
            let texts: Vec<Value> =
                serde_json::from_slice(&[b"[", joined, b"]"].concat()).expect("an array");
            assert_eq!(texts, statements);
            query.joined = false;
            match next_after {
                Some(after) => query.after = Some(after),
                None => break,
            }
        }
        assert_eq!(pages, 5, "35 statements in pages of 8");
    }
    // A single statement is JSON even when a joined page was asked for.
    let query = StatementQuery {
        statement_id: Some(Uuid::new_v4().to_string()),
        joined: true,
        ..StatementQuery::default()
    };
    let reply =
        crate::api::statements(&db, &serde_json::to_vec(&query).expect("query")).expect("reply");
    assert_eq!(bus::wire::read_joined_page(&reply), Ok(None));
}

/// Every position from 1 to the last stored but `missing` is indexed under the verb of
/// [`message`], and nothing else, by the postings themselves.
fn assert_attended_all_but(db: &Db, missing: Option<u64>) {
    let last = db.last_position().expect("last");
    let expected: Vec<u64> = (1..=last).filter(|at| Some(*at) != missing).collect();
    let found = attended_positions(db);
    let first_difference = expected
        .iter()
        .zip(&found)
        .position(|(expected, found)| expected != found);
    assert!(
        found.len() == expected.len() && first_difference.is_none(),
        "{} positions found, {} expected, first difference at index {first_difference:?}",
        found.len(),
        expected.len()
    );
}

/// Every position indexed under the verb of [`message`], read from the postings themselves.
fn attended_positions(db: &Db) -> Vec<u64> {
    db.wait_for_indexes().expect("indexed");
    let prefix = keys::posting_prefix(
        keys::IndexKind::Verb,
        "http://adlnet.gov/expapi/verbs/attended",
    );
    let mut positions = Vec::new();
    for item in db.tree().scan_prefix(prefix) {
        let (key, value) = item.expect("scan");
        let block = keys::trailing_u64(&key).expect("block");
        let postings = keys::Postings::decode(&value).expect("postings");
        positions.extend(postings.positions(block));
    }
    positions
}

/// The index thread keeps its newest block's postings in memory: a block begun before a
/// restart, or changed by an erasure, is read from the tree again, and one begun after keeps
/// every position too.
#[test]
fn postings_keep_every_position_across_a_restart_an_erasure_and_a_new_block() {
    let dir = tempfile::tempdir().expect("temp dir");
    let validator = Validator::new().expect("schemas");
    // Messages of five statements from `sequence` until position `through` is stored.
    let more = |db: &Db, sequence: &mut u64, through: u64| {
        while db.last_position().expect("last") < through {
            apply(db, &validator, *sequence);
            *sequence += 1;
        }
    };
    let block = keys::POSTING_BLOCK;
    let mut sequence = 1;
    {
        let db = Db::open(dir.path()).expect("open");
        more(&db, &mut sequence, block + 10);
        assert_attended_all_but(&db, None);
    }
    // The second block was begun before the restart.
    let db = reopen(dir.path());
    more(&db, &mut sequence, block + 20);
    assert_attended_all_but(&db, None);
    // The last message's first statement is the only one by its actor.
    let erased = db.last_position().expect("last") - 4;
    let erase = format!(
        r#"{{"agent": {{"mbox": "mailto:w{}-0@example.org"}}, "actor": "cli:test", "reason": "ticket 1"}}"#,
        sequence - 1
    );
    let incoming = Incoming {
        sequence,
        subject: bus::subjects::IN_ERASE,
        payload: erase.as_bytes(),
        published: chrono::DateTime::UNIX_EPOCH,
        run: None,
    };
    let parsed = ingest::decode(
        incoming.subject,
        erase.as_bytes(),
        None,
        None,
        &Limits::default(),
    );
    assert!(matches!(
        db.apply(&incoming, parsed, &validator).expect("apply"),
        Verdict::Erased { statements: 1, .. }
    ));
    sequence += 1;
    more(&db, &mut sequence, block + 30);
    assert_attended_all_but(&db, Some(erased));
    // On into the third block, begun after the restart.
    more(&db, &mut sequence, 2 * block + 10);
    assert_attended_all_but(&db, Some(erased));
}

/// A gateway batch of `statements`, as JSON.
fn gateway_batch(statements: Vec<Value>) -> Value {
    json!({
        "authority": {"objectType": "Agent", "account": {"homePage": "https://lrs.example", "name": "tool"}},
        "version": "2.0.0",
        "statements": statements,
    })
}

fn attended_as(id: &Uuid, who: &str) -> Value {
    json!({
        "id": id.to_string(),
        "actor": {"mbox": format!("mailto:{who}@example.org")},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
        "object": {"id": "https://hub.example/sessions/1"}
    })
}

fn voiding_of(id: &Uuid, target: &Uuid) -> Value {
    json!({
        "id": id.to_string(),
        "actor": {"mbox": "mailto:admin@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": target.to_string()}
    })
}

/// The verdict on `payload` as the gateway's `LRS_IN` message `sequence`, a bundle of
/// `parts` if given.
fn apply_gateway(db: &Db, sequence: u64, payload: &Value, parts: Option<&str>) -> Verdict {
    let payload = serde_json::to_vec(payload).expect("json");
    let incoming = Incoming {
        sequence,
        subject: bus::subjects::IN_HTTP,
        payload: &payload,
        published: chrono::DateTime::UNIX_EPOCH,
        run: None,
    };
    let parsed = ingest::decode(incoming.subject, &payload, None, parts, &Limits::default());
    let validator = Validator::new().expect("schemas");
    db.apply(&incoming, parsed, &validator).expect("apply")
}

#[test]
fn a_bundles_parts_are_applied_in_turn_each_with_its_own_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).expect("open");
    let [before, a, b, c, d, e] = [(); 6].map(|()| Uuid::new_v4());
    let alone = gateway_batch(vec![attended_as(&before, "first")]);
    assert_eq!(apply_gateway(&db, 1, &alone, None), Verdict::Applied);
    let bundle = json!([
        gateway_batch(vec![attended_as(&a, "ann")]),
        // Its second statement conflicts with one stored before: nothing of it is stored.
        gateway_batch(vec![attended_as(&b, "bob"), attended_as(&before, "other")]),
        // The first part's statement again: stored once.
        gateway_batch(vec![attended_as(&a, "ann")]),
        // The first part's id with other content.
        gateway_batch(vec![attended_as(&a, "someone else")]),
        // Voids the first part's statement.
        gateway_batch(vec![voiding_of(&c, &a), attended_as(&d, "dan")]),
        // Voids the voiding statement of the part before.
        gateway_batch(vec![voiding_of(&e, &c)]),
    ]);
    let verdict = apply_gateway(&db, 2, &bundle, Some("6"));
    let Verdict::Parts { parts } = &verdict else {
        panic!("a bundle with refused parts: {verdict:?}");
    };
    assert_eq!(parts.len(), 6);
    assert_eq!(parts[0], Verdict::Applied);
    assert_eq!(
        parts[1],
        Verdict::Conflict {
            statement: 1,
            id: before.to_string()
        }
    );
    assert_eq!(parts[2], Verdict::Applied);
    assert_eq!(
        parts[3],
        Verdict::Conflict {
            statement: 0,
            id: a.to_string()
        }
    );
    assert_eq!(parts[4], Verdict::Applied);
    assert!(
        matches!(&parts[5], Verdict::Rejected(rejection) if rejection.rule == "voiding.target_not_voiding"),
        "{:?}",
        parts[5]
    );
    // The writer asking later hears the same.
    assert_eq!(db.verdict(2).expect("verdict"), Some(verdict.clone()));
    assert_eq!(apply_gateway(&db, 2, &bundle, Some("6")), verdict);

    let position = |id: &Uuid| db.record(id).expect("record").map(|record| record.position);
    // Positions follow each other: a refused part gives its positions back.
    assert_eq!(position(&before), Some(1));
    assert_eq!(position(&a), Some(2));
    assert_eq!(position(&c), Some(3));
    assert_eq!(position(&d), Some(4));
    assert_eq!(position(&b), None);
    assert_eq!(position(&e), None);
    assert!(db.record(&a).expect("record").expect("stored").voided);
    assert_eq!(db.meta_u64(keys::META_NEXT_POSITION).expect("meta"), 5);
    // No index entry of a refused part: Bob's statement took position 3 in its plan, which
    // the voiding statement has now.
    db.wait_for_indexes().expect("indexed");
    let found = |who: &str| {
        let query = StatementQuery {
            agent: Some(format!("mbox:mailto:{who}@example.org")),
            ..StatementQuery::default()
        };
        match crate::query::run(&db, &query).expect("query") {
            bus::wire::StatementReply::Page { statements, .. } => statements.len(),
            other => panic!("unexpected reply {other:?}"),
        }
    };
    assert_eq!(found("bob"), 0);
    assert_eq!(found("dan"), 1);
    assert_eq!(found("first"), 1);
    let posted = |who: &str| {
        let term = format!("mbox:mailto:{who}@example.org");
        let prefix = keys::posting_prefix(keys::IndexKind::RelatedAgent, &term);
        db.tree().scan_prefix(prefix).count()
    };
    assert_eq!(posted("bob"), 0);
    assert_eq!(posted("dan"), 1);
}

#[test]
fn a_bundle_header_is_the_gateways_alone_and_must_count_its_parts() {
    let limits = Limits::default();
    let one = serde_json::to_vec(&json!([gateway_batch(vec![attended_as(
        &Uuid::new_v4(),
        "ann"
    )])]))
    .expect("json");
    let rule = |subject: &str, parts: &str| match ingest::decode(
        subject,
        &one,
        None,
        Some(parts),
        &limits,
    ) {
        Err(rejection) => rejection.rule,
        Ok(_) => "accepted".into(),
    };
    assert_eq!(rule("lrs.in.hub.eindhoven", "1"), "bundle.subject");
    assert_eq!(rule(bus::subjects::IN_HTTP, "2"), "message.json");
    assert_eq!(rule(bus::subjects::IN_HTTP, "two"), "message.json");
    assert_eq!(rule(bus::subjects::IN_HTTP, "1"), "accepted");
}
