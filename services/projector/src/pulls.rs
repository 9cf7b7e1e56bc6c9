//! `LRS_STORED` pulls decoded beside the apply, not before it.
//!
//! The projector's lag is how long its oldest unapplied message waits: under ingest, the rest
//! of the cycle under way and the next one of its applying thread. Decoding a pull's messages
//! and reducing them to their effects was a quarter of that thread's work (BENCHMARKS.md, the
//! fiftieth round). The service now reads each pull as it arrives, on a thread of its own
//! ([`Pull::read`]), while the applying thread applies the pulls read before; that thread
//! then takes every pull read meanwhile at once, in [`parts`] as before. How much is read
//! ahead is bounded ([`AHEAD_EVENTS`]), so a backlog is not held in memory twice.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::contribution::{effects, Effect};

/// How many events may wait read and not yet applied (beyond the pull being read): a part's
/// worth ([`APPLY_EVENTS`]). Effects are a few hundred bytes an event, so a few MB.
pub const AHEAD_EVENTS: usize = APPLY_EVENTS;

/// The most statements one part of the projector applies. Smaller parts cost throughput: each
/// writes the touched hubs', companies' and programme's states again (30 s after 300,000
/// statements over HTTP, parts of 10,000 had caught up and parts of 2,000 were 80,000
/// statements behind). A part of 10,000 statements writes ~75,000 keys; sled keeps every tree
/// node a batch replaces until the batch ends, so a larger part is applied in sled batches of
/// [`crate::part::SUB_BATCH`] writes ([`crate::part`]) and its size no longer bounds that memory.
pub const APPLY_EVENTS: usize = 10_000;

/// One pull of `LRS_STORED`, read: what the applying thread takes.
pub struct Pull {
    /// The pull's messages, their payloads taken out once read: they wait for their ack
    /// without them (a payload keeps its connection's read buffer alive).
    pub messages: Vec<jetstream::Message>,
    /// Each readable message, in stream order.
    pub read: Vec<Read>,
    /// Each message that could not be read, to be parked.
    pub unreadable: Vec<Unreadable>,
    /// How long the pull waited for its first message.
    pub waited: Duration,
    /// This pull's share of [`AHEAD_EVENTS`], given back when the applying thread takes the
    /// pull apart.
    ahead: Option<OwnedSemaphorePermit>,
}

/// A message reduced to its effects.
pub struct Read {
    pub sequence: u64,
    /// Its events (what counts towards a part's [`APPLY_EVENTS`]).
    pub events: usize,
    pub effects: Vec<Effect>,
}

/// A message the projector could not read: kept with the reason (`leerspoor project
/// --replay-parked`), not skipped.
pub struct Unreadable {
    pub sequence: u64,
    pub reason: String,
    pub payload: Bytes,
}

impl Pull {
    /// Reads a pull's messages (blocking work: decoding and reducing them); a message without
    /// JetStream info is left out, as it cannot be placed.
    pub fn read(mut messages: Vec<jetstream::Message>, waited: Duration) -> Pull {
        let payloads = messages.iter_mut().map(|message| {
            let sequence = message.info().ok().map(|info| info.stream_sequence);
            (sequence, std::mem::take(&mut message.message.payload))
        });
        let (read, unreadable) = read_payloads(payloads);
        Pull {
            messages,
            read,
            unreadable,
            waited,
            ahead: None,
        }
    }

    /// Events in the pull's readable messages.
    pub fn events(&self) -> usize {
        self.read.iter().map(|read| read.events).sum()
    }

    /// Waits until this pull's events may wait to be applied: at most [`AHEAD_EVENTS`] do
    /// beyond the pull being read (a pull of more waits until none do).
    pub async fn hold(&mut self, ahead: &Arc<Semaphore>) {
        let events = self.events().clamp(1, AHEAD_EVENTS) as u32;
        // The semaphore is never closed.
        self.ahead = ahead.clone().acquire_many_owned(events).await.ok();
    }
}

/// What [`Pull::hold`] takes its shares from.
pub fn ahead() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(AHEAD_EVENTS))
}

/// Each payload with its stream sequence (`None`: left out) read, or kept as unreadable.
fn read_payloads(
    payloads: impl Iterator<Item = (Option<u64>, Bytes)>,
) -> (Vec<Read>, Vec<Unreadable>) {
    let (mut read, mut unreadable) = (Vec::new(), Vec::new());
    for (sequence, payload) in payloads {
        let Some(sequence) = sequence else {
            continue;
        };
        match crate::events::decode(&payload) {
            Ok(decoded) => read.push(Read {
                sequence,
                events: decoded.events.len(),
                effects: effects(&decoded),
            }),
            Err(err) => unreadable.push(Unreadable {
                sequence,
                reason: err.to_string(),
                payload,
            }),
        }
    }
    (read, unreadable)
}

