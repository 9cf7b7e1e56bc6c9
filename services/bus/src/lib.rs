//! Everything Leerspoor says on NATS, named in one place.
//!
//! # Layout
//! - [`subjects`]: subject and stream names, and the JetStream stream definitions.
//! - [`wire`]: the messages that travel on those subjects (ingest envelopes, applied
//!   announcements, request/reply bodies).
//! - [`access`]: credentials, scopes, admin requests, the audit log, erasure.
//! - [`pace`]: a store's ingest paced by the projector beside it.
//! - [`pull`]: durable pull consumers and batch-wise pulling, shared by store and projector.
//! - [`request`]: request/reply to a queue group of replicas, with read-your-writes.
//! - [`watermark`]: writes through `LRS_IN`: publish, then wait for a store's verdict.
//! - [`snapshot`]: a replica's database through the object store, for a new replica.
//! - [`leaf`]: hub nodes on NATS leaf nodes, and `LRS_IN` sourcing from their streams.
//! - [`server`]: a supervised local `nats-server` child with JetStream, used by
//!   `leerspoor serve` and by the tests.

pub mod access;
pub mod export;
pub mod health;
pub mod hubs;
pub mod leaf;
pub mod metrics;
pub mod pace;
pub mod pull;
pub mod request;
pub mod server;
pub mod snapshot;
pub mod subjects;
pub mod targets;
pub mod watermark;
pub mod wire;

/// A JetStream message id header value must be unique per logical publish: JetStream drops a
/// second publish with the same id inside the stream's duplicate window.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// On an `lrs.in.http` message: it is a bundle of this many requests' batches, a JSON array of
/// [`wire::HttpBatch`], each applied as if it were a message of its own and given its own
/// verdict ([`wire::Verdict::Parts`]). The gateway bundles small requests that arrive together,
/// so that one JetStream write and one store apply cover them all.
pub const PARTS_HEADER: &str = "Leerspoor-Parts";

/// Bytes kept free in every message Leerspoor publishes for headers and the envelope around
/// what it carries: a message of `max_payload - HEADROOM` bytes of content always fits.
pub const HEADROOM: usize = 16 * 1024;
