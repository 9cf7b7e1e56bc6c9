//! Both layers of validation over one statement or a batch.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::truncate_text;
use crate::rules;
use crate::schema::{SchemaError, StatementSchema};
use crate::XapiVersion;

/// One broken requirement: where (a JSON pointer into the statement) and which rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub rule: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "at {path}: {} (rule {})", self.message, self.rule)
    }
}

/// The first violation of a batch, with the index of the statement it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchViolation {
    /// Index in the batch; `None` when the batch itself is malformed.
    pub statement: Option<usize>,
    pub violation: Violation,
}

impl fmt::Display for BatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.statement {
            Some(index) => write!(f, "statement {index} {}", self.violation),
            None => write!(f, "{}", self.violation),
        }
    }
}

/// Schema messages quote the offending value, which may be as large as the statement; a
/// violation travels in HTTP answers, verdicts and `LRS_REJECTED`, so its texts are bounded.
const MAX_MESSAGE_BYTES: usize = 512;
const MAX_PATH_BYTES: usize = 256;

fn bounded(violations: Vec<Violation>) -> Vec<Violation> {
    violations
        .into_iter()
        .map(|violation| Violation {
            path: truncate_text(&violation.path, MAX_PATH_BYTES),
            rule: truncate_text(&violation.rule, MAX_PATH_BYTES),
            message: truncate_text(&violation.message, MAX_MESSAGE_BYTES),
        })
        .collect()
}

/// The compiled schemas and the rules. Build once, share (it is `Send + Sync`).
pub struct Validator {
    schema: StatementSchema,
}

impl Validator {
    pub fn new() -> Result<Self, SchemaError> {
        Ok(Validator {
            schema: StatementSchema::compile()?,
        })
    }

    /// All violations of one statement: schema first (structure), then the rules (which
    /// assume the structure and so only run on a structurally valid statement).
    pub fn check(&self, statement: &Value, version: XapiVersion) -> Vec<Violation> {
        let schema_violations = self.schema.check(statement);
        if !schema_violations.is_empty() {
            return bounded(schema_violations);
        }
        let mut violations = rules::check(statement, version);
        for (at, path) in [
            ("/context/extensions", &["context", "extensions"][..]),
            (
                "/object/context/extensions",
                &["object", "context", "extensions"][..],
            ),
        ] {
            if let Some(extensions) = crate::json::at(statement, path) {
                violations.extend(self.schema.check_llo_extensions(extensions, at));
            }
        }
        bounded(violations)
    }

    /// Checks an Agent or Group given on its own (the `agent` parameter of the document,
    /// Agents and statement resources) by the same rules as a statement's actor.
    pub fn check_agent(&self, agent: &Value, version: XapiVersion) -> Result<(), Violation> {
        let probe = serde_json::json!({
            "actor": agent,
            "verb": {"id": "https://w3id.org/xapi/llo/verbs/probe"},
            "object": {"id": "https://w3id.org/xapi/llo/activities/probe"},
        });
        match self.check(&probe, version).into_iter().next() {
            None => Ok(()),
            Some(violation) => Err(Violation {
                path: violation.path.replacen("/actor", "", 1),
                ..violation
            }),
        }
    }

    /// Checks a batch: the first violation wins, and so does a duplicate id inside the batch.
    pub fn check_batch(
        &self,
        statements: &[Value],
        version: XapiVersion,
    ) -> Result<(), BatchViolation> {
        let mut seen_ids = std::collections::HashSet::new();
        for (index, statement) in statements.iter().enumerate() {
            if let Some(violation) = self.check(statement, version).into_iter().next() {
                return Err(BatchViolation {
                    statement: Some(index),
                    violation,
                });
            }
            if let Some(id) = statement.get("id").and_then(Value::as_str) {
                if !seen_ids.insert(id.to_lowercase()) {
                    return Err(BatchViolation {
                        statement: Some(index),
                        violation: Violation {
                            path: "/id".into(),
                            rule: "batch.unique_ids".into(),
                            message: format!("id {id} appears twice in this batch"),
                        },
                    });
                }
            }
        }
        Ok(())
    }
}
