//! Which `LRS_IN` the store applied. The applied sequence only means something for the stream
//! it counts in: if `LRS_IN` is recreated or NATS's data is wiped while sled keeps its
//! watermark, new messages would be taken for ones already applied and acknowledged unseen.
//! So the store records the stream's creation time with its first message and checks it at
//! every (re)connection; on a mismatch it refuses to run and says how to recover.

use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::keys;

/// `m` + name -> [`Recorded`] JSON.
const META_STREAM: &[u8] = b"mstream_in";

/// What the store knows of the `LRS_IN` it talks to now.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// The stream's creation time, in nanoseconds since the epoch (JetStream's `created`).
    pub created_ns: i128,
    pub first_sequence: u64,
    pub last_sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    created_ns: String,
}

/// The outcome of a check that lets the store run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCheck {
    /// The stream the store has applied all along.
    Same,
    /// First contact: recorded now.
    Recorded,
    /// Another stream, taken over on the operator's word (`--adopt-new-stream`).
    Adopted,
}

/// The store and `LRS_IN` disagree: the message says what happened and how to recover.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamMismatch(pub String);

fn time_of(nanos: &str) -> String {
    nanos
        .parse::<i64>()
        .ok()
        .map(chrono::DateTime::from_timestamp_nanos)
        .map(xapi::time::format_timestamp)
        .unwrap_or_else(|| format!("{nanos} ns"))
}

impl Db {
    /// Checks (and on first contact records) that `current` is the stream this store applied.
    /// With `adopt`, a different stream is taken over: the watermark moves to just before its
    /// first message, and what the old stream's sequences meant (verdicts, out-of-order marks)
    /// is dropped. Statements already stored are still recognised by id.
    pub fn check_stream(
        &self,
        current: &StreamState,
        adopt: bool,
    ) -> Result<Result<StreamCheck, StreamMismatch>, DbError> {
        let applied = self.applied_sequence()?;
        let recorded: Option<Recorded> = self
            .tree()
            .get(META_STREAM)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let created = current.created_ns.to_string();
        let same_stream = recorded.as_ref().is_some_and(|r| r.created_ns == created);
        let fits = applied <= current.last_sequence;
        if same_stream && fits && applied + 1 < current.first_sequence {
            // The messages between are gone: acknowledged by every consumer while this
            // replica's was not among them (it was added without a snapshot, or removed and
            // added again).
            return Ok(Err(StreamMismatch(format!(
                "this store applied LRS_IN through sequence {applied}, but LRS_IN now starts at \
                 sequence {}: the messages between were removed before this replica applied \
                 them. Start it anew from a snapshot of a healthy replica: an empty data folder \
                 and --from-snapshot (README \"Replicas and the cluster\").",
                current.first_sequence
            ))));
        }
        if same_stream && fits {
            return Ok(Ok(StreamCheck::Same));
        }
        if adopt {
            self.adopt(current)?;
            tracing::warn!(
                applied_before = applied,
                from = current.first_sequence,
                "adopted a new LRS_IN: applying its messages from its first"
            );
            return Ok(Ok(StreamCheck::Adopted));
        }
        if recorded.is_none() && fits && applied + 1 < current.first_sequence {
            return Ok(Err(StreamMismatch(format!(
                "LRS_IN starts at sequence {}: its earlier messages were applied by other store \
                 replicas and removed. A new replica starts from a snapshot of a healthy one: \
                 an empty data folder and --from-snapshot (README \"Replicas and the cluster\").",
                current.first_sequence
            ))));
        }
        if recorded.is_none() && fits {
            self.record_stream(&created)?;
            return Ok(Ok(StreamCheck::Recorded));
        }
        let was = recorded.map_or_else(
            || "an earlier LRS_IN".to_owned(),
            |r| format!("the LRS_IN created {}", time_of(&r.created_ns)),
        );
        Ok(Err(StreamMismatch(format!(
            "LRS_IN is not the stream this store applied: the store applied {was} through \
             sequence {applied}, but the LRS_IN on this NATS was created {} and ends at sequence \
             {}. NATS's data was wiped or the stream was recreated; new messages would be taken \
             for ones already applied. Restore NATS's data folder, or accept the new stream by \
             starting the store once with --adopt-new-stream (its messages are then applied from \
             its first; statements already stored are recognised by id). See README \"Recovery\".",
            time_of(&created),
            current.last_sequence,
        ))))
    }

