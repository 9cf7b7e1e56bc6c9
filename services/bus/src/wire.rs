//! Messages on the bus. JSON throughout, so an operator can read them with `nats sub`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the gateway publishes on `lrs.in.http`: one HTTP request's statements, already
/// validated and given ids, as one message so that one fsync covers the whole batch. The store
/// reads the statements as the text the gateway wrote (`HttpBatch<Box<RawValue>>`), and builds
/// a statement into a `Value` only when it must.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpBatch<S = Value> {
    /// The authority the credential maps to; the store sets it on every statement.
    pub authority: Value,
    /// `1.0.3` or `2.0.0`: the version the client spoke, which decides the rules applied.
    pub version: String,
    pub statements: Vec<S>,
    /// Whether the credential may (re)define activities (the `define` scope); statements
    /// written without it do not change what the Activities resource returns.
    #[serde(default = "yes")]
    pub define: bool,
    /// SHA-2 of the attachment bodies this request sent as parts: the statements that brought
    /// a body may show it to a `statements/read/mine` reader, others only point at it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bodies: Vec<String>,
}

/// An [`HttpBatch`] whose statements are JSON text already, written as `serde_json` writes
/// the `HttpBatch` of those statements, byte for byte: the gateway writes each statement once
/// per request (for its seed) and publishes that text, instead of writing every statement
/// again here (BENCHMARKS.md, the forty-seventh round).
pub struct HttpBatchText<'a> {
    pub authority: &'a Value,
    pub version: &'a str,
    /// The statements' texts, comma-separated: the inside of the array.
    pub statements: &'a [u8],
    pub define: bool,
    pub bodies: &'a [String],
}

impl HttpBatchText<'_> {
    pub fn to_vec(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.statements.len() + 256);
        out.extend_from_slice(br#"{"authority":"#);
        serde_json::to_writer(&mut out, self.authority)?;
        out.extend_from_slice(br#","version":"#);
        serde_json::to_writer(&mut out, self.version)?;
        out.extend_from_slice(br#","statements":["#);
        out.extend_from_slice(self.statements);
        out.extend_from_slice(br#"],"define":"#);
        out.extend_from_slice(if self.define { b"true" } else { b"false" });
        if !self.bodies.is_empty() {
            out.extend_from_slice(br#","bodies":"#);
            serde_json::to_writer(&mut out, self.bodies)?;
        }
        out.push(b'}');
        Ok(out)
    }
}

fn yes() -> bool {
    true
}

/// The store's verdict on one `LRS_IN` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Every statement of the message is stored (or was already, identically).
    Applied,
    /// The message is invalid; nothing of it was stored.
    Rejected(Rejection),
    /// A statement id is already stored with other content; nothing of the message was stored.
    Conflict { statement: usize, id: String },
    /// An erasure command was applied: this many statements and documents are gone.
    Erased { statements: usize, documents: usize },
    /// A document write that was not done (a precondition failed, the merge was impossible,
    /// the document belongs to another credential…); a document write that was done is
    /// [`Verdict::Applied`].
    Document {
        status: DocumentStatus,
        message: String,
    },
    /// A credential change that was made: the credential as it is now.
    Credential {
        credential: crate::access::CredentialView,
    },
    /// A credential change that was refused: `bad_request`, `not_found` or `conflict`.
    Refused { code: String, message: String },
    /// A bundle ([`crate::PARTS_HEADER`]) with a part that was not applied: each part's own
    /// verdict, in the bundle's order. A bundle whose parts were all applied is
    /// [`Verdict::Applied`].
    Parts { parts: Vec<Verdict> },
}

impl Verdict {
    /// The verdict on part `index` of a bundle: its own if the store gave parts their own, else
    /// the message's (applied, or a rejection of the whole bundle).
    pub fn part(&self, index: usize) -> Verdict {
        match self {
            Verdict::Parts { parts } => parts.get(index).cloned().unwrap_or_else(|| {
                Verdict::Rejected(Rejection {
                    statement: None,
                    path: String::new(),
                    rule: "bundle.parts".into(),
                    message: format!("the store gave no verdict on part {index} of a bundle"),
                })
            }),
            whole => whole.clone(),
        }
    }
}

/// Why a message was rejected: which statement, where, which rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub statement: Option<usize>,
    pub path: String,
    pub rule: String,
    pub message: String,
}

/// Published on `lrs.applied` after every flushed sled batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// Every `LRS_IN` sequence at or below this one is applied (or rejected) and durable.
    pub through: u64,
    /// Verdicts of the sequences this batch covered that were not plainly applied.
    pub verdicts: Vec<(u64, Verdict)>,
}

