//! Messages on the bus. JSON throughout, so an operator can read them with `nats sub`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the gateway publishes on `lrs.in.http`: one HTTP request's statements, already
/// validated and given ids, as one message so that one fsync covers the whole batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpBatch {
    /// The authority the credential maps to; the store sets it on every statement.
    pub authority: Value,
    /// `1.0.3` or `2.0.0`: the version the client spoke, which decides the rules applied.
    pub version: String,
    pub statements: Vec<Value>,
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
    /// The message body as received, so it can be fixed and replayed.
    pub payload: String,
}

/// A message on `LRS_STORED`: the effects of one `LRS_IN` message, in the order they happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvents {
    /// The `LRS_IN` sequence whose message caused these events.
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub kind: EventKind,
    /// The store's own order number of the statement (the `more` cursor order).
    pub position: u64,
    pub statement: Value,
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
}

/// Reply on `lrs.api.statements`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatementReply {
    One {
        statement: Option<Value>,
        consistent_through: String,
    },
    Page {
        statements: Vec<Value>,
        /// Position of the last statement returned, when more may follow.
        next_after: Option<u64>,
        consistent_through: String,
    },
    Error {
        message: String,
    },
}
