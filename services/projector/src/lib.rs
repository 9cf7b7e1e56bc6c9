//! The projector: `LRS_STORED` in, per-worker, per-hub and per-company summaries out.
//!
//! It keeps its own sled database. Each `LRS_STORED` message is applied as one sled batch
//! together with its stream sequence, so a redelivery changes nothing; each statement is
//! marked counted or voided, so repeated events and any order of `stored` and `voided` give
//! the same summaries as a recomputation over the stored, non-voided statements.
//!
//! # Layout
//! - [`contribution`]: what one statement adds, per worker (pure).
//! - [`summary`]: the exactly-reversible summary state and its JSON views.
//! - [`projection`]: the sled database: apply, read.
//! - [`rebuild`]: recomputing every summary from the stored statements, and the swap.
//! - [`service`]: the NATS side: the `LRS_STORED` consumer and `lrs.api.summaries`.

pub use service::{Projector, ProjectorConfig};

pub mod contribution;
pub mod projection;
pub mod rebuild;
pub mod service;
pub mod summary;
