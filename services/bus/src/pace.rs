//! Ingest paced by the projector beside it: a bound of Leerspoor's own on how far a store may
//! run ahead of the projector that shares its machine.
//!
//! While it applies, a projector announces the last `LRS_STORED` sequence it applied on
//! [`subjects::projector_applied`] for its replica name (core NATS, no stream), every
//! [`ANNOUNCE_EVERY`] while that sequence moves. A store replica of the same name counts the
//! `LRS_STORED` sequences it published; before its next pull of `LRS_IN` it waits while the
//! latest announcement is fresh and says the projector is more than [`Bounds::behind`]
//! messages behind, for at most [`Bounds::longest_wait`] per pull: a projector catching up on
//! a backlog slows ingest (the store then pulls what gathered meanwhile in larger batches), it
//! never halts it. An announcement older than [`Bounds::fresh`], or none at all, means no
//! wait: a projector stopped, rebuilding, or stuck in a long checkpoint never stops ingest.
//!
//! Until this bound, what held a store back was sled's write lock, one for every database of
//! the process, which each sled batch of a projector checkpoint takes: checkpoints written
//! without it let the store run ahead and the projector fall 13–21 s behind (BENCHMARKS.md,
//! the twenty-eighth and twenty-ninth rounds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::subjects;

/// How often a projector announces its progress while it moves.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// When a store waits for its projector.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How many `LRS_STORED` messages the store may publish beyond what its projector
    /// applied: a message carries the events of one `LRS_IN` message (a batch of up to 100
    /// statements) or of a run of single statements.
    pub behind: u64,
    /// An announcement older than this no longer holds the store back.
    pub fresh: Duration,
    /// The longest a store waits before one pull: well under the gateway's default write
    /// timeout (10 s), so a write waits at most a few of these for its verdict.
    pub longest_wait: Duration,
}

impl Default for Bounds {
    /// 128 messages: a second or two of ingest in batches, more than the projector's parts
    /// of 10,000 statements (it announces per part). 2 s per pull: the projector's longest
    /// pulls at a million statements take about that; with checkpoints written without sled's
    /// lock (measured, not kept), 1 s per pull still left the projector 8 s behind at the end
    /// of the grow to a million, 2 s 3–6 s (BENCHMARKS.md, the twenty-ninth round).
    fn default() -> Self {
        Bounds {
            behind: 128,
            fresh: Duration::from_secs(2),
            longest_wait: Duration::from_secs(2),
        }
    }
}

/// A projector's announcement on [`subjects::projector_applied`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProjectorApplied {
    /// The last `LRS_STORED` sequence it applied.
    pub applied: u64,
}

/// The projector's side: announces what it applied. A lost announcement costs nothing but a
/// store's wait for the next one (at most [`Bounds::fresh`]).
pub async fn announce(client: &async_nats::Client, replica: &str, applied: u64) {
    let Ok(payload) = serde_json::to_vec(&ProjectorApplied { applied }) else {
        return;
    };
    if let Err(err) = client
        .publish(subjects::projector_applied(replica), payload.into())
        .await
    {
        tracing::debug!(error = %err, "announcing the projector's progress failed");
    }
}

/// The highest `LRS_STORED` sequence a store published (JetStream acknowledged), or a
/// projector applied; shared between the task that moves it and the one that reads it.
#[derive(Debug, Clone, Default)]
pub struct Highest(Arc<AtomicU64>);

impl Highest {
    pub fn record(&self, sequence: u64) {
        self.0.fetch_max(sequence, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The projector's side: announces `applied` every [`ANNOUNCE_EVERY`] while it moves, until
/// shutdown.
pub async fn announce_progress(
    client: async_nats::Client,
    replica: String,
    applied: Highest,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = applied.get();
        if now > announced {
            announce(&client, &replica, now).await;
            announced = now;
        }
    }
}

/// The store's side: what its projector last announced, and the wait before a pull.
pub struct Pace {
    announcements: async_nats::Subscriber,
    /// The latest announcement's sequence and when it arrived.
    latest: Option<(u64, Instant)>,
    published: Highest,
    bounds: Bounds,
}

impl Pace {
    /// Follows the announcements of projector `replica`.
    pub async fn follow(
        client: &async_nats::Client,
        replica: &str,
        bounds: Bounds,
    ) -> Result<Pace, async_nats::SubscribeError> {
        Ok(Pace {
            announcements: client
                .subscribe(subjects::projector_applied(replica))
                .await?,
            latest: None,
            published: Highest::default(),
            bounds,
        })
    }

    /// Where the store records what it published.
    pub fn published(&self) -> Highest {
        self.published.clone()
    }

    /// How many `LRS_STORED` messages the projector is behind by its latest announcement, if
    /// that is fresh.
    pub fn behind(&mut self) -> Option<u64> {
        while let Some(Some(message)) = self.announcements.next().now_or_never() {
            self.take(&message.payload);
        }
        let (applied, at) = self.latest?;
        (at.elapsed() < self.bounds.fresh).then(|| self.published.get().saturating_sub(applied))
    }

    /// Before a pull: waits while the projector is more than the bound behind, until its
    /// announcements go stale, [`Bounds::longest_wait`] is up, or shutdown. Returns how long
    /// it waited.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> Duration {
        if !self.too_far_behind() {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let give_up = started + self.bounds.longest_wait;
        loop {
            let stale_at = self
                .latest
                .map_or(started, |(_, at)| at + self.bounds.fresh);
            tokio::select! {
                message = self.announcements.next() => match message {
                    Some(message) => self.take(&message.payload),
                    // No connection any more: nothing to wait for.
                    None => return started.elapsed(),
                },
                () = tokio::time::sleep_until(stale_at.min(give_up).into()) => {
                    if Instant::now() >= give_up {
                        return started.elapsed();
                    }
                }
                () = shutdown.cancelled() => return started.elapsed(),
            }
            if !self.too_far_behind() {
                return started.elapsed();
            }
        }
    }

    fn too_far_behind(&mut self) -> bool {
        self.behind()
            .is_some_and(|behind| behind > self.bounds.behind)
    }

    fn take(&mut self, payload: &[u8]) {
        match serde_json::from_slice::<ProjectorApplied>(payload) {
            Ok(announced) => self.latest = Some((announced.applied, Instant::now())),
            Err(err) => tracing::debug!(error = %err, "an unreadable projector announcement"),
        }
    }
}
