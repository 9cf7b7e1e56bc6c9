//! The JSON Schemas of `schemas/`, compiled once at start.

use serde_json::Value;

use crate::Violation;

/// The statement schema, compiled into the binary so that a deployed Leerspoor can never run
/// with a schema other than the one its rules were tested with.
const STATEMENT_SCHEMA: &str = include_str!("../../../schemas/xapi-statement.schema.json");

/// The LLO profile's context extensions.
const LLO_EXTENSIONS_SCHEMA: &str = include_str!("../../../schemas/llo-extensions.schema.json");

/// The compiled statement schema and the LLO profile schema.
pub struct StatementSchema {
    validator: jsonschema::Validator,
    llo_extensions: jsonschema::Validator,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot compile statement schema: {0}")]
pub struct SchemaError(String);

fn build(text: &str) -> Result<jsonschema::Validator, SchemaError> {
    let schema: Value = serde_json::from_str(text).map_err(|err| SchemaError(err.to_string()))?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|err| SchemaError(err.to_string()))
}

impl StatementSchema {
    pub fn compile() -> Result<Self, SchemaError> {
        Ok(StatementSchema {
            validator: build(STATEMENT_SCHEMA)?,
            llo_extensions: build(LLO_EXTENSIONS_SCHEMA)?,
        })
    }

    /// Violations of the LLO profile in one context's `extensions`, with paths under `at`.
    pub fn check_llo_extensions(&self, extensions: &Value, at: &str) -> Vec<Violation> {
        if self.llo_extensions.is_valid(extensions) {
            return Vec::new();
        }
        self.llo_extensions
            .iter_errors(extensions)
            .map(|error| Violation {
                path: format!("{at}{}", error.instance_path()),
                rule: format!("llo:{}", error.schema_path()),
                message: error.to_string(),
            })
            .collect()
    }

    /// Every schema violation of one statement, with the JSON path where it occurs.
    pub fn check(&self, statement: &Value) -> Vec<Violation> {
        if self.validator.is_valid(statement) {
            return Vec::new();
        }
        let mut violations: Vec<Violation> = self
            .validator
            .iter_errors(statement)
            .map(|error| Violation {
                path: error.instance_path().to_string(),
                rule: format!("schema:{}", error.schema_path()),
                message: error.to_string(),
            })
            .collect();
        // The deepest path is the most precise explanation; report it first.
        violations.sort_by_key(|violation| std::cmp::Reverse(violation.path.len()));
        violations
    }
}
