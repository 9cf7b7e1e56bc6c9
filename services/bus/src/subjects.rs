//! Subject and stream names. Nothing else in Leerspoor spells a subject.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// Everything written to Leerspoor enters here, from the gateway or straight from a hub.
pub const STREAM_IN: &str = "LRS_IN";
/// Every statement the store applied (`stored`) or voided (`voided`), in apply order.
pub const STREAM_STORED: &str = "LRS_STORED";
/// Messages published straight to NATS that failed validation, with the reason.
pub const STREAM_REJECTED: &str = "LRS_REJECTED";

/// All ingest subjects: `lrs.in.http` and `lrs.in.<source…>`.
pub const IN_ALL: &str = "lrs.in.>";
/// A batch from an HTTP client; only the gateway publishes here, so its authority is trusted.
pub const IN_HTTP: &str = "lrs.in.http";
/// Prefix of the subjects hubs and other services publish statements to directly.
pub const IN_PREFIX: &str = "lrs.in.";
/// Prefix of hub subjects: `lrs.in.hub.<hub>`.
pub const IN_HUB_PREFIX: &str = "lrs.in.hub.";
/// Hub nodes on NATS leaf nodes ([`crate::leaf`]): each keeps its statements in its own
/// stream, in its own JetStream domain, and `LRS_IN` sources from it.
/// The stream at a hub node holding what its tools wrote: `LRS_HUB_<hub>`.
pub fn hub_stream(hub: &str) -> String {
    format!("{HUB_STREAM_PREFIX}{hub}")
}
pub const HUB_STREAM_PREFIX: &str = "LRS_HUB_";
/// A hub node's JetStream domain: `hub-<hub>`.
pub fn hub_domain(hub: &str) -> String {
    format!("hub-{hub}")
}
/// The subject a hub's statements are published on, at the hub and centrally.
pub fn hub_subject(hub: &str) -> String {
    format!("{IN_HUB_PREFIX}{hub}")
}
/// Where the hub's stream delivers to `LRS_IN`'s source consumer: `lrs.hubsource.<hub>.>`,
/// the only delivery subjects that hub's leaf connection may publish.
pub fn hub_deliver_prefix(hub: &str) -> String {
    format!("lrs.hubsource.{hub}")
}
/// The NATS user a hub's leaf connection (or its direct publisher) logs in as.
pub fn hub_user(hub: &str) -> String {
    format!("hub-{hub}")
}
/// Request/reply to `serve`'s node: add or remove the NATS user of a hub's leaf connection
/// on the nats-server `serve` runs ([`crate::leaf::LeafUserRequest`]).
pub const API_LEAF_USERS: &str = "lrs.api.leaf.users";

/// Erasure of one person's data ([`crate::access::EraseCommand`]): through `LRS_IN`, so it
/// is applied in order with the statements, exactly once, by the store's one writer. Only the
/// services' NATS user may publish here.
pub const IN_ERASE: &str = "lrs.in.admin.erase";
/// A document write (State, Activity Profile, Agent Profile: PUT, POST, DELETE), framed with
/// its body ([`crate::wire::frame`]): through `LRS_IN`, so every store replica applies the
/// same writes in the same order and checks the preconditions at the same point. Only the
/// gateway publishes here.
pub const IN_DOCUMENTS: &str = "lrs.in.admin.documents";
/// A credential change ([`crate::access::CredentialChange`]): through `LRS_IN` for the same
/// reason. Only the services' and the operator's NATS users publish here.
pub const IN_CREDENTIALS: &str = "lrs.in.admin.credentials";
/// A change to the hub registry ([`crate::hubs::HubChange`]): through `LRS_IN` so every store
/// replica keeps the same registry. Only the gateway and the operator publish here.
pub const IN_HUBS: &str = "lrs.in.admin.hubs";
/// Prefix of the subjects only Leerspoor's own services publish to; never a statement source.
pub const IN_ADMIN_PREFIX: &str = "lrs.in.admin.";
/// Statements brought in from another LRS or a file by `leerspoor import`: the store keeps
/// the `stored` and `authority` they came with (when they have them).
pub const IN_IMPORT: &str = "lrs.in.admin.import";

pub const STORED_ALL: &str = "lrs.stored.>";
/// What one `LRS_IN` message changed, as one message: [`crate::wire::StoredEvents`]. One
/// message per ingest message, not per statement, because every JetStream message costs an
/// fsync.
pub const STORED_EVENTS: &str = "lrs.stored.events";
pub const REJECTED: &str = "lrs.rejected";

