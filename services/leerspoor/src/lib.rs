//! The `leerspoor` binary's library: configuration, and the composition of services into one
//! process (`serve`) or one service per process (`gateway`, `store`).
//!
//! # Layout
//! - [`config`]: the typed configuration and its sources.
//! - [`node`]: starts the parts a command asks for, supervising a local nats-server if needed.
//! - [`access`]: `leerspoor credentials`, `audit` and `erase-agent`.
//! - [`analyst`]: `leerspoor summary`, the summaries on the command line.
//! - [`bench`]: the ingest benchmark; [`bench_erasure`]: erasing one person with many statements;
//!   [`bench_replicas`]: a new replica from a snapshot; [`bench_hub`]: a hub node and its backlog.
//! - [`demo`]: demo data for a new installation.
//! - [`hubs`]: `leerspoor hubs`, the hub registry and the hubs `LRS_IN` sources from.
//! - [`hubnode`]: `leerspoor hub`, a hub node on a NATS leaf node, and its attendance import.
//! - [`replicas`]: `leerspoor replicas`, every replica's position and content digest.
//! - [`compact`]: `leerspoor compact`, a stopped node's databases copied into fresh ones.

pub mod access;
pub mod analyst;
pub mod backup;
pub mod bench;
pub mod bench_erasure;
pub mod bench_hub;
pub mod bench_replicas;
pub mod bench_summaries;
pub mod bench_targets;
pub mod compact;
pub mod config;
pub mod demo;
pub mod hubnode;
pub mod hubs;
pub mod node;
pub mod replicas;
pub mod targets;
pub mod transfer;
