use proptest::prelude::*;
use serde_json::{json, Value};
use xapi::statement::{complete_for_store, index_terms};
use xapi::XapiVersion;

use super::*;

const ID: &str = "5e3bc5a3-8c60-4d6b-9f4b-6c2a4c7e3f11";
const STORED: &str = "2026-12-07T23:43:42.180Z";

fn agent(name: &str) -> Value {
    json!({"objectType": "Agent", "name": name, "mbox": format!("mailto:{name}@example.org")})
}

fn authorities() -> Vec<Value> {
    vec![
        json!({"objectType": "Agent", "name": "Tool", "account": {"homePage": "https://w3id.org/xapi/llo/clients", "name": "tool"}}),
        json!({"objectType": "Group", "member": [agent("app"), {"account": {"homePage": "https://lrs.example", "name": "me"}}]}),
    ]
}

/// What the store makes of a statement the whole way: completed as stored, and its terms.
fn whole(statement: &Value, authority: &Value, version: XapiVersion) -> (Value, IndexTerms) {
    let mut completed = statement.clone();
    complete_for_store(&mut completed, STORED, authority, version);
    let terms = index_terms(&completed);
    (completed, terms)
}

/// Everything the written path makes of `text` is what the whole way makes of it: the
/// stored statement, its terms, and the record's JSON. `None` when it does not read it.
fn same_as_whole(text: &str, authority: &Value, version: XapiVersion) -> Option<()> {
    let written = Written::read(text)?;
    let statement: Value = serde_json::from_str(text).expect("json");
    let (completed, terms) = whole(&statement, authority, version);
    assert_eq!(
        Some(written.id.to_string()),
        xapi::statement::statement_id(&statement),
        "{text}"
    );
    let authority_text = serde_json::to_string(authority).expect("authority");
    let stored = written.stored_text(text, STORED, &authority_text, version);
    let read: Value = serde_json::from_str(&stored).expect("stored text is JSON");
    assert_eq!(read, completed, "{text}");
    assert_eq!(written.terms(&authority_terms(authority)), terms, "{text}");
    for (voided, defines) in [(false, true), (true, false)] {
        let record = WrittenRecord {
            statement: stored.clone(),
            voided,
            position: 77,
            defines,
        };
        let bytes = record.to_bytes();
        let whole_record = Record {
            statement: completed.clone(),
            voided,
            position: 77,
            defines,
            bodies: Vec::new(),
        };
        let as_serde_writes: Value =
            serde_json::from_slice(&serde_json::to_vec(&whole_record).expect("record"))
                .expect("json");
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).expect("record is JSON"),
            as_serde_writes,
            "{text}"
        );
        let back = record.record().expect("builds");
        assert_eq!(
            (back.statement, back.voided, back.position, back.defines),
            (completed.clone(), voided, 77, defines)
        );
    }
    Some(())
}

/// Statements of the forms the gateway sends most: every one is read, and made as the whole
/// way makes it.
#[test]
fn plain_statements_are_read_and_made_as_the_whole_way_makes_them() {
    let plain = [
        json!({
            "id": ID,
            "actor": agent("worker"),
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended", "display": {"en-US": "attended"}},
            "object": {"objectType": "Activity", "id": "https://hub.example/activities/1",
                "definition": {"name": {"en-US": "CNC \"training\"\n"}, "type": "http://adlnet.gov/expapi/activities/course"}},
            "context": {
                "registration": "A6E3A682-4773-441A-8B93-1C83D7E461A8",
                "instructor": agent("teacher"),
                "team": {"objectType": "Group", "mbox": "mailto:team@example.org", "member": [agent("m1"), agent("m2")]},
                "contextActivities": {"parent": [{"id": "https://hub.example/programmes/metal"}],
                    "category": [{"id": "http://data.europa.eu/esco/skill/x", "definition": {"name": {"nl": "lassen"}}}]},
                "extensions": {"https://w3id.org/xapi/llo/extensions/hub": "leiden", "https://example.org/n": [1.5, -2e-7]}
            },
            "result": {"completion": true, "duration": "PT241M", "score": {"scaled": 0.14}},
            "timestamp": "2026-08-04T16:00:00.000Z",
        }),
        // No version, no timestamp: both are put in.
        json!({"id": ID, "actor": agent("a"), "verb": {"id": "https://example.org/v"}, "object": {"id": "https://example.org/o"}}),
        // A version of its own, null ones, an object without a type, no context activities.
        json!({"id": ID.to_uppercase(), "version": "1.0.3", "timestamp": null, "actor": {"account": {"homePage": "https://x.example", "name": "n"}},
            "verb": {"id": "https://example.org/v"}, "object": {"id": "https://example.org/o"}, "context": {"registration": ID, "instructor": null}}),
        json!({"version": null, "id": ID, "actor": null, "verb": null, "object": null, "context": null}),
        // 2.0.0's context agents and groups, and an anonymous group as the actor.
        json!({"id": ID, "actor": {"objectType": "Group", "member": [agent("x"), agent("y")]},
            "verb": {"id": "https://example.org/v"}, "object": {"id": "https://example.org/o"},
            "context": {"contextAgents": [{"objectType": "contextAgent", "agent": agent("ca")}],
                "contextGroups": [{"objectType": "contextGroup", "group": {"objectType": "Group", "openid": "https://g.example", "member": [agent("g1")]}}],
                "contextActivities": {}}}),
        json!({"id": ID}),
    ];
    for statement in plain {
        let text = statement.to_string();
        for authority in authorities() {
            for version in [XapiVersion::V1_0_3, XapiVersion::V2_0_0] {
                assert!(
                    same_as_whole(&text, &authority, version).is_some(),
                    "not read: {text}"
                );
            }
        }
    }
}

