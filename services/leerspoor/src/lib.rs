//! The `leerspoor` binary's library: configuration, and the composition of services into one
//! process (`serve`) or one service per process (`gateway`, `store`).
//!
//! # Layout
//! - [`config`]: the typed configuration and its sources.
//! - [`node`]: starts the parts a command asks for, supervising a local nats-server if needed.
//! - [`bench`]: the ingest benchmark.

pub mod bench;
pub mod config;
pub mod node;