/// Core NATS: the store's applied watermark and per-sequence verdicts, after each flush.
pub const APPLIED: &str = "lrs.applied";

/// Core NATS: a projector replica's last applied `LRS_STORED` sequence after each pull, for
/// the store replica of the same name to pace its ingest by ([`crate::pace`]).
pub fn projector_applied(replica: &str) -> String {
    format!("lrs.projector.applied.{replica}")
}

/// Request/reply: statement queries (by id or by filters).
pub const API_STATEMENTS: &str = "lrs.api.statements";
/// Request/reply: the document resources (State, Activity Profile, Agent Profile).
pub const API_DOCUMENTS: &str = "lrs.api.documents";
/// Request/reply: the Agents and Activities resources.
pub const API_OBJECTS: &str = "lrs.api.objects";
/// Request/reply: the projector's summaries.
pub const API_SUMMARIES: &str = "lrs.api.summaries";
/// Request/reply: rebuild every summary from the stored statements (`leerspoor project --rebuild`).
pub const API_REBUILD: &str = "lrs.api.projector.rebuild";
/// Request/reply: credentials, audit log, exports ([`crate::access::AdminRequest`]).
pub const API_ADMIN: &str = "lrs.api.admin";
/// Core NATS: the store says a credential changed; gateways reload theirs.
pub const CREDENTIALS_CHANGED: &str = "lrs.credentials.changed";
/// Queue group of the projectors answering summary queries.
pub const SUMMARY_QUEUE: &str = "projector";
/// Request/reply: the verdict for one `LRS_IN` sequence (fallback when an announcement was missed).
pub const API_VERDICT: &str = "lrs.api.verdict";
/// Queue group so several store replicas could share the read load.
pub const API_QUEUE: &str = "store";

/// NATS Object Store bucket of attachment bodies, by SHA-2 (hex, lowercase). Attachments go
/// here, not through `LRS_IN`, so their size is not bound by the message size limit.
pub const ATTACHMENTS_BUCKET: &str = "LRS_ATTACHMENTS";