/// A message on `LRS_REJECTED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedMessage {
    pub subject: String,
    pub sequence: u64,
    pub rejection: Rejection,
    /// The message body as received, so it can be fixed and replayed; cut to fit one NATS
    /// message when it was larger (then `payload_truncated` and the original size).
    pub payload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
}

/// A message on `LRS_STORED`: the effects of one `LRS_IN` message, or of a run of them the
/// store applied under one flush (when it is the only store replica), in the order they
/// happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvents {
    /// The `LRS_IN` sequence whose message caused these events: the last one's, for a run.
    pub sequence: u64,
    pub events: Vec<StoredEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The statement was stored.
    Stored,
    /// The statement (stored earlier, or in this same message) was voided.
    Voided,
    /// The statement was erased (the right to erasure): it no longer counts anywhere, and
    /// nothing may count it again.
    Erased,
}

/// One event: `S` is the statement, a [`Value`] where it is read, or the JSON text the store
/// keeps, which it publishes as it stored it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent<S = Value> {
    pub kind: EventKind,
    /// The store's own order number of the statement (the `more` cursor order).
    pub position: u64,
    pub statement: S,
}

/// Request on `lrs.api.verdict`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictRequest {
    pub sequence: u64,
}

/// Reply on `lrs.api.verdict`: `None` while the sequence is not applied yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictReply {
    pub verdict: Option<Verdict>,
}

/// Request on `lrs.api.statements`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatementQuery {
    pub statement_id: Option<String>,
    pub voided_statement_id: Option<String>,
    /// Canonical inverse functional identifier of the agent filter.
    pub agent: Option<String>,
    pub verb: Option<String>,
    pub activity: Option<String>,
    pub registration: Option<String>,
    pub related_activities: bool,
    pub related_agents: bool,
    /// RFC 3339 `stored` bounds: since is exclusive, until inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
    pub ascending: bool,
    /// Continue after this position (exclusive), from a `more` link.
    pub after: Option<u64>,
    /// Only statements whose authority is (or has as a member) this agent IFI key: the
    /// `statements/read/mine` scope.
    #[serde(default)]
    pub authority: Option<String>,
    /// Voided statements too (an export: what another LRS needs to hold the same).
    #[serde(default)]
    pub include_voided: bool,
    /// Answer a page as a [`joined_page`] instead of JSON: for a gateway that sends the
    /// statements on as they are stored, without attachments, which then never reads them. A
    /// store from before this field ignores it and answers JSON, which [`read_joined_page`]
    /// tells apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
}

/// Reply on `lrs.api.statements`, its statements as `S`: [`Value`], or JSON text
/// (`Box<RawValue>`) for a store that sends records as they are stored and a gateway that
/// passes them on (the same JSON on the wire either way).
///
/// Read through [`StatementReplyWire`], a plain struct: serde reads an internally tagged enum
/// by buffering the whole reply in its own tree first, which for a page of 100 statements was
/// half of a gateway's time answering a statement query (profile in BENCHMARKS.md, issue 14).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatementReply<S = Value> {
    One {
        statement: Option<S>,
        consistent_through: String,
        /// As for `Page`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bodies: Option<Vec<String>>,
    },
    Page {
        statements: Vec<S>,
        /// Position of the last statement returned, when more may follow.
        next_after: Option<u64>,
        consistent_through: String,
        /// For a query confined to one authority: the attachment bodies (SHA-2) its own
        /// statements brought, the only ones it may be shown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bodies: Option<Vec<String>>,
        /// The latest `stored` of the page's statements (its `Last-Modified`), when the store
        /// says it (a store from before this field does not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_modified: Option<String>,
    },
    Error {
        message: String,
    },
}

