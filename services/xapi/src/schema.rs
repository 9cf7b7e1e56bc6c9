//! The JSON Schemas of `schemas/`, compiled once at start.

use serde_json::Value;

use crate::Violation;

/// The statement schema, compiled into the binary so that a deployed Leerspoor can never run
/// with a schema other than the one its rules were tested with.
const STATEMENT_SCHEMA: &str = include_str!("../../../schemas/xapi-statement.schema.json");

/// The compiled statement schema.
pub struct StatementSchema {
    validator: jsonschema::Validator,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot compile statement schema: {0}")]
pub struct SchemaError(String);

impl StatementSchema {
    pub fn compile() -> Result<Self, SchemaError> {
        let schema: Value =
            serde_json::from_str(STATEMENT_SCHEMA).map_err(|err| SchemaError(err.to_string()))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|err| SchemaError(err.to_string()))?;
        Ok(StatementSchema { validator })
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
                path: error.instance_path.to_string(),
                rule: format!("schema:{}", error.schema_path),
                message: error.to_string(),
            })
            .collect();
        // The deepest path is the most precise explanation; report it first.
        violations.sort_by_key(|violation| std::cmp::Reverse(violation.path.len()));
        violations
    }
}