/// The attachment bucket, created if missing (the gateway writes it, the store deletes bodies
/// an erasure left unused), kept on `stream_replicas` servers.
pub async fn attachment_bucket(
    js: &jetstream::Context,
    stream_replicas: usize,
) -> Result<jetstream::object_store::ObjectStore, EnsureStreamError> {
    if let Ok(bucket) = js.get_object_store(ATTACHMENTS_BUCKET).await {
        return Ok(bucket);
    }
    js.create_object_store(jetstream::object_store::Config {
        bucket: ATTACHMENTS_BUCKET.to_owned(),
        description: Some("xAPI attachment bodies by SHA-2".into()),
        num_replicas: stream_replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|err| EnsureStreamError {
        name: format!("object store {ATTACHMENTS_BUCKET}"),
        reason: err.to_string(),
    })
}

/// NATS KV bucket of forwarding targets and webhooks, by name ([`crate::targets`]).
pub const TARGETS_BUCKET: &str = "LRS_TARGETS";
/// Stream of the statements a forwarding target or webhook gave up on (its dead-letter list),
/// on `lrs.dead.<target>`, kept [`DEAD_MAX_AGE`].
pub const STREAM_DEAD: &str = "LRS_DEAD";
pub const DEAD_PREFIX: &str = "lrs.dead.";
pub const DEAD_ALL: &str = "lrs.dead.>";
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The durable consumer on `LRS_STORED` that delivers to target `name`: a target that is down
/// keeps its statements in the stream until it takes them.
pub fn target_consumer(name: &str) -> String {
    format!("deliver-{name}")
}

/// Core NATS, every replica answers (no queue group): who it is, how far it applied, and
/// the digest of its content ([`crate::wire::ReplicaStatus`]).
pub const API_REPLICAS: &str = "lrs.api.replicas";

/// The replica of a single-node Leerspoor, and the default name.
pub const MAIN_REPLICA: &str = "main";

/// Request/reply (queue group [`API_QUEUE`]): a store replica writes a snapshot of its
/// database for a new replica ([`crate::snapshot`]).
pub const API_SNAPSHOT_STORE: &str = "lrs.api.snapshot.store";
/// The same for projector replicas (queue group [`SUMMARY_QUEUE`]).
pub const API_SNAPSHOT_PROJECTOR: &str = "lrs.api.snapshot.projector";

/// NATS Object Store bucket of replica snapshots (`store-<sequence>`, `projector-<sequence>`).
pub const SNAPSHOTS_BUCKET: &str = "LRS_SNAPSHOTS";

/// The snapshot bucket, created if missing, kept on `stream_replicas` servers.
pub async fn snapshot_bucket(
    js: &jetstream::Context,
    stream_replicas: usize,
) -> Result<jetstream::object_store::ObjectStore, EnsureStreamError> {
    if let Ok(bucket) = js.get_object_store(SNAPSHOTS_BUCKET).await {
        return Ok(bucket);
    }
    js.create_object_store(jetstream::object_store::Config {
        bucket: SNAPSHOTS_BUCKET.to_owned(),
        description: Some("snapshots of store and projector replicas, for new replicas".into()),
        num_replicas: stream_replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|err| EnsureStreamError {
        name: format!("object store {SNAPSHOTS_BUCKET}"),
        reason: err.to_string(),
    })
}

/// The durable consumer a store replica pulls `LRS_IN` with: `store` for the main replica
/// (the name it always had), `store-<name>` for the others.
pub fn store_consumer(replica: &str) -> String {
    consumer("store", replica)
}

/// The durable consumer a projector replica pulls `LRS_STORED` with (as for the store).
pub fn projector_consumer(replica: &str) -> String {
    consumer("projector", replica)
}

fn consumer(kind: &str, replica: &str) -> String {
    if replica == MAIN_REPLICA {
        kind.to_owned()
    } else {
        format!("{kind}-{replica}")
    }
}

/// A replica name is part of a consumer name: 1 to 32 of `a-z 0-9 _ -`.
pub fn check_replica_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-');
    if name.is_empty() || name.len() > 32 || !name.chars().all(allowed) {
        return Err(format!(
            "replica name {name:?} must be 1 to 32 of a-z 0-9 _ -"
        ));
    }
    Ok(())
}

/// The deployment's shape, as every service sees it: which store and projector replicas
/// exist (their durable consumers are made by whichever service starts first, so nothing is
/// published before the consumers that keep it exist) and how many NATS servers keep a copy
/// of each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub stores: Vec<String>,
    pub projectors: Vec<String>,
    /// `replicas` of every stream, KV bucket and object store: 1 on a single node, 3 on a
    /// three-node cluster.
    pub stream_replicas: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            stores: vec![MAIN_REPLICA.to_owned()],
            projectors: vec![MAIN_REPLICA.to_owned()],
            stream_replicas: 1,
        }
    }
}

/// JetStream drops a repeated `Nats-Msg-Id` inside this window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The source a direct-ingest subject stands for: `lrs.in.hub.eindhoven` -> `hub.eindhoven`.
pub fn ingest_source(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(IN_PREFIX)
        .filter(|rest| !rest.is_empty() && !subject.starts_with(IN_ADMIN_PREFIX))
}

/// The hub a subject belongs to, if it is a hub subject.
pub fn hub_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(IN_HUB_PREFIX)
        .filter(|hub| !hub.is_empty() && !hub.contains('.'))
}

fn file_stream(
    name: &str,
    subject: &str,
    retention: stream::RetentionPolicy,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        retention,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// How long `LRS_REJECTED` keeps a message (payload included) for an operator to fix and
/// replay it.
pub const REJECTED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The streams are transport, not storage: a message stays until every consumer has applied
/// it and no longer. `LRS_IN` and `LRS_STORED` keep a message until each store (projector)
/// replica's durable consumer acknowledged it (interest retention; the consumers are made
/// here, so nothing is published before they exist), `LRS_REJECTED` keeps messages for
/// [`REJECTED_MAX_AGE`]. So after an erasure no copy of a person's statements stays on the
/// bus.
fn streams(replicas: usize) -> [stream::Config; 3] {
    use stream::RetentionPolicy::{Interest, Limits};
    [
        file_stream(STREAM_IN, IN_ALL, Interest, replicas),
        file_stream(STREAM_STORED, STORED_ALL, Interest, replicas),
        stream::Config {
            max_age: REJECTED_MAX_AGE,
            ..file_stream(STREAM_REJECTED, REJECTED, Limits, replicas)
        },
    ]
}

/// How `LRS_IN` is kept: a work queue (Leerspoor before store replicas) allows one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InRetention {
    /// Kept until every store replica applied it.
    Interest,
    /// An older Leerspoor's `LRS_IN`: one consumer only. README "Upgrading to replicas".
    WorkQueue,
}

