//! The projector: `LRS_STORED` in, per-worker, per-hub and per-company summaries out.
//!
//! It keeps its own sled database. Each part of a fetch of `LRS_STORED` messages is applied as
//! one (a sled batch, or a journal and batches of a bounded size: [`part`]); each statement is
//! marked counted or voided in the same part, so redeliveries (in any order), repeated events
//! and any order of `stored` and `voided` give the same summaries as a recomputation over the
//! stored, non-voided statements.
//!
//! # Layout
//! - [`events`]: an `LRS_STORED` message read with only what [`contribution`] looks at.
//! - [`contribution`]: what one statement adds, per worker (pure).
//! - [`summary`]: the exactly-reversible summary state and its JSON views.
//! - [`packed`]: a summary state as stored (binary, behind a tag; JSON from before reads).
//! - [`projection`]: the sled database: apply, read.
//! - [`part`]: a part's writes, in sled batches of a bounded size made one by a journal.
//! - [`members`]: the members of hubs' and companies' distinct counts, a key each.
//! - [`order`]: the sorted keys that answer list queries without scanning.
//! - [`programme`]: the programme summary (reach against the target, by type and region).
//! - [`compact`]: copying the database into a fresh one beside it while applying, and the swap.
//! - [`rebuild`]: recomputing every summary from the stored statements, and the swap.
//! - [`pulls`]: `LRS_STORED` pulls read beside the apply, and the parts they are applied in.
//! - [`service`]: the NATS side: the `LRS_STORED` consumer and `lrs.api.summaries`.

pub use service::{Projector, ProjectorConfig};

pub mod compact;
pub mod contribution;
pub mod events;
pub mod members;
pub mod order;
pub mod overlay;
pub mod packed;
pub mod part;
pub mod programme;
pub mod projection;
pub mod pulls;
pub mod rebuild;
pub mod service;
pub mod summary;
