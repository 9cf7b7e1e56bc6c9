//! The limits contract: every input has a bound, and reaching it is an error that names the
//! bound (its configuration key and its value), never a crash, a hang or a stuck consumer.
//!
//! The gateway and the store read statements through [`parse_statements`], so a statement
//! arriving over HTTP and one arriving straight on a hub subject meet the same bounds.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// The bounds, all configurable (`[limits]` in the TOML file). README "Limits" lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of one HTTP request body (413 `body_too_large`).
    pub body_bytes: usize,
    /// Statements in one request or one NATS message (413 `too_many_statements`).
    pub statements_per_request: usize,
    /// Bytes of one statement as sent (413 `statement_too_large`).
    pub statement_bytes: usize,
    /// Nesting of arrays and objects in a JSON body (400 `json_too_deep`).
    pub json_depth: usize,
    /// Parts of a `multipart/mixed` body, the statements included (413 `too_many_parts`).
    pub multipart_parts: usize,
    /// Characters of a multipart boundary; RFC 2046 allows at most 70 (400 `boundary_too_long`).
    pub boundary_length: usize,
    /// The most statements one page returns; a larger `limit` is a 400 `query_limit_too_large`.
    pub query_limit: usize,
    /// The most summaries one list page returns; a larger `limit` is a 400 too.
    pub summary_limit: usize,
    /// Bytes of one page of statements: a page stops early and links `more` when the next
    /// statement would pass this (or the NATS message limit, whichever is lower).
    pub page_bytes: usize,
    /// Bytes of one State, Activity Profile or Agent Profile document (413 `document_too_large`).
    pub document_bytes: usize,
    /// Bytes of one message published straight to a hub subject `lrs.in.hub.<hub>`; a larger
    /// one goes to `LRS_REJECTED` (rule `limits.hub_message_bytes`).
    pub hub_message_bytes: usize,
    /// Bytes of an alternate-syntax form the gateway reads before it knows who is calling
    /// (credentials inside the form, not in a header).
    pub unauthenticated_form_bytes: usize,
    /// Seconds a client may take to send its request headers; the connection is closed after.
    pub header_read_timeout_secs: u64,
    /// Seconds a client may take to send its request body (408 `body_read_timeout`).
    pub body_read_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 16 * 1024 * 1024,
            statements_per_request: 10_000,
            statement_bytes: 1024 * 1024,
            json_depth: 32,
            multipart_parts: 101,
            boundary_length: 70,
            query_limit: 100,
            summary_limit: 500,
            page_bytes: 4 * 1024 * 1024,
            document_bytes: 1024 * 1024,
            hub_message_bytes: 1024 * 1024,
            unauthenticated_form_bytes: 64 * 1024,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
        }
    }
}

/// serde_json refuses nesting beyond this; a larger configured depth could never be reached.
pub const SERDE_MAX_DEPTH: usize = 128;

/// Which bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    BodyBytes,
    StatementsPerRequest,
    StatementBytes,
    JsonDepth,
    MultipartParts,
    BoundaryLength,
    QueryLimit,
    SummaryLimit,
    DocumentBytes,
    HubMessageBytes,
    UnauthenticatedFormBytes,
    BodyReadTimeout,
    /// The server's NATS `max_payload`: what one request becomes on the bus must fit in one
    /// message.
    NatsMessage,
}

impl Limit {
    /// The error code an HTTP client sees.
    pub fn code(self) -> &'static str {
        match self {
            Limit::BodyBytes => "body_too_large",
            Limit::StatementsPerRequest => "too_many_statements",
            Limit::StatementBytes => "statement_too_large",
            Limit::JsonDepth => "json_too_deep",
            Limit::MultipartParts => "too_many_parts",
            Limit::BoundaryLength => "boundary_too_long",
            Limit::QueryLimit | Limit::SummaryLimit => "query_limit_too_large",
            Limit::DocumentBytes => "document_too_large",
            Limit::HubMessageBytes => "message_too_large",
            Limit::UnauthenticatedFormBytes => "form_too_large",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::NatsMessage => "batch_too_large",
        }
    }

    /// The configuration key that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Limit::BodyBytes => "limits.body_bytes",
            Limit::StatementsPerRequest => "limits.statements_per_request",
            Limit::StatementBytes => "limits.statement_bytes",
            Limit::JsonDepth => "limits.json_depth",
            Limit::MultipartParts => "limits.multipart_parts",
            Limit::BoundaryLength => "limits.boundary_length",
            Limit::QueryLimit => "limits.query_limit",
            Limit::SummaryLimit => "limits.summary_limit",
            Limit::DocumentBytes => "limits.document_bytes",
            Limit::HubMessageBytes => "limits.hub_message_bytes",
            Limit::UnauthenticatedFormBytes => "limits.unauthenticated_form_bytes",
            Limit::BodyReadTimeout => "limits.body_read_timeout_secs",
            Limit::NatsMessage => "nats max_payload",
        }
    }

    /// 413 for sizes, 408 for time, 400 for shapes.
    pub fn http_status(self) -> u16 {
        match self {
            Limit::JsonDepth | Limit::BoundaryLength | Limit::QueryLimit | Limit::SummaryLimit => {
                400
            }
            Limit::BodyReadTimeout => 408,
            _ => 413,
        }
    }
}

/// A bound that was reached: which, its value, and (for a statement) where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exceeded {
    pub limit: Limit,
    pub max: u64,
    /// The statement (index in the request) that passed it, when one did.
    pub statement: Option<usize>,
    pub message: String,
}

