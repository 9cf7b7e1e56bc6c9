//! The store: Leerspoor's system of record.
//!
//! It pulls `LRS_IN`, validates every message but the gateway's (hubs and tools publish
//! straight to NATS; only Leerspoor's own users may publish on `lrs.in.http`), applies
//! each message to sled as one atomic batch together with the last applied stream sequence,
//! flushes, and only then acknowledges. A redelivered message at or below the applied
//! sequence changes nothing, so every message takes effect exactly once.
//!
//! # Layout
//! - [`keys`]: the sled key layout.
//! - [`ingest`]: an `LRS_IN` message to what it asks: statements (with their authority and
//!   version), a document write, a credential change or an erasure.
//! - [`db`]: the database: records, verdicts, the applied sequence; reading back.
//! - `apply`: applying one `LRS_IN` message (statements, documents, credentials), the write path.
//! - [`written`]: a gateway statement read for its id and index terms, and stored as the text
//!   the gateway wrote, without being built into a `Value`.
//! - [`digest`]: a digest of a replica's content, equal on replicas at the same sequence.
//! - [`identity`]: which `LRS_IN` the store applied; refusing another.
//! - [`documents`]: the State, Activity Profile and Agent Profile resources.
//! - [`outbox`]: messages owed to `LRS_STORED` / `LRS_REJECTED`, each fitting one NATS message.
//! - [`indexer`]: the secondary indexes, written by their own thread.
//! - [`query`]: statement queries.
//! - [`objects`]: the Activities and Agents resources.
//! - [`service`]: the NATS side: the pull loop, applying, announcing; `publish` (the
//!   outbox to JetStream) and `housekeeping` (what an erasure leaves on NATS, old verdicts).
//! - `replica`: this replica's answer to `leerspoor replicas`.
//! - [`api`]: request/reply: queries, verdicts, documents, activities, agents, admin.
//! - [`access`]: credentials and the audit log.
//! - [`snapshot`]: a consistent snapshot for a new replica, and starting from one.
//! - [`erase`]: the right to erasure.
//! - [`export`]: everything stored about one person, for an export before erasure.
//! - [`compact`]: a stopped store's database copied into a fresh one and swapped in.

pub mod access;
pub mod api;
mod apply;
pub mod compact;
pub mod db;
pub mod digest;
pub mod documents;
pub mod erase;
pub mod export;
mod housekeeping;
pub mod identity;
pub mod indexer;
pub mod ingest;
pub mod keys;
mod metrics;
pub mod objects;
pub mod outbox;
pub mod packed;
mod publish;
pub mod query;
pub mod registry;
mod replica;
pub mod service;
pub mod snapshot;
pub mod written;

pub use service::{Store, StoreConfig};
