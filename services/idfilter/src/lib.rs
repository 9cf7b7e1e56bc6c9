//! A Bloom filter of the ids a database holds, asked before the database whether a new id is
//! there already.
//!
//! The answer is nearly always no, and at a million statements sled's answer costs a page
//! fetched for a random key (BENCHMARKS.md, "Why ingest slows as the store grows"). The store
//! keeps one of its statement ids, the projector one of the statements it has a marker for.
//!
//! The filter is filled from the database's keys by a thread of its own, so a large database
//! opens as fast as it did without one; until that fill is complete [`IdFilter::may_hold`]
//! says "maybe" to everything and the database answers. The writer notes each id with
//! [`IdFilter::note`] before the batch that writes it, so an id written while the fill runs is
//! in the filter whether the fill meets its key or not. Never emptied: an id removed from the
//! database stays "maybe", which costs the lookup it cost without the filter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fastbloom::AtomicBloomFilter;

/// The filter's size: 4 MiB whatever the database's size, one false "maybe" in 100 up to
/// about 3.5 million ids (each costs the lookup there was before), more beyond.
const FILTER_BITS: usize = 32 * 1024 * 1024;
const FILTER_ITEMS: usize = 3_000_000;

pub struct IdFilter {
    shared: Arc<Shared>,
    filler: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    filter: AtomicBloomFilter,
    /// Set once every id the database held when the fill began is in the filter.
    complete: AtomicBool,
    /// Set when the filter is dropped: the fill stops where it is.
    stop: AtomicBool,
}

impl IdFilter {
    /// Starts filling the filter on a thread named `name` from the ids `read` gives (run on
    /// that thread): `Ok(None)` for a key that names no id, an error to give up, and the filter
    /// then stays "maybe" for everything.
    pub fn fill_from<I, K, E>(
        name: &'static str,
        read: impl FnOnce() -> I + Send + 'static,
    ) -> IdFilter
    where
        I: Iterator<Item = Result<Option<K>, E>>,
        K: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let shared = Arc::new(Shared {
            filter: AtomicBloomFilter::with_num_bits(FILTER_BITS).expected_items(FILTER_ITEMS),
            complete: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let filling = shared.clone();
        let filler = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || fill(name, &filling, read()))
            .map_err(|err| tracing::warn!(%err, filter = name, "no thread to fill the filter"))
            .ok();
        IdFilter {
            shared,
            filler: Mutex::new(filler),
        }
    }

    /// A filter with no fill: "maybe" to everything, for a database not ready to be read yet.
    pub fn unfilled() -> IdFilter {
        IdFilter {
            shared: Arc::new(Shared {
                filter: AtomicBloomFilter::with_num_bits(64).expected_items(1),
                complete: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            }),
            filler: Mutex::new(None),
        }
    }

    /// False only when the id is surely not in the database; true when it may be (ask it).
    pub fn may_hold(&self, id: &[u8]) -> bool {
        !self.shared.complete.load(Ordering::Acquire) || self.shared.filter.contains(id)
    }

    /// Notes an id as written, before the batch that writes it.
    pub fn note(&self, id: &[u8]) {
        self.shared.filter.insert(id);
    }

    /// Waits for the fill to end; true when the filter is complete.
    pub fn wait_filled(&self) -> bool {
        self.join();
        self.shared.complete.load(Ordering::Acquire)
    }

    fn join(&self) {
        let filler = self
            .filler
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(filler) = filler {
            let _ = filler.join();
        }
    }
}

impl Drop for IdFilter {
    /// Stops the fill and joins its thread: the database is not held open behind its owner.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.join();
    }
}

/// Ids read between two looks at whether the filter is being dropped.
const IDS_PER_LOOK: usize = 4_096;

fn fill<I, K, E>(name: &str, shared: &Shared, ids: I)
where
    I: Iterator<Item = Result<Option<K>, E>>,
    K: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let started = std::time::Instant::now();
    let mut count = 0usize;
    for id in ids {
        match id {
            Ok(Some(id)) => {
                shared.filter.insert(id.as_ref());
                count += 1;
                if count.is_multiple_of(IDS_PER_LOOK) && shared.stop.load(Ordering::Acquire) {
                    return;
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%err, filter = name, "reading the ids; the database answers");
                return;
            }
        }
    }
    shared.complete.store(true, Ordering::Release);
    tracing::debug!(
        filter = name,
        ids = count,
        ms = started.elapsed().as_millis() as u64,
        "filter filled"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    type Read = Result<Option<[u8; 8]>, std::convert::Infallible>;

    #[test]
    fn a_filled_filter_holds_every_id_and_says_no_to_nearly_all_others() {
        let filter = IdFilter::fill_from("test-ids", || {
            (0u64..10_000).map(|n| -> Read { Ok(Some((n * 2).to_be_bytes())) })
        });
        assert!(filter.wait_filled());
        assert!((0u64..10_000).all(|n| filter.may_hold(&(n * 2).to_be_bytes())));
        let others = (0u64..10_000)
            .filter(|n| filter.may_hold(&(n * 2 + 1).to_be_bytes()))
            .count();
        assert!(others < 100, "{others} false maybes in 10,000");
        filter.note(&1u64.to_be_bytes());
        assert!(filter.may_hold(&1u64.to_be_bytes()));
    }

    #[test]
    fn a_fill_that_fails_leaves_every_answer_maybe() {
        let filter = IdFilter::fill_from("test-ids", || {
            [Ok(Some(*b"one")), Err("the disk said no")].into_iter()
        });
        assert!(!filter.wait_filled());
        assert!(filter.may_hold(b"two"));
    }

    #[test]
    fn dropping_the_filter_stops_its_fill() {
        let (started, wait) = std::sync::mpsc::channel();
        // Endless: the fill returns only because the drop stops it.
        let filter = IdFilter::fill_from("test-ids", move || {
            let _ = started.send(());
            (0u64..).map(|n| -> Read { Ok(Some(n.to_be_bytes())) })
        });
        wait.recv().expect("fill started");
        drop(filter);
    }
}