    /// The creation time (ns) of the `LRS_IN` this store applies, as recorded; empty before
    /// the first contact.
    pub(crate) fn stream_created(&self) -> Result<String, DbError> {
        Ok(self
            .tree()
            .get(META_STREAM)?
            .and_then(|bytes| serde_json::from_slice::<Recorded>(&bytes).ok())
            .map(|recorded| recorded.created_ns)
            .unwrap_or_default())
    }

    fn record_stream(&self, created: &str) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(&Recorded {
            created_ns: created.to_owned(),
        })
        .unwrap_or_default();
        self.tree().insert(META_STREAM, bytes)?;
        self.flush()
    }

    fn adopt(&self, current: &StreamState) -> Result<(), DbError> {
        let mut batch = sled::Batch::default();
        for prefix in [keys::APPLIED_ABOVE, keys::VERDICT] {
            for key in self.tree().scan_prefix([prefix]).keys() {
                batch.remove(key?);
            }
        }
        let watermark = current.first_sequence.saturating_sub(1);
        batch.insert(keys::META_APPLIED, &watermark.to_be_bytes());
        let recorded = serde_json::to_vec(&Recorded {
            created_ns: current.created_ns.to_string(),
        })
        .unwrap_or_default();
        batch.insert(META_STREAM, recorded);
        self.tree().apply_batch(batch)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(created_ns: i128, last: u64) -> StreamState {
        StreamState {
            created_ns,
            first_sequence: 1,
            last_sequence: last,
        }
    }

    #[test]
    fn a_recreated_stream_is_refused_unless_adopted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open");
        assert_eq!(
            db.check_stream(&stream(1, 0), false)
                .expect("db")
                .expect("ok"),
            StreamCheck::Recorded
        );
        let mut batch = sled::Batch::default();
        db.mark_applied(&mut batch, 1).expect("mark");
        db.tree().apply_batch(batch).expect("apply");
        assert_eq!(
            db.check_stream(&stream(1, 5), false)
                .expect("db")
                .expect("ok"),
            StreamCheck::Same
        );
        let refused = db.check_stream(&stream(2, 0), false).expect("db");
        let message = refused.expect_err("another stream").0;
        assert!(message.contains("--adopt-new-stream"), "{message}");
        assert!(message.contains("through sequence 1"), "{message}");
        assert_eq!(
            db.check_stream(&stream(2, 0), true)
                .expect("db")
                .expect("ok"),
            StreamCheck::Adopted
        );
        assert_eq!(db.applied_sequence().expect("meta"), 0);
        assert_eq!(
            db.check_stream(&stream(2, 3), false)
                .expect("db")
                .expect("ok"),
            StreamCheck::Same
        );
    }

    #[test]
    fn a_replica_that_missed_removed_messages_is_sent_to_a_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open");
        let removed = StreamState {
            created_ns: 1,
            first_sequence: 11,
            last_sequence: 20,
        };
        let message = db
            .check_stream(&removed, false)
            .expect("db")
            .expect_err("a new replica on a stream whose start is gone")
            .0;
        assert!(message.contains("--from-snapshot"), "{message}");
        let whole = StreamState {
            first_sequence: 1,
            ..removed.clone()
        };
        assert_eq!(
            db.check_stream(&whole, false).expect("db").expect("ok"),
            StreamCheck::Recorded
        );
        let mut batch = sled::Batch::default();
        db.mark_applied(&mut batch, 1).expect("mark");
        db.tree().apply_batch(batch).expect("apply");
        let message = db
            .check_stream(&removed, false)
            .expect("db")
            .expect_err("messages 2 to 10 are gone")
            .0;
        assert!(message.contains("through sequence 1"), "{message}");
        let drained = StreamState {
            first_sequence: 2,
            last_sequence: 1,
            ..removed
        };
        assert_eq!(
            db.check_stream(&drained, false).expect("db").expect("ok"),
            StreamCheck::Same,
            "an empty stream after what this replica applied"
        );
    }

    #[test]
    fn a_wiped_stream_is_refused_even_without_a_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path()).expect("open");
        let mut batch = sled::Batch::default();
        db.mark_applied(&mut batch, 1).expect("mark");
        db.mark_applied(&mut batch, 2).expect("mark");
        db.tree().apply_batch(batch).expect("apply");
        // A store from before the record existed, on a stream that ends before its watermark.
        assert!(db.check_stream(&stream(7, 0), false).expect("db").is_err());
    }
}