impl Exceeded {
    pub fn new(limit: Limit, max: usize, message: impl Into<String>) -> Exceeded {
        Exceeded {
            limit,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            statement: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (limit {} = {})",
            self.message,
            self.limit.key(),
            self.max
        )
    }
}

/// Why a body did not become statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Exceeded(Exceeded),
    /// Not JSON, or not a statement object or an array of them.
    Malformed(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Exceeded(exceeded) => exceeded.fmt(f),
            BodyError::Malformed(message) => f.write_str(message),
        }
    }
}

/// The deepest nesting of arrays and objects in a JSON text, counting only up to `stop`
/// (one pass, no allocation; strings and escapes are skipped).
pub fn json_depth(bytes: &[u8], stop: usize) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > stop {
                        return deepest;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks a JSON text against `limits.json_depth` before it is parsed.
pub fn check_depth(bytes: &[u8], limits: &Limits) -> Result<(), Exceeded> {
    let allowed = limits.json_depth.min(SERDE_MAX_DEPTH);
    if json_depth(bytes, allowed) > allowed {
        return Err(Exceeded::new(
            Limit::JsonDepth,
            allowed,
            format!("the JSON nests arrays and objects deeper than {allowed} levels"),
        ));
    }
    Ok(())
}

/// One statement object or an array of them, within the limits: depth, count and bytes per
/// statement are checked before any statement is turned into a `Value`.
pub fn parse_statements(bytes: &[u8], limits: &Limits) -> Result<Vec<Value>, BodyError> {
    check_depth(bytes, limits).map_err(BodyError::Exceeded)?;
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    let malformed = |err: serde_json::Error| {
        BodyError::Malformed(format!("the statements are not valid JSON: {err}"))
    };
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(malformed)?;
            if items.len() > limits.statements_per_request {
                return Err(BodyError::Exceeded(Exceeded::new(
                    Limit::StatementsPerRequest,
                    limits.statements_per_request,
                    format!(
                        "{} statements in one request; send them in several",
                        items.len()
                    ),
                )));
            }
            let mut statements = Vec::with_capacity(items.len());
            for (index, raw) in items.into_iter().enumerate() {
                check_statement_bytes(raw.get().len(), Some(index), limits)?;
                statements.push(serde_json::from_str(raw.get()).map_err(malformed)?);
            }
            Ok(statements)
        }
        Some(b'{') => {
            check_statement_bytes(bytes.len(), Some(0), limits)?;
            Ok(vec![serde_json::from_slice(bytes).map_err(malformed)?])
        }
        _ => {
            // Let serde say what is wrong with it, if anything.
            let value: Value = serde_json::from_slice(bytes).map_err(malformed)?;
            Err(BodyError::Malformed(format!(
                "the body must be a statement object or an array of statements, not {}",
                kind_of(&value)
            )))
        }
    }
}

fn check_statement_bytes(
    length: usize,
    index: Option<usize>,
    limits: &Limits,
) -> Result<(), BodyError> {
    if length <= limits.statement_bytes {
        return Ok(());
    }
    let mut exceeded = Exceeded::new(
        Limit::StatementBytes,
        limits.statement_bytes,
        format!("a statement of {length} bytes"),
    );
    exceeded.statement = index;
    Err(BodyError::Exceeded(exceeded))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut. Error
/// messages quote input; this keeps them (and everything that carries them) bounded.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            statements_per_request: 2,
            statement_bytes: 64,
            json_depth: 4,
            ..Limits::default()
        }
    }

    fn exceeded(result: Result<Vec<Value>, BodyError>) -> Exceeded {
        match result {
            Err(BodyError::Exceeded(exceeded)) => exceeded,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_strings() {
        assert_eq!(json_depth(br#"{"a": [1, {"b": "[[[{{{"}]}"#, 100), 3);
        assert_eq!(json_depth(br#""\"[[[""#, 100), 0);
        assert_eq!(
            json_depth(b"[[[[[[[[", 3),
            4,
            "stops counting past the bound"
        );
    }

    #[test]
    fn every_bound_names_itself() {
        let limits = small();
        let deep = exceeded(parse_statements(br#"[{"a": {"b": {"c": {}}}}]"#, &limits));
        assert_eq!(deep.limit, Limit::JsonDepth);
        assert_eq!(deep.max, 4);
        let many = exceeded(parse_statements(b"[{}, {}, {}]", &limits));
        assert_eq!(many.limit, Limit::StatementsPerRequest);
        let big = format!(r#"[{{}}, {{"a": "{}"}}]"#, "x".repeat(100));
        let big = exceeded(parse_statements(big.as_bytes(), &limits));
        assert_eq!(big.limit, Limit::StatementBytes);
        assert_eq!(big.statement, Some(1));
        assert!(big.to_string().contains("limits.statement_bytes"));
    }

    #[test]
    fn objects_and_arrays_parse_and_anything_else_is_malformed() {
        let limits = small();
        assert_eq!(
            parse_statements(br#" {"a": 1} "#, &limits).map(|s| s.len()),
            Ok(1)
        );
        assert_eq!(
            parse_statements(b"[{}, {}]", &limits).map(|s| s.len()),
            Ok(2)
        );
        for bad in [&b"42"[..], b"\"x\"", b"{", b"", b"[1,"] {
            assert!(matches!(
                parse_statements(bad, &limits),
                Err(BodyError::Malformed(_))
            ));
        }
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_text("héllo", 2), "h…");
        assert_eq!(truncate_text("héllo", 3), "hé…");
        assert_eq!(truncate_text("short", 10), "short");
    }
}