/// Creates (or confirms) the three streams and the durable consumers of every store and
/// projector replica in `topology`. Every service calls this at start, so any one of them can
/// come up first on an empty NATS. Says how `LRS_IN` is kept.
pub async fn ensure_streams(
    js: &jetstream::Context,
    topology: &Topology,
) -> Result<InRetention, EnsureStreamError> {
    let mut in_retention = InRetention::Interest;
    // A new stream is made "dark" (listening to a subject nobody uses), its consumers next,
    // and only then does it take its subjects: an interest stream drops a message published
    // while it has no consumer, after acknowledging it.
    let mut lit_later = Vec::new();
    for config in streams(topology.stream_replicas) {
        let name = config.name.clone();
        let retention = config.retention;
        let dark = stream::Config {
            subjects: vec![dark_subject(&name)],
            ..config.clone()
        };
        let stream = js
            .get_or_create_stream(dark)
            .await
            .map_err(|source| EnsureStreamError {
                name: name.clone(),
                reason: source.to_string(),
            })?;
        // The info came with the stream: no second request at start.
        let found = stream.cached_info().config.clone();
        if found.subjects == [dark_subject(&name)] {
            lit_later.push(stream::Config {
                subjects: config.subjects,
                ..found.clone()
            });
        }
        let found = found.retention;
        if found == retention {
            continue;
        }
        if name == STREAM_IN && found == stream::RetentionPolicy::WorkQueue {
            in_retention = InRetention::WorkQueue;
        }
        tracing::warn!(
            stream = %name,
            ?found,
            expected = ?retention,
            "stream was created by an older Leerspoor with another retention; one store \
             replica only until it is recreated (README \"Upgrading to replicas\")"
        );
    }
    let consumers = topology
        .stores
        .iter()
        .map(|name| (STREAM_IN, store_consumer(name)))
        .chain(
            topology
                .projectors
                .iter()
                .map(|name| (STREAM_STORED, projector_consumer(name))),
        );
    for (stream_name, consumer) in consumers {
        if stream_name == STREAM_IN && in_retention == InRetention::WorkQueue {
            // A work queue takes one consumer: the store makes its own.
            continue;
        }
        let stream = js
            .get_stream(stream_name)
            .await
            .map_err(|source| EnsureStreamError {
                name: stream_name.into(),
                reason: source.to_string(),
            })?;
        stream
            .get_or_create_consumer(
                &consumer,
                crate::pull::durable_config(&consumer, Duration::from_secs(30)),
            )
            .await
            .map_err(|source| EnsureStreamError {
                name: stream_name.into(),
                reason: format!("consumer {consumer}: {source}"),
            })?;
    }
    for config in lit_later {
        let name = config.name.clone();
        js.update_stream(config)
            .await
            .map_err(|source| EnsureStreamError {
                name,
                reason: format!("taking its subjects: {source}"),
            })?;
    }
    Ok(in_retention)
}

/// The subject a new stream listens to until its consumers exist (nobody publishes there).
fn dark_subject(stream: &str) -> String {
    format!("lrs.dark.{stream}")
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create or open jetstream stream {name}: {reason}")]
pub struct EnsureStreamError {
    name: String,
    reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_subjects_name_their_hub() {
        assert_eq!(hub_of("lrs.in.hub.eindhoven"), Some("eindhoven"));
        assert_eq!(hub_of("lrs.in.hub."), None);
        assert_eq!(hub_of("lrs.in.hub.a.b"), None);
        assert_eq!(hub_of("lrs.in.http"), None);
    }

    #[test]
    fn the_main_replica_keeps_the_consumer_names_it_always_had() {
        assert_eq!(store_consumer(MAIN_REPLICA), "store");
        assert_eq!(store_consumer("b"), "store-b");
        assert_eq!(projector_consumer("b"), "projector-b");
        assert!(check_replica_name("node-2").is_ok());
        assert!(check_replica_name("").is_err());
        assert!(
            check_replica_name("a.b").is_err(),
            "a dot would split the subject"
        );
        assert!(check_replica_name("B").is_err());
    }

    #[test]
    fn ingest_source_strips_the_prefix() {
        assert_eq!(ingest_source("lrs.in.hub.x"), Some("hub.x"));
        assert_eq!(ingest_source("lrs.in."), None);
        assert_eq!(ingest_source("lrs.stored.x"), None);
        assert_eq!(ingest_source(IN_ERASE), None);
        assert_eq!(ingest_source(IN_DOCUMENTS), None);
        assert_eq!(ingest_source(IN_CREDENTIALS), None);
    }
}
