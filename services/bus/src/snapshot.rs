//! Snapshots of a replica's database, sent through the NATS object store: how a new or
//! replaced replica starts. It makes its durable consumer first, then asks a healthy replica
//! of its kind for a snapshot; that replica writes one between two batches (so it is
//! consistent, at the sequence it applied) into the bucket [`crate::subjects::SNAPSHOTS_BUCKET`];
//! the new replica loads it and then applies the log after that sequence (messages up to it
//! come again and are skipped as applied). Messages after the snapshot are still in the
//! stream: the new consumer existed before the snapshot was taken, and the stream keeps a
//! message until every consumer applied it.
//!
//! The file is a sequence of entries: key length (u32, big-endian), key, value length (u32),
//! value; the object store checks its SHA-256 on the way.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Request on `lrs.api.snapshot.store` / `lrs.api.snapshot.projector` (one replica of the
/// kind answers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The replica that asks (for the log and the object's name).
    pub for_replica: String,
}

/// The answer: where the snapshot is, and the sequence it is at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReply {
    pub object: Option<String>,
    /// The stream sequence the snapshot's database applied through.
    pub applied: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The replica that took it.
    pub from: String,
    pub error: Option<String>,
}

/// Writes one entry.
pub fn write_entry(out: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    for part in [key, value] {
        let length = u32::try_from(part.len())
            .map_err(|_| std::io::Error::other("an entry larger than 4 GiB"))?;
        out.write_all(&length.to_be_bytes())?;
        out.write_all(part)?;
    }
    Ok(())
}

/// Reads the entries back, in the order written.
pub fn read_entries(input: impl Read) -> impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>> {
    let mut input = std::io::BufReader::new(input);
    std::iter::from_fn(move || {
        let mut read_part = |first: bool| -> std::io::Result<Option<Vec<u8>>> {
            let mut length = [0u8; 4];
            match input.read_exact(&mut length) {
                Ok(()) => {}
                Err(err) if first && err.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None)
                }
                Err(err) => return Err(err),
            }
            let mut part = vec![0u8; u32::from_be_bytes(length) as usize];
            input.read_exact(&mut part)?;
            Ok(Some(part))
        };
        match read_part(true) {
            Ok(None) => None,
            Ok(Some(key)) => Some(read_part(false).and_then(|value| {
                value
                    .map(|value| (key, value))
                    .ok_or_else(|| std::io::Error::other("an entry without its value"))
            })),
            Err(err) => Some(Err(err)),
        }
    })
}

/// Writes `entries` (a database's key/value pairs, in order) to a new file at `path`, synced.
/// Returns how many.
pub fn write_file<K, V, E>(
    path: &Path,
    entries: impl Iterator<Item = Result<(K, V), E>>,
) -> std::io::Result<u64>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0;
    for entry in entries {
        let (key, value) = entry.map_err(|err| std::io::Error::other(err.to_string()))?;
        write_entry(&mut out, key.as_ref(), value.as_ref())?;
        written += 1;
    }
    let file = out.into_inner().map_err(|err| err.into_error())?;
    file.sync_all()?;
    Ok(written)
}

