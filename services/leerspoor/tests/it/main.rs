//! End-to-end tests: a real nats-server, the real services, real sled on disk, over HTTP.

mod attachments;
mod bad_input;
mod clients;
mod documents;
mod helpers;
mod ingest;
mod queries;
mod restart;
mod security;
mod summaries;
mod writes;
