//! End-to-end tests: a real nats-server, the real services, real sled on disk, over HTTP.

mod bad_input;
mod helpers;
mod ingest;
mod queries;
mod restart;
mod writes;
