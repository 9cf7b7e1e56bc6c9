//! What the store tells Prometheus (names in [`bus::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::metrics as m;
use bus::wire::Verdict;

use crate::db::{Db, Incoming};

/// After one message: its apply time, and its statements accepted or rejected by source.
/// `statements`: how many statements each of its batches held (one batch, or a bundle's parts).
pub(crate) fn applied(
    incoming: &Incoming<'_>,
    statements: Option<&[usize]>,
    verdict: &Verdict,
    took: Duration,
) {
    metrics::histogram!(m::STORE_APPLY_SECONDS).record(took.as_secs_f64());
    let Some(counts) = statements else {
        return;
    };
    let source = m::source_label(incoming.subject);
    let count = |verdict: &Verdict, statements: usize| {
        let name = match verdict {
            Verdict::Applied => m::STATEMENTS_ACCEPTED,
            Verdict::Rejected(_) | Verdict::Conflict { .. } => m::STATEMENTS_REJECTED,
            _ => return,
        };
        metrics::counter!(name, "source" => source.clone()).increment(statements as u64);
    };
    match verdict {
        Verdict::Parts { parts } => {
            for (verdict, statements) in parts.iter().zip(counts) {
                count(verdict, *statements);
            }
        }
        whole => count(whole, counts.iter().sum()),
    }
}

/// Before a pull that waited for the projector beside the store ([`bus::pace`]).
pub(crate) fn paced(waited: Duration) {
    metrics::histogram!(m::STORE_PACE_WAIT_SECONDS).record(waited.as_secs_f64());
}

/// After a flush: its time, the watermark, and (every 10 s at most) the size on disk.
pub(crate) fn flushed(db: &Db, through: u64, took: Duration) {
    metrics::histogram!(m::STORE_FLUSH_SECONDS).record(took.as_secs_f64());
    metrics::gauge!(m::STORE_APPLIED).set(through as f64);
    static LAST_SIZED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if now.saturating_sub(LAST_SIZED.load(Ordering::Relaxed)) >= 10 {
        LAST_SIZED.store(now, Ordering::Relaxed);
        if let Ok(bytes) = db.tree.size_on_disk() {
            metrics::gauge!(m::SLED_BYTES, "db" => "store").set(bytes as f64);
        }
    }
}