/// The messages read, in order, in parts of at most `most` events; a message of more is a
/// part of its own.
pub fn parts(read: impl IntoIterator<Item = Read>, most: usize) -> Vec<Vec<(u64, Vec<Effect>)>> {
    let mut parts: Vec<Vec<(u64, Vec<Effect>)>> = Vec::new();
    let mut events = 0;
    for message in read {
        match parts.last_mut() {
            Some(part) if events + message.events <= most => {
                part.push((message.sequence, message.effects))
            }
            _ => {
                parts.push(vec![(message.sequence, message.effects)]);
                events = 0;
            }
        }
        events += message.events;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::wire::{EventKind, StoredEvent, StoredEvents};
    use serde_json::json;

    fn message(sequence: u64, statements: usize) -> Bytes {
        let events = (0..statements)
            .map(|n| StoredEvent {
                kind: EventKind::Stored,
                position: n as u64 + 1,
                statement: json!({
                    "id": format!("00000000-0000-4000-8000-{sequence:06}{n:06}"),
                    "actor": {"mbox": format!("mailto:w{n}@example.org")},
                    "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
                    "object": {"id": "https://example.org/a"},
                    "timestamp": "2026-03-01T10:00:00.000Z",
                    "stored": "2026-03-01T10:00:00.000Z",
                }),
            })
            .collect();
        serde_json::to_vec(&StoredEvents { sequence, events })
            .expect("events are JSON")
            .into()
    }

    fn read(sequence: u64, events: usize) -> Read {
        Read {
            sequence,
            events,
            effects: Vec::new(),
        }
    }

    fn sequences(parts: &[Vec<(u64, Vec<Effect>)>]) -> Vec<Vec<u64>> {
        parts
            .iter()
            .map(|part| part.iter().map(|(sequence, _)| *sequence).collect())
            .collect()
    }

    #[test]
    fn parts_keep_the_order_and_hold_at_most_their_events() {
        let reads = vec![
            read(1, 40),
            read(2, 40),
            read(3, 30),
            read(4, 100),
            read(5, 0),
            read(6, 250),
            read(7, 1),
        ];
        assert_eq!(
            sequences(&parts(reads, 100)),
            vec![vec![1, 2], vec![3], vec![4, 5], vec![6], vec![7]]
        );
        assert_eq!(
            sequences(&parts(vec![read(1, 100), read(2, 0)], 100)),
            vec![vec![1, 2]]
        );
        assert!(parts(Vec::new(), 100).is_empty());
    }

    #[test]
    fn payloads_are_read_in_order_and_the_unreadable_kept_with_theirs() {
        let garbled = Bytes::from_static(b"{\"sequence\": 2, \"events\": [");
        let payloads = vec![
            (Some(11), message(1, 3)),
            (None, message(9, 1)),
            (Some(12), garbled.clone()),
            (Some(13), message(3, 2)),
        ];
        let (read, unreadable) = read_payloads(payloads.into_iter());
        let summary: Vec<(u64, usize, usize)> = read
            .iter()
            .map(|read| (read.sequence, read.events, read.effects.len()))
            .collect();
        assert_eq!(summary, vec![(11, 3, 3), (13, 2, 2)]);
        assert_eq!(
            read[0].effects[2].id,
            "00000000-0000-4000-8000-000001000002"
        );
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].sequence, 12);
        assert_eq!(unreadable[0].payload, garbled);
        assert!(!unreadable[0].reason.is_empty());
    }

    #[tokio::test]
    async fn pulls_read_ahead_wait_while_a_part_of_events_is_not_applied() {
        use futures::FutureExt as _;
        let ahead = ahead();
        let mut first = pull_of(AHEAD_EVENTS - 10);
        first.hold(&ahead).await;
        let mut second = pull_of(10);
        second.hold(&ahead).await;
        let mut third = pull_of(1);
        assert!(
            third.hold(&ahead).now_or_never().is_none(),
            "a pull beyond the bound did not wait"
        );
        drop(first);
        // Given back: the third goes on, and one larger than the bound waits for all.
        third.hold(&ahead).await;
        let mut large = pull_of(3 * AHEAD_EVENTS);
        assert!(
            large.hold(&ahead).now_or_never().is_none(),
            "a large pull did not wait for the others"
        );
        drop((second, third));
        large.hold(&ahead).await;
        assert_eq!(ahead.available_permits(), 0);
        drop(large);
        assert_eq!(ahead.available_permits(), AHEAD_EVENTS);
    }

    fn pull_of(events: usize) -> Pull {
        Pull {
            messages: Vec::new(),
            read: vec![read(1, events)],
            unreadable: Vec::new(),
            waited: Duration::ZERO,
            ahead: None,
        }
    }
}
