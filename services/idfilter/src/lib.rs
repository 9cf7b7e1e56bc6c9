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

/// The filter's size, set at open from the ids the database holds then: room for twice as
/// many (it grows until the next open) at 11 bits an id, about one false "maybe" in 100 (each
/// costs the lookup there was before); at least 4 MiB (3 million ids), at most 64 MiB (48
/// million ids; past that, more false "maybe"s, never a wrong "no").
const BITS_PER_ID: u64 = 11;
const LEAST_IDS: u64 = 3_000_000;
const MOST_BITS: u64 = 64 * 1024 * 1024 * 8;

/// The filter for a database that held `held` ids at open.
fn sized_for(held: u64) -> AtomicBloomFilter {
    let ids = held.saturating_mul(2).max(LEAST_IDS);
    let bits = ids
        .saturating_mul(BITS_PER_ID)
        .min(MOST_BITS)
        .next_multiple_of(64);
    let bits = usize::try_from(bits).unwrap_or(usize::MAX);
    let ids = usize::try_from(ids).unwrap_or(usize::MAX);
    AtomicBloomFilter::with_num_bits(bits).expected_items(ids)
}

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
    /// Starts filling the filter, sized for a database of about `held` ids, on a thread named
    /// `name` from the ids `read` gives (run on that thread): `Ok(None)` for a key that names
    /// no id, an error to give up, and the filter then stays "maybe" for everything.
    pub fn fill_from<I, K, E>(
        name: &'static str,
        held: u64,
        read: impl FnOnce() -> I + Send + 'static,
    ) -> IdFilter
    where
        I: Iterator<Item = Result<Option<K>, E>>,
        K: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let shared = Arc::new(Shared {
            filter: sized_for(held),
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
        let filter = IdFilter::fill_from("test-ids", 0, || {
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

    /// Past three million ids the filter grows with the database, to its cap: a 4 MiB filter
    /// says "maybe" to about one other id in 100 at 3.5 million ids, one in 20 at 5 million
    /// and nearly one in two at 10 million.
    #[test]
    fn the_filter_is_sized_for_twice_the_ids_held_at_open() {
        let bits = |held: u64| sized_for(held).num_bits() as u64;
        assert_eq!(bits(0), bits(1_000_000));
        assert!(bits(0) >= LEAST_IDS * BITS_PER_ID);
        assert!(bits(10_000_000) >= 20_000_000 * BITS_PER_ID);
        assert!(bits(10_000_000) < 21_000_000 * BITS_PER_ID);
        assert_eq!(bits(u64::MAX), MOST_BITS);
        // Filled with all it was sized for (past what 4 MiB holds well), it still says no to
        // nearly everything else.
        let held = 8_000_000u64;
        let filter = sized_for(held / 2);
        for n in 0..held {
            filter.insert(&(n * 2).to_be_bytes());
        }
        let others = (0..100_000u64)
            .filter(|n| filter.contains(&(n * 2 + 1).to_be_bytes()))
            .count();
        assert!(others < 1_500, "{others} false maybes in 100,000");
    }

    #[test]
    fn a_fill_that_fails_leaves_every_answer_maybe() {
        let filter = IdFilter::fill_from("test-ids", 0, || {
            [Ok(Some(*b"one")), Err("the disk said no")].into_iter()
        });
        assert!(!filter.wait_filled());
        assert!(filter.may_hold(b"two"));
    }

    #[test]
    fn dropping_the_filter_stops_its_fill() {
        let (started, wait) = std::sync::mpsc::channel();
        // Endless: the fill returns only because the drop stops it.
        let filter = IdFilter::fill_from("test-ids", 0, move || {
            let _ = started.send(());
            (0u64..).map(|n| -> Read { Ok(Some(n.to_be_bytes())) })
        });
        wait.recv().expect("fill started");
        drop(filter);
    }
}