/// [`StatementReply`] as it is on the wire, every variant's fields side by side, with its
/// statements read as `S`: [`Value`], or JSON text (`Box<RawValue>`) for a gateway that passes
/// them on as they are.
#[derive(Deserialize)]
pub struct StatementReplyWire<S> {
    pub kind: String,
    #[serde(default = "none")]
    pub statement: Option<S>,
    #[serde(default = "none")]
    pub statements: Option<Vec<S>>,
    #[serde(default)]
    pub next_after: Option<u64>,
    #[serde(default)]
    pub consistent_through: Option<String>,
    #[serde(default)]
    pub bodies: Option<Vec<String>>,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

impl<S> StatementReply<S> {
    /// The same reply, each statement made by `read`.
    pub fn try_map<T>(
        self,
        read: impl Fn(S) -> Result<T, String>,
    ) -> Result<StatementReply<T>, String> {
        Ok(match self {
            StatementReply::One {
                statement,
                consistent_through,
                bodies,
            } => StatementReply::One {
                statement: statement.map(&read).transpose()?,
                consistent_through,
                bodies,
            },
            StatementReply::Page {
                statements,
                next_after,
                consistent_through,
                bodies,
                last_modified,
            } => StatementReply::Page {
                statements: statements
                    .into_iter()
                    .map(&read)
                    .collect::<Result<_, _>>()?,
                next_after,
                consistent_through,
                bodies,
                last_modified,
            },
            StatementReply::Error { message } => StatementReply::Error { message },
        })
    }
}

impl<S> StatementReplyWire<S> {
    /// The reply it carries (its statements as they came: [`StatementReply::try_map`] makes
    /// them into something else).
    pub fn reply(self) -> Result<StatementReply<S>, String> {
        let consistent_through = || {
            self.consistent_through
                .clone()
                .ok_or_else(|| "missing field `consistent_through`".to_owned())
        };
        match self.kind.as_str() {
            "one" => Ok(StatementReply::One {
                consistent_through: consistent_through()?,
                statement: self.statement,
                bodies: self.bodies,
            }),
            "page" => Ok(StatementReply::Page {
                consistent_through: consistent_through()?,
                statements: self
                    .statements
                    .ok_or_else(|| "missing field `statements`".to_owned())?,
                next_after: self.next_after,
                bodies: self.bodies,
                last_modified: self.last_modified,
            }),
            "error" => Ok(StatementReply::Error {
                message: self
                    .message
                    .ok_or_else(|| "missing field `message`".to_owned())?,
            }),
            other => Err(format!("unknown statement reply kind {other:?}")),
        }
    }
}

impl<'de, S: Deserialize<'de>> Deserialize<'de> for StatementReply<S> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StatementReplyWire::<S>::deserialize(deserializer)?
            .reply()
            .map_err(serde::de::Error::custom)
    }
}

/// The three document resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    State,
    ActivityProfile,
    AgentProfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentOp {
    Get,
    /// The ids in the scope (optionally updated after `since`).
    List,
    Put,
    /// Store, or merge JSON objects into the existing document.
    Post,
    Delete,
    /// Every document in the scope (State only).
    DeleteAll,
}

/// The scope of a document: the activity, agent (IFI key) and registration it belongs to,
/// empty where the resource has none, encoded as a JSON array. An encoding, not a separator:
/// an account name may hold any character, a newline included, and must not be able to make
/// two scopes one.
pub fn document_scope(activity: &str, agent: &str, registration: &str) -> String {
    serde_json::to_string(&[activity, agent, registration]).unwrap_or_default()
}

/// The parts of a [`document_scope`].
pub fn parse_document_scope(scope: &str) -> Option<[String; 3]> {
    serde_json::from_str(scope).ok()
}