/// What the written path leaves to the whole way: anything whose stored form is more than
/// members put in front, an id that is not one, and members it does not read as they are.
#[test]
fn statements_stored_otherwise_are_built_whole() {
    let base = json!({"id": ID, "actor": agent("a"), "verb": {"id": "https://example.org/v"},
        "object": {"id": "https://example.org/o"}});
    let with = |member: &str, value: Value| {
        let mut statement = base.clone();
        statement[member] = value;
        statement.to_string()
    };
    let whole_way = [
        with("stored", json!(STORED)),
        with("stored", Value::Null),
        with("authority", agent("auth")),
        with("attachments", json!([])),
        with("id", json!("not-a-uuid")),
        with("id", json!(7)),
        with("id", Value::Null),
        with(
            "object",
            json!({"objectType": "Agent", "mbox": "mailto:o@example.org"}),
        ),
        with("object", json!({"objectType": "Group", "member": []})),
        with("object", json!({"objectType": "StatementRef", "id": ID})),
        with(
            "object",
            json!({"objectType": "SubStatement", "actor": agent("s"), "verb": {"id": "https://example.org/v"}, "object": {"id": "https://example.org/o"}}),
        ),
        with("object", json!("https://example.org/o")),
        with("verb", json!({"id": 3})),
        with(
            "context",
            json!({"contextActivities": {"parent": {"id": "https://example.org/p"}}}),
        ),
        with(
            "context",
            json!({"contextActivities": [{"id": "https://example.org/p"}]}),
        ),
        with("context", json!({"registration": 5})),
        // A string with an escape where the reader borrows it.
        with("verb", json!({"id": "https://example.org/\"v\""})),
        // A member twice, and what is not an object.
        format!(r#"{{"id":"{ID}","id":"{ID}"}}"#),
        format!(r#"{{"id":"{ID}","verb":{{"id":"a","id":"b"}}}}"#),
        r#"["not", "a", "statement"]"#.to_owned(),
    ];
    for text in whole_way {
        assert!(Written::read(&text).is_none(), "read: {text}");
    }
    // The escapes the reader skips over are no reason: the actor and the result.
    let escaped = with("result", json!({"response": "\"quoted\"\\"}));
    assert!(same_as_whole(&escaped, &authorities()[0], XapiVersion::V2_0_0).is_some());
    let escaped = with(
        "actor",
        json!({"name": "\"A\"", "mbox": "mailto:A\u{e9}@example.org"}),
    );
    assert!(same_as_whole(&escaped, &authorities()[0], XapiVersion::V2_0_0).is_some());
}

fn pick(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    let count = values.len();
    (0..=count).prop_map(move |at| values.get(at).cloned())
}

/// Any statement of members the store reads, in any combination: what the written path reads,
/// it makes as the whole way makes it.
fn statements() -> impl Strategy<Value = Value> {
    let ids = pick(vec![
        json!(ID),
        json!(ID.to_uppercase()),
        json!("x"),
        Value::Null,
    ]);
    let actors = pick(vec![
        agent("a"),
        json!({"objectType": "Group", "mbox": "mailto:G@example.org", "member": [agent("m")]}),
        json!({"openid": "https://o.example"}),
        Value::Null,
        json!("text"),
    ]);
    let verbs = pick(vec![
        json!({"id": "https://example.org/v", "display": {"en": "v"}}),
        json!({"display": {"en": "v"}}),
        Value::Null,
    ]);
    let objects = pick(vec![
        json!({"id": "https://example.org/o", "definition": {"name": {"en": "O"}}}),
        json!({"objectType": "Activity", "id": "https://example.org/o2"}),
        json!({"objectType": "Agent", "mbox": "mailto:b@example.org"}),
        json!({"objectType": "Activity"}),
        Value::Null,
    ]);
    let registrations = pick(vec![json!(ID.to_uppercase()), json!(ID), Value::Null]);
    let instructors = pick(vec![
        agent("i"),
        json!({"objectType": "Group", "member": [agent("j"), agent("k")]}),
        Value::Null,
    ]);
    let lists = pick(vec![
        json!({"parent": [{"id": "https://example.org/p"}], "grouping": [{"id": "https://example.org/g"}, {"id": "https://example.org/o"}]}),
        json!({"category": [{"id": "https://example.org/c", "definition": {"type": "https://example.org/t"}}]}),
        json!({"other": {"id": "https://example.org/single"}}),
        json!({}),
    ]);
    let others = (
        pick(vec![json!("2.0.0"), json!("1.0.0"), Value::Null]),
        pick(vec![json!("2026-01-01T00:00:00Z"), Value::Null]),
        pick(vec![
            json!({"success": true, "extensions": {"https://example.org/e": {"deep": [1, {"x": null}]}}}),
        ]),
        pick(vec![
            json!({"https://w3id.org/xapi/llo/extensions/hub": "veghel"}),
        ]),
        pick(vec![
            json!([{"objectType": "contextAgent", "agent": agent("ca")}]),
        ]),
        any::<bool>(),
    );
    (
        ids,
        actors,
        verbs,
        objects,
        registrations,
        instructors,
        lists,
        others,
    )
        .prop_map(
            |(id, actor, verb, object, registration, instructor, lists, others)| {
                let (version, timestamp, result, extensions, context_agents, has_context) = others;
                let mut statement = serde_json::Map::new();
                let mut context = serde_json::Map::new();
                for (name, value) in [
                    ("registration", registration),
                    ("instructor", instructor),
                    ("contextActivities", lists),
                    ("extensions", extensions),
                    ("contextAgents", context_agents),
                ] {
                    if let Some(value) = value {
                        context.insert(name.into(), value);
                    }
                }
                for (name, value) in [
                    ("id", id),
                    ("actor", actor),
                    ("verb", verb),
                    ("object", object),
                    ("version", version),
                    ("timestamp", timestamp),
                    ("result", result),
                    ("context", has_context.then_some(Value::Object(context))),
                ] {
                    if let Some(value) = value {
                        statement.insert(name.into(), value);
                    }
                }
                Value::Object(statement)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn whatever_is_read_is_made_as_the_whole_way_makes_it(statement in statements(), which in 0..2usize, v2 in any::<bool>()) {
        let version = if v2 { XapiVersion::V2_0_0 } else { XapiVersion::V1_0_3 };
        let authority = &authorities()[which];
        let text = statement.to_string();
        let read = same_as_whole(&text, authority, version).is_some();
        // It reads every statement it can: one with a UUID for an id, an activity or nothing as
        // the object, and its context activities in arrays.
        let plain_id = statement.get("id").and_then(Value::as_str).is_some_and(|id| Uuid::parse_str(id).is_ok());
        let agent_object = statement.get("object").and_then(|object| object.get("objectType")) == Some(&json!("Agent"));
        let single = xapi::json::at(&statement, &["context", "contextActivities", "other"]).is_some();
        prop_assert_eq!(read, plain_id && !agent_object && !single, "{}", text);
    }
}

/// Applies `statements` as one gateway message: read as written (`true`) or built whole.
fn apply_http(
    db: &crate::db::Db,
    sequence: u64,
    statements: Vec<Value>,
    written: bool,
) -> bus::wire::Verdict {
    let authority = authorities().remove(0);
    let payload = serde_json::to_vec(&bus::wire::HttpBatch {
        authority,
        version: "2.0.0".into(),
        statements,
        define: true,
        bodies: Vec::new(),
    })
    .expect("batch");
    let incoming = crate::db::Incoming {
        sequence,
        subject: bus::subjects::IN_HTTP,
        payload: &payload,
        published: chrono::DateTime::parse_from_rfc3339(STORED)
            .expect("time")
            .with_timezone(&chrono::Utc),
        run: None,
    };
    let limits = xapi::limits::Limits::default();
    let mut parsed = crate::ingest::decode(incoming.subject, &payload, None, None, &limits);
    if !written {
        let whole: bus::wire::HttpBatch = serde_json::from_slice(&payload).expect("batch");
        if let Ok(crate::ingest::Ingest::Statements(batch)) = &mut parsed {
            batch.statements = crate::ingest::Statements::Parsed(whole.statements);
        }
    }
    let validator = xapi::Validator::new().expect("validator");
    db.apply(&incoming, parsed, &validator).expect("applied")
}

/// Every key of the database, records unpacked and read as JSON values (the order of a
/// statement's members is the writer's).
fn contents(db: &crate::db::Db) -> Vec<(Vec<u8>, Value)> {
    db.wait_for_indexes().expect("indexes");
    db.tree()
        .iter()
        .map(|entry| {
            let (key, value) = entry.expect("entry");
            let value = if key.first() == Some(&crate::keys::RECORD) {
                let bytes = crate::packed::unpack(&value).expect("unpacks");
                serde_json::from_slice(&bytes).expect("record")
            } else {
                Value::String(format!("{:?}", value.as_ref()))
            };
            (key.to_vec(), value)
        })
        .collect()
}

/// Messages applied with their statements read as written leave the database the whole way
/// leaves it: records, ids, indexes, spans, outbox and verdicts, through ids planned twice in
/// a message, a conflict, voiding in the same message and in a later one, a void that came
/// first, and a reference to a statement of the same message.
#[test]
fn a_database_fed_written_statements_is_the_one_fed_them_whole() {
    let id = |n: u8| format!("00000000-0000-4000-8000-0000000000{n:02}");
    let plain = |n: u8| {
        json!({"id": id(n), "actor": agent(&format!("w{n}")), "verb": {"id": "https://example.org/did"},
            "object": {"id": format!("https://example.org/act/{}", n % 3), "definition": {"name": {"en": "Act"}}},
            "context": {"registration": ID.to_uppercase(), "contextActivities": {"parent": [{"id": "https://example.org/p"}]}}})
    };
    let voiding = |n: u8, target: u8| {
        json!({"id": id(n), "actor": agent("admin"), "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": id(target)}})
    };
    let referencing = |n: u8, target: u8| {
        json!({"id": id(n), "actor": agent("peer"), "verb": {"id": "https://example.org/liked"},
            "object": {"objectType": "StatementRef", "id": id(target)}})
    };
    let mut changed = plain(2);
    changed["verb"]["id"] = json!("https://example.org/other");
    let messages = vec![
        vec![plain(1), plain(2), plain(2), plain(3)],
        // The same id with another statement: a conflict, nothing of it stored.
        vec![plain(4), changed],
        // Voided in its own message; referenced in it.
        vec![plain(5), voiding(6, 5), plain(7), referencing(8, 7)],
        // A void before its target, then the target; one voided a message later.
        vec![voiding(9, 10), voiding(11, 1)],
        vec![plain(10), plain(12), plain(1)],
    ];
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let [written, whole] = [&dirs[0], &dirs[1]]
        .map(|dir| crate::db::Db::open(&dir.path().join("store.sled")).expect("open"));
    for (sequence, statements) in messages.into_iter().enumerate() {
        let sequence = sequence as u64 + 1;
        assert_eq!(
            apply_http(&written, sequence, statements.clone(), true),
            apply_http(&whole, sequence, statements, false),
            "message {sequence}"
        );
    }
    // What the messages say, not only the same both ways: voided in the same message, before
    // arriving, and a message later; the rest not; the message with a conflict not stored.
    let voided = |n: u8| {
        let id = Uuid::parse_str(&id(n)).expect("uuid");
        written
            .record(&id)
            .expect("read")
            .map(|record| record.voided)
    };
    assert_eq!(
        [1, 2, 3, 4, 5, 7, 10, 12].map(voided),
        [
            Some(true),
            Some(false),
            Some(false),
            None,
            Some(true),
            Some(false),
            Some(true),
            Some(false)
        ]
    );
    assert_eq!(
        written
            .record(&Uuid::parse_str(&id(2)).expect("uuid"))
            .expect("read")
            .map(|record| record.statement["verb"]["id"].clone()),
        Some(json!("https://example.org/did")),
        "the conflicting statement did not replace the stored one"
    );
    let (written, whole) = (contents(&written), contents(&whole));
    assert!(written.len() > 40, "{}", written.len());
    assert_eq!(written, whole);
}
