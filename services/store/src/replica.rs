//! The store replica's answer on `lrs.api.replicas`: its name, how far it applied `LRS_IN`,
//! and the digest of its content ([`crate::digest`]).

use std::sync::Arc;

use bus::subjects;
use bus::wire::{ReplicaStatus, ReplicasRequest};
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// Answers `lrs.api.replicas` until `shutdown`.
pub(crate) async fn answer(
    client: async_nats::Client,
    db: Arc<Db>,
    replica: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    bus::request::answer_each(client, subjects::API_REPLICAS, shutdown, |payload| {
        let request: ReplicasRequest = serde_json::from_slice(&payload).unwrap_or_default();
        let (js, db, replica) = (js.clone(), db.clone(), replica.clone());
        async move {
            let status = status(&js, db, &replica, request.digest).await;
            serde_json::to_vec(&status).unwrap_or_default()
        }
    })
    .await?;
    Ok(())
}

async fn status(
    js: &async_nats::jetstream::Context,
    db: Arc<Db>,
    replica: &str,
    digest: bool,
) -> ReplicaStatus {
    let stream_last = bus::pull::stream_last(js, subjects::STREAM_IN).await;
    let computed = tokio::task::spawn_blocking(move || {
        if digest {
            db.digest().map(|digest| (digest.applied, Some(digest)))
        } else {
            db.applied_sequence().map(|applied| (applied, None))
        }
    })
    .await;
    let (applied, digest, error) = match computed {
        Ok(Ok((applied, digest))) => (applied, digest, None),
        Ok(Err(err)) => (0, None, Some(err.to_string())),
        Err(err) => (0, None, Some(err.to_string())),
    };
    ReplicaStatus {
        kind: "store".into(),
        name: replica.to_owned(),
        consumer: subjects::store_consumer(replica),
        stream: subjects::STREAM_IN.into(),
        applied,
        stream_last,
        lag: stream_last.map(|last| last.saturating_sub(applied)),
        items: digest.as_ref().map(|digest| digest.statements),
        digest: digest.map(|digest| digest.digest),
        error,
    }
}
