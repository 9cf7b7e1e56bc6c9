//! Replicas that apply the same log end identical.
use super::*;
use crate::db::Incoming;
use bus::access::{CredentialChange, CredentialRecord, EraseCommand, Scope};
use bus::wire::{DocumentKind, DocumentOp, DocumentRequest, HttpBatch, Precondition, Verdict};
use chrono::{DateTime, Utc};
use serde_json::json;
use xapi::Validator;

const HUB: &str = "https://w3id.org/xapi/llo/extensions/hub";

fn hub_statement(person: &str) -> serde_json::Value {
    json!({
        "actor": {"mbox": format!("mailto:{person}@example.org")},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
        "object": {"id": "https://hub.example/sessions/1"},
        "context": {"extensions": {HUB: "h"}}
    })
}

fn document(op: DocumentOp, if_match: Option<&str>, body: &str) -> Vec<u8> {
    let request = DocumentRequest {
        op,
        kind: DocumentKind::State,
        scope: bus::wire::document_scope("https://x.example/a", "mbox:mailto:ann@example.org", ""),
        writer: Some("tool".into()),
        own_only: false,
        id: Some("bookmark".into()),
        since: None,
        content_type: Some("application/json".into()),
        if_match: if_match.map(str::to_owned),
        if_none_match: None,
        precondition: Precondition::Optional,
    };
    bus::wire::frame(&request, body.as_bytes()).expect("frame")
}

/// A log with every kind of write: credentials, statements without ids from a hub, a batch
/// with a void, documents (a merge, a refused precondition), an erasure.
fn log() -> Vec<(&'static str, Vec<u8>)> {
    let credential = CredentialChange::Create {
        record: CredentialRecord {
            key: "tool".into(),
            name: "Tool".into(),
            scopes: vec![Scope::All],
            secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            on_behalf_of: None,
            requests_per_minute: None,
            created: String::new(),
            rotated: None,
            revoked: None,
        },
        actor: "cli:test".into(),
    };
    let batch = HttpBatch {
        authority: json!({"objectType": "Agent", "account": {"homePage": "https://lrs.example", "name": "tool"}}),
        version: "2.0.0".into(),
        statements: vec![
            json!({"id": "33333333-3333-4333-8333-333333333333", "actor": {"mbox": "mailto:bob@example.org"},
                   "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"}, "object": {"id": "https://x.example/1"}}),
            json!({"id": "44444444-4444-4444-8444-444444444444", "actor": {"mbox": "mailto:bob@example.org"},
                   "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
                   "object": {"objectType": "StatementRef", "id": "33333333-3333-4333-8333-333333333333"}}),
        ],
        define: true,
        bodies: Vec::new(),
    };
    let erase = EraseCommand {
        agent: json!({"mbox": "mailto:cas@example.org"}),
        actor: "cli:test".into(),
        reason: None,
    };
    vec![
        (
            bus::subjects::IN_CREDENTIALS,
            serde_json::to_vec(&credential).expect("json"),
        ),
        (
            "lrs.in.hub.h",
            serde_json::to_vec(&[hub_statement("ann"), hub_statement("cas")]).expect("json"),
        ),
        (
            bus::subjects::IN_HTTP,
            serde_json::to_vec(&batch).expect("json"),
        ),
        (
            bus::subjects::IN_DOCUMENTS,
            document(DocumentOp::Put, None, r#"{"page": 1}"#),
        ),
        (
            bus::subjects::IN_DOCUMENTS,
            document(DocumentOp::Post, None, r#"{"seen": true}"#),
        ),
        (
            bus::subjects::IN_DOCUMENTS,
            document(DocumentOp::Put, Some("\"not-the-etag\""), "{}"),
        ),
        (
            bus::subjects::IN_ERASE,
            serde_json::to_vec(&erase).expect("json"),
        ),
        (
            "lrs.in.hub.h",
            serde_json::to_vec(&[hub_statement("dan")]).expect("json"),
        ),
    ]
}

fn at(second: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000 + second, 0).expect("time")
}

/// Applies the log from `from` (a redelivery when below what is applied), message n at time
/// `time(n)`; the verdicts.
fn replay(
    db: &Db,
    validator: &Validator,
    from: usize,
    time: impl Fn(i64) -> DateTime<Utc>,
) -> Vec<Verdict> {
    log()
        .iter()
        .enumerate()
        .skip(from)
        .map(|(index, (subject, payload))| {
            let sequence = index as u64 + 1;
            let incoming = Incoming {
                sequence,
                subject,
                payload,
                published: time(sequence as i64),
                run: None,
            };
            crate::db::tests::apply_incoming(db, validator, &incoming)
        })
        .collect()
}

#[test]
fn replicas_applying_the_same_log_hold_the_same_content() {
    let validator = Validator::new().expect("schemas");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let dbs: Vec<Db> = dirs
        .iter()
        .map(|dir| Db::open(dir.path()).expect("open"))
        .collect();
    let verdicts = replay(&dbs[0], &validator, 0, at);
    assert!(
        matches!(verdicts[0], Verdict::Credential { .. }),
        "{verdicts:?}"
    );
    assert!(
        matches!(verdicts[5], Verdict::Document { .. }),
        "the stale If-Match is refused: {verdicts:?}"
    );
    assert!(matches!(verdicts[6], Verdict::Erased { statements: 1, .. }));
    assert_eq!(
        replay(&dbs[1], &validator, 0, at),
        verdicts,
        "same verdicts"
    );
    // The third replica crashed part-way and is sent the log again from the start.
    replay(&dbs[2], &validator, 0, at);
    replay(&dbs[2], &validator, 2, at);

    let digests: Vec<Digest> = dbs.iter().map(|db| db.digest().expect("digest")).collect();
    assert_eq!(digests[0].applied, 8);
    assert_eq!(
        digests[0].statements, 4,
        "ann's, bob's two, dan's: cas's was erased"
    );
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2], "a redelivered log changes nothing");
}

#[test]
fn the_digest_sees_the_times_the_log_gave() {
    let validator = Validator::new().expect("schemas");
    let (first, second) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, b) = (
        Db::open(first.path()).expect("open"),
        Db::open(second.path()).expect("open"),
    );
    replay(&a, &validator, 0, at);
    replay(&b, &validator, 0, |second| at(second + 1));
    let (a, b) = (a.digest().expect("digest"), b.digest().expect("digest"));
    assert_eq!((a.applied, a.statements), (b.applied, b.statements));
    assert_ne!(
        a.digest, b.digest,
        "stored, updated and created come from the message, and differ here"
    );
}