/// Reads a snapshot file and hands its entries to `load` a chunk at a time (so a large
/// snapshot is never in memory at once). Returns how many.
pub fn read_file<E: std::fmt::Display>(
    path: &Path,
    mut load: impl FnMut(Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), E>,
) -> std::io::Result<u64> {
    const CHUNK: usize = 10_000;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut read = 0;
    let to_io = |err: E| std::io::Error::other(err.to_string());
    for entry in read_entries(std::fs::File::open(path)?) {
        chunk.push(entry?);
        read += 1;
        if chunk.len() == CHUNK {
            load(std::mem::take(&mut chunk)).map_err(to_io)?;
        }
    }
    load(chunk).map_err(to_io)?;
    Ok(read)
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot file: {0}")]
    File(#[from] std::io::Error),
    #[error("object store: {0}")]
    Bucket(String),
    #[error(transparent)]
    Ask(#[from] crate::request::AskError),
    #[error("no snapshot from replica {from:?}: {reason}")]
    Refused { from: String, reason: String },
}

/// Asks one replica (the queue group on `subject`) for a snapshot, for `for_replica`, and
/// downloads it to `file`. Taking one can take minutes on a large database: waits an hour.
pub async fn fetch(
    client: &async_nats::Client,
    subject: &'static str,
    for_replica: &str,
    stream_replicas: usize,
    file: &Path,
) -> Result<SnapshotReply, SnapshotError> {
    let to = crate::request::Ask {
        service: "a replica",
        ..crate::request::Ask::store(subject, std::time::Duration::from_secs(3600))
    };
    let request = SnapshotRequest {
        for_replica: for_replica.to_owned(),
    };
    let reply: SnapshotReply = crate::request::ask_json(client, to, &request).await?;
    let object = match (&reply.object, &reply.error) {
        (Some(object), None) => object.clone(),
        (_, error) => {
            return Err(SnapshotError::Refused {
                from: reply.from.clone(),
                reason: error.clone().unwrap_or_else(|| "no object named".into()),
            })
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let bucket = crate::subjects::snapshot_bucket(&js, stream_replicas)
        .await
        .map_err(|err| SnapshotError::Bucket(err.to_string()))?;
    download(&bucket, &object, file).await?;
    Ok(reply)
}

/// Answers one snapshot request (a replica of the kind got it on
/// `lrs.api.snapshot.<kind>`, between two of its batches): [`take`], then the reply.
pub async fn answer(
    client: &async_nats::Client,
    request: async_nats::Message,
    kind: &str,
    replica: &str,
    stream_replicas: usize,
    file: &Path,
    write: impl FnOnce(&Path) -> Result<(u64, u64), String> + Send + 'static,
) {
    let Some(reply_to) = request.reply.clone() else {
        return;
    };
    let asked =
        serde_json::from_slice::<SnapshotRequest>(&request.payload).unwrap_or(SnapshotRequest {
            for_replica: "?".into(),
        });
    let js = async_nats::jetstream::new(client.clone());
    let reply = take(&js, kind, replica, stream_replicas, file, &asked, write).await;
    let body = serde_json::to_vec(&reply).unwrap_or_default();
    if let Err(err) = client.publish(reply_to, body.into()).await {
        tracing::warn!(error = %err, kind, "cannot answer a snapshot request");
    }
}

/// Takes a snapshot for `request`: `write` (on a blocking thread) writes the database to the
/// file it is given and says the sequence it is at and how many entries; the file goes into
/// the bucket as `<kind>-<sequence>`. The reply says where, or why not.
async fn take(
    js: &async_nats::jetstream::Context,
    kind: &str,
    replica: &str,
    stream_replicas: usize,
    file: &Path,
    request: &SnapshotRequest,
    write: impl FnOnce(&Path) -> Result<(u64, u64), String> + Send + 'static,
) -> SnapshotReply {
    let started = std::time::Instant::now();
    let writing = file.to_owned();
    let outcome = async {
        let (applied, entries) = tokio::task::spawn_blocking(move || write(&writing))
            .await
            .map_err(|err| err.to_string())??;
        let bytes = std::fs::metadata(file)
            .map_err(|err| err.to_string())?
            .len();
        let object = format!("{kind}-{applied}");
        publish(js, stream_replicas, &object, file)
            .await
            .map_err(|err| err.to_string())?;
        Ok::<_, String>((object, applied, entries, bytes))
    }
    .await;
    std::fs::remove_file(file).ok();
    let mut reply = SnapshotReply {
        object: None,
        applied: 0,
        entries: 0,
        bytes: 0,
        from: replica.to_owned(),
        error: None,
    };
    match outcome {
        Ok((object, applied, entries, bytes)) => {
            tracing::info!(
                for_replica = %request.for_replica,
                kind,
                applied,
                entries,
                bytes,
                seconds = started.elapsed().as_secs_f64(),
                "snapshot taken for a new replica"
            );
            reply.object = Some(object);
            (reply.applied, reply.entries, reply.bytes) = (applied, entries, bytes);
        }
        Err(err) => {
            tracing::error!(error = %err, kind, "snapshot failed");
            reply.error = Some(err);
        }
    }
    reply
}

/// Uploads the snapshot file as `object` into the snapshot bucket.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    stream_replicas: usize,
    object: &str,
    file: &Path,
) -> Result<(), SnapshotError> {
    let bucket = crate::subjects::snapshot_bucket(js, stream_replicas)
        .await
        .map_err(|err| SnapshotError::Bucket(err.to_string()))?;
    upload(&bucket, object, file).await
}

/// Uploads a snapshot file as `name`.
pub async fn upload(
    bucket: &async_nats::jetstream::object_store::ObjectStore,
    name: &str,
    path: &Path,
) -> Result<(), SnapshotError> {
    let mut file = tokio::fs::File::open(path).await?;
    bucket
        .put(name, &mut file)
        .await
        .map_err(|err| SnapshotError::Bucket(err.to_string()))?;
    Ok(())
}

/// Downloads the snapshot `name` into a file at `path`.
pub async fn download(
    bucket: &async_nats::jetstream::object_store::ObjectStore,
    name: &str,
    path: &Path,
) -> Result<u64, SnapshotError> {
    let mut object = bucket
        .get(name)
        .await
        .map_err(|err| SnapshotError::Bucket(err.to_string()))?;
    let mut file = tokio::fs::File::create(path).await?;
    let bytes = tokio::io::copy(&mut object, &mut file).await?;
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_cut_file_is_an_error() {
        let mut file = Vec::new();
        write_entry(&mut file, b"key", b"value").expect("write");
        write_entry(&mut file, b"", &[0u8; 300]).expect("write");
        let read: Vec<(Vec<u8>, Vec<u8>)> = read_entries(file.as_slice())
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0], (b"key".to_vec(), b"value".to_vec()));
        assert_eq!(read[1].1.len(), 300);
        let cut = &file[..file.len() - 10];
        assert!(read_entries(cut).any(|entry| entry.is_err()));
    }
}