/// A document request. Travels framed with the body (see [`frame`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentRequest {
    pub op: DocumentOp,
    pub kind: DocumentKind,
    /// Canonical scope ([`document_scope`]): what the documents belong to.
    pub scope: String,
    /// The credential asking (its key): writes record it among the document's writers.
    #[serde(default)]
    pub writer: Option<String>,
    /// Confine the request to documents `writer` wrote (a credential without a read scope
    /// over everything sees only its own).
    #[serde(default)]
    pub own_only: bool,
    pub id: Option<String>,
    /// RFC 3339 UTC; `List` returns ids updated after it.
    pub since: Option<String>,
    pub content_type: Option<String>,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    /// What a PUT without `If-Match`/`If-None-Match` gets.
    pub precondition: Precondition,
}

/// Whether a PUT must say which version of the document it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precondition {
    /// Overwrites freely (State under xAPI 1.0.3).
    Optional,
    /// Overwriting an existing document without a precondition is a 409 (xAPI 2.0).
    RequiredToOverwrite,
    /// As above, and creating one without a precondition is a 400 (profiles, xAPI 1.0.3).
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    Ok,
    NoContent,
    NotFound,
    BadRequest,
    Conflict,
    PreconditionFailed,
    /// The document exists but belongs to another credential.
    Forbidden,
    /// The document (a merge included) would pass `limits.document_bytes`.
    TooLarge,
    Internal,
}

/// A document reply. Travels framed with the body: the document for `Get`, a JSON array of
/// ids for `List`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentReply {
    pub status: DocumentStatus,
    pub message: Option<String>,
    pub content_type: Option<String>,
    /// Quoted, as it goes into the `ETag` header.
    pub etag: Option<String>,
    /// RFC 3339 UTC.
    pub updated: Option<String>,
}

/// A JSON header and a binary body in one NATS payload: `u32` big-endian header length,
/// the header, the body. Keeps document bodies byte-for-byte, whatever their type.
pub fn frame<T: Serialize>(header: &T, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(header)?;
    let length = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits a [`frame`]d payload.
pub fn unframe<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<(T, &[u8]), String> {
    let length_bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("frame shorter than its length prefix")?;
    let length =
        usize::try_from(u32::from_be_bytes(length_bytes)).map_err(|err| err.to_string())?;
    let header = payload
        .get(4..4 + length)
        .ok_or("frame shorter than its header")?;
    let header = serde_json::from_slice(header).map_err(|err| err.to_string())?;
    Ok((header, &payload[4 + length..]))
}

/// What a [`joined_page`] says besides its statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageHead {
    pub next_after: Option<u64>,
    pub consistent_through: String,
    pub last_modified: Option<String>,
}

/// A page of statements as a [`frame`]: its [`PageHead`], then the statements' JSON texts
/// joined by commas (what goes between the brackets of `"statements":[...]`). The reader
/// finds where it ends without reading a statement.
pub fn joined_page<S: AsRef<str>>(
    head: &PageHead,
    statements: &[S],
) -> Result<Vec<u8>, serde_json::Error> {
    let length = statements.iter().map(|text| text.as_ref().len() + 1).sum();
    let mut joined = Vec::with_capacity(length);
    for (index, text) in statements.iter().enumerate() {
        if index > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(text.as_ref().as_bytes());
    }
    frame(head, &joined)
}

/// A reply to a query that asked for a joined page: the page, or `None` when the reply is
/// JSON (a single statement, an error, or a store from before joined pages). A JSON reply
/// starts with `{`; a frame starts with its header's length, whose first byte is 0 for any
/// header shorter than 16 MiB.
pub fn read_joined_page(payload: &[u8]) -> Result<Option<(PageHead, &[u8])>, String> {
    if payload.first() == Some(&b'{') {
        return Ok(None);
    }
    unframe(payload).map(Some)
}

