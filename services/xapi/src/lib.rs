//! The xAPI model and its validation, shared by the gateway and the store.
//!
//! No I/O and no async: everything here is a pure function of its input, so the gateway can
//! reject a bad statement at once and the store can check the same rules again for statements
//! that arrive straight over NATS.
//!
//! # Layout
//! - [`version`]: the xAPI versions spoken (1.0.3, 2.0.0) and the header rules.
//! - [`schema`]: the JSON Schema of `schemas/`, compiled once.
//! - [`rules`]: the requirements a JSON Schema cannot express.
//! - [`validate`]: [`Validator`], both layers over one statement or a batch.
//! - [`llo`]: the LLO profile's IRIs (extensions, sources, attendance).
//! - [`limits`]: the limits contract: every bound on input, and the error naming it.
//! - [`agent`]: inverse functional identifiers, canonical keys for indexes and filters.
//! - [`json`]: a field some levels down a JSON value, without a pointer's text.
//! - [`time`]: timestamps and durations.
//! - [`statement`]: what the LRS adds on store (id, stored, authority, version), equivalence
//!   for conflicts, and the `ids` / `canonical` output formats.

pub mod agent;
pub mod json;
pub mod limits;
pub mod llo;
pub mod rules;
pub mod schema;
pub mod statement;
pub mod time;
pub mod validate;
pub mod version;

pub use validate::{BatchViolation, Validator, Violation};
pub use version::XapiVersion;

/// The usageType of a JWS signature attachment.
pub const USAGE_SIGNATURE: &str = "http://adlnet.gov/expapi/attachments/signature";

/// The verb that voids the statement its StatementRef object points at.
pub const VERB_VOIDED: &str = "http://adlnet.gov/expapi/verbs/voided";
