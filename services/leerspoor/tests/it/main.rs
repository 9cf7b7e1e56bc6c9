//! End-to-end tests: a real nats-server, the real services, real sled on disk, over HTTP.

mod access;
mod attachments;
mod backup;
mod bad_input;
mod clients;
mod dashboard;
mod documents;
mod erasure;
mod failover;
mod forwarding;
mod helpers;
mod hostile;
mod hub_nodes;
mod ingest;
mod operating;
mod outages;
mod pace;
mod pulls;
mod queries;
mod replicas;
mod restart;
mod security;
mod summaries;
mod transfer;
mod writes;