/// Request on `lrs.api.objects`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "resource", rename_all = "snake_case")]
pub enum ObjectQuery {
    /// The canonical definition of an activity, merged from the statements stored.
    Activity {
        id: String,
        /// Only from statements whose authority is this agent IFI key (a credential that may
        /// read only its own statements learns nothing from others').
        #[serde(default)]
        authority: Option<String>,
    },
    /// Everything known of the person behind one agent IFI key.
    Person {
        ifi: String,
        /// As for `Activity`.
        #[serde(default)]
        authority: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch written from its statements' texts is what `serde_json` writes of the batch,
    /// byte for byte, with and without bodies and the define scope.
    #[test]
    fn a_batch_written_from_texts_is_the_batch_serde_writes() {
        let statements = vec![
            serde_json::json!({"id": "a", "actor": {"mbox": "mailto:a@example.org"}, "n": 1.5}),
            serde_json::json!({"verb": {"id": "https://example.org/v\u{e9}\"x\n"}}),
            serde_json::json!({}),
        ];
        let authority = serde_json::json!({"objectType": "Agent", "account": {"homePage": "https://lrs", "name": "k"}});
        for (define, bodies) in [
            (true, vec![]),
            (false, vec!["sha2-a".to_owned(), "b".into()]),
        ] {
            let batch = HttpBatch {
                authority: authority.clone(),
                version: "2.0.0".into(),
                statements: statements.clone(),
                define,
                bodies: bodies.clone(),
            };
            let texts: Vec<String> = statements.iter().map(Value::to_string).collect();
            let written = HttpBatchText {
                authority: &authority,
                version: "2.0.0",
                statements: texts.join(",").as_bytes(),
                define,
                bodies: &bodies,
            }
            .to_vec()
            .expect("written");
            assert_eq!(
                String::from_utf8(written).expect("text"),
                serde_json::to_string(&batch).expect("batch")
            );
        }
    }

    /// Every kind of statement reply reads back as it was written, and what is not one is
    /// refused with the reason.
    #[test]
    fn statement_replies_read_back_as_written() {
        let replies = [
            StatementReply::One {
                statement: Some(serde_json::json!({"id": "x", "stored": "2026-01-01T00:00:00Z"})),
                consistent_through: "2026-01-01T00:00:01Z".into(),
                bodies: None,
            },
            StatementReply::One {
                statement: None,
                consistent_through: "2026-01-01T00:00:01Z".into(),
                bodies: Some(vec!["abc".into()]),
            },
            StatementReply::Page {
                statements: vec![
                    serde_json::json!({"id": "a"}),
                    serde_json::json!({"id": "b"}),
                ],
                next_after: Some(7),
                consistent_through: "2026-01-01T00:00:01Z".into(),
                bodies: None,
                last_modified: Some("2026-01-01T00:00:00Z".into()),
            },
            StatementReply::Error {
                message: "no".into(),
            },
        ];
        for reply in replies {
            let bytes = serde_json::to_vec(&reply).expect("encode");
            let back: StatementReply = serde_json::from_slice(&bytes).expect("decode");
            assert_eq!(serde_json::to_vec(&back).expect("encode"), bytes);
            // Statements kept as JSON text (the store's records as stored) write the same.
            let raw: StatementReply<Box<serde_json::value::RawValue>> =
                serde_json::from_slice(&bytes).expect("decode as text");
            assert_eq!(serde_json::to_vec(&raw).expect("encode"), bytes);
        }
        for (bad, reason) in [
            (r#"{"kind":"page","consistent_through":"t"}"#, "statements"),
            (r#"{"kind":"other"}"#, "unknown statement reply kind"),
            (r#"{"kind":"one","statement":null}"#, "consistent_through"),
        ] {
            let err = serde_json::from_str::<StatementReply>(bad).expect_err(bad);
            assert!(err.to_string().contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn frames_round_trip_binary_bodies() {
        let reply = DocumentReply {
            status: DocumentStatus::Ok,
            message: None,
            content_type: Some("application/octet-stream".into()),
            etag: Some("\"abc\"".into()),
            updated: None,
        };
        let body = [0u8, 255, 10, 13, 0];
        let framed = frame(&reply, &body).expect("frame");
        let (header, rest): (DocumentReply, &[u8]) = unframe(&framed).expect("unframe");
        assert_eq!(header.etag, reply.etag);
        assert_eq!(rest, body);
        assert!(unframe::<DocumentReply>(&[0, 0]).is_err());
        assert!(unframe::<DocumentReply>(&[0, 0, 0, 9, b'{']).is_err());
    }

    /// A joined page reads back as its head and statements (put between brackets, the same
    /// array), however many it holds; a JSON reply is not taken for one, nor a cut frame.
    #[test]
    fn joined_pages_read_back_and_json_replies_stay_json() {
        let head = PageHead {
            next_after: Some(12),
            consistent_through: "2026-01-01T00:00:01Z".into(),
            last_modified: Some("2026-01-01T00:00:00Z".into()),
        };
        let statements = [
            r#"{"id":"a","result":{"response":"[1,2],{3}"}}"#,
            r#"{"id":"b","object":{"id":"http://x/{}"}}"#,
        ];
        for count in 0..=statements.len() {
            let payload = joined_page(&head, &statements[..count]).expect("join");
            let (back, joined) = read_joined_page(&payload)
                .expect("readable")
                .expect("a joined page");
            assert_eq!(back, head);
            let array: Vec<Value> = serde_json::from_slice(&[b"[", joined, b"]"].concat())
                .expect("the statements between brackets are an array");
            let wanted: Vec<Value> = statements[..count]
                .iter()
                .map(|text| serde_json::from_str(text).expect("statement"))
                .collect();
            assert_eq!(array, wanted);
            assert!(read_joined_page(&payload[..3]).is_err());
        }
        let json = serde_json::to_vec(&StatementReply::<Value>::Error {
            message: "no".into(),
        })
        .expect("encode");
        assert_eq!(read_joined_page(&json), Ok(None));
    }
}

/// Which summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryKind {
    Worker,
    Hub,
    Company,
}

/// Request on `lrs.api.summaries`. Months are `YYYY-MM`, inclusive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum SummaryQuery {
    One {
        kind: SummaryKind,
        /// Worker IFI key, hub id or company id.
        id: String,
        from: Option<String>,
        to: Option<String>,
    },
    List {
        kind: SummaryKind,
        /// A numeric field of the summaries to sort by; by id when absent.
        sort: Option<String>,
        descending: bool,
        offset: usize,
        limit: usize,
        /// Only the summaries of a hub's or a company's members.
        #[serde(default)]
        filter: ListFilter,
        /// Where the previous page ended (its `next_cursor`): the page after it, read without
        /// walking past the earlier ones. Not with `offset` or a filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// The programme: companies reached against `target`, by hub type and region (from
    /// `hubs`, the registry as the store has it), workers by learner group.
    Programme {
        hubs: Vec<crate::hubs::HubEntry>,
        target: u64,
    },
}

/// A list narrowed to one hub's workers or companies, or one company's workers; with `from`
/// and `to` (`YYYY-MM`), a hub's workers with a statement there in those months.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl ListFilter {
    pub fn is_empty(&self) -> bool {
        *self == ListFilter::default()
    }
}

/// Reply on `lrs.api.summaries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum SummaryReply {
    One {
        summary: Option<Value>,
    },
    List {
        total: usize,
        items: Vec<Value>,
        /// Set when the page stopped early to fit one NATS message: where the next starts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_offset: Option<usize>,
        /// Where this page ended, for the next one (`cursor`); none after the last page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    Error {
        message: String,
    },
    /// The query cannot be answered as asked (a field that cannot be sorted by, a summary too
    /// large for one message): a 400 that says why.
    Refused {
        message: String,
    },
}

/// Request on `lrs.api.replicas`: every store and projector replica answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicasRequest {
    /// Also compute the digest of the replica's content (reads its whole database).
    #[serde(default)]
    pub digest: bool,
}

/// One replica's answer on `lrs.api.replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `store` or `projector`.
    pub kind: String,
    pub name: String,
    /// Its durable consumer.
    pub consumer: String,
    /// The stream it applies (`LRS_IN`, `LRS_STORED`) and the sequence it applied through.
    pub stream: String,
    pub applied: u64,
    /// The stream's last sequence when asked (`None` when NATS did not say).
    pub stream_last: Option<u64>,
    /// Messages behind the stream's last.
    pub lag: Option<u64>,
    /// Statements (store) or summaries (projector) it holds, with the digest.
    pub items: Option<u64>,
    /// Digest of its content: equal digests at equal `applied` = identical replicas.
    pub digest: Option<String>,
    /// Why something above is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
