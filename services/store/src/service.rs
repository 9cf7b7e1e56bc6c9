//! The store on NATS: pull `LRS_IN` -> apply -> flush -> publish outbox -> ack -> announce;
//! and answer statement queries and verdict look-ups over request/reply. Before a pull it
//! waits a while when the projector beside it is too far behind ([`bus::pace`]).
//!
//! Nothing a message or a NATS outage does ends the loop: a message that cannot be applied is
//! refused (see [`Db::apply`]); pulls, publishes and acks that fail while NATS is away are
//! retried once it is back (the client reconnects by itself); the durable consumer is made
//! again if it went missing, after checking that `LRS_IN` is still the stream the store
//! applied ([`crate::identity`]). The loop ends only at shutdown, on a database error, or when
//! `LRS_IN` turned out to be another stream, and says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use bus::pull::{Ack, Backoff, InFlight, Pulled, Puller};
use bus::subjects;
use bus::wire::{Applied, Verdict};
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use xapi::Validator;

use crate::db::{Db, DbError, Incoming};
use crate::identity::{StreamCheck, StreamState};
use crate::ingest;

/// One `LRS_IN` message to apply: delivered to this store's consumer, or read from the
/// stream to fill a gap.
struct Arriving<'a> {
    sequence: u64,
    subject: &'a str,
    payload: &'a [u8],
    /// `X-Experience-API-Version` of a direct publisher.
    version: Option<&'a str>,
    /// Where the central nats-server sourced the message from (a hub node's stream).
    source: Option<&'a str>,
    /// [`bus::PARTS_HEADER`]: a bundle of the gateway's.
    parts: Option<&'a str>,
    published: chrono::DateTime<chrono::Utc>,
}

/// A JetStream timestamp (nanoseconds since the epoch) as chrono's.
fn utc(nanos: i128) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

impl<'a> Arriving<'a> {
    fn delivered(message: &'a jetstream::Message) -> Option<Arriving<'a>> {
        let info = message.info().ok()?;
        Some(Arriving {
            sequence: info.stream_sequence,
            subject: message.subject.as_str(),
            payload: &message.payload,
            version: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("X-Experience-API-Version"))
                .map(|value| value.as_str()),
            source: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(bus::leaf::SOURCE_HEADER))
                .map(|value| value.as_str()),
            parts: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(bus::PARTS_HEADER))
                .map(|value| value.as_str()),
            published: utc(info.published.unix_timestamp_nanos()),
        })
    }

    fn fetched(message: &'a jetstream::message::StreamMessage) -> Arriving<'a> {
        Arriving {
            sequence: message.sequence,
            subject: message.subject.as_str(),
            payload: &message.payload,
            version: message
                .headers
                .get("X-Experience-API-Version")
                .map(|value| value.as_str()),
            source: message
                .headers
                .get(bus::leaf::SOURCE_HEADER)
                .map(|value| value.as_str()),
            parts: message
                .headers
                .get(bus::PARTS_HEADER)
                .map(|value| value.as_str()),
            published: utc(message.time.unix_timestamp_nanos()),
        }
    }
}

/// The sequences after `applied` and below the last of `delivered` that are not among
/// `delivered`, the first `most` of them: what a batch must be applied with to keep the
/// log's order.
fn missing(applied: u64, delivered: &[u64], most: usize) -> Vec<u64> {
    let Some(&last) = delivered.iter().max() else {
        return Vec::new();
    };
    (applied.saturating_add(1)..last)
        .filter(|sequence| !delivered.contains(sequence))
        .take(most)
        .collect()
}

/// Applied batches waiting for their outbox publish and ack.
const FINISH_QUEUE: usize = 4;

/// At most this many `LRS_IN` messages' events go out as one `LRS_STORED` message, and only
/// while their payloads come to at most [`RUN_BYTES`]: runs are for small messages (single
/// statements), whose stream writes cost more than their content; a batch of 100 statements
/// goes alone, as before runs, and keeps `LRS_STORED` messages (and what a consumer pulls and
/// holds at once) the size they were.
const RUN_MESSAGES: usize = 32;
const RUN_BYTES: usize = 64 * 1024;

/// The run each of a batch's messages (`(sequence, payload bytes)`, in the order applied)
/// belongs to, by its first sequence, when this store is the only replica; each message alone
/// when there are more. A run's events go out as one `LRS_STORED` message, which for single
/// statements saves nats-server a synced write and the synced tombstone that removes it
/// (BENCHMARKS.md, the twenty-first round). Replicas cannot share runs: each pulls its own
/// batches, so runs would differ between them and the messages' ids with them, and the events
/// would go out once per replica instead of being dropped as duplicates.
fn runs(messages: &[(u64, usize)], alone: bool) -> Vec<Option<u64>> {
    let mut runs = Vec::with_capacity(messages.len());
    let (mut first, mut count, mut bytes) = (0, 0, 0);
    for &(sequence, size) in messages {
        if count == 0 || count == RUN_MESSAGES || bytes + size > RUN_BYTES {
            (first, count, bytes) = (sequence, 0, 0);
        }
        count += 1;
        bytes += size;
        runs.push((!alone).then_some(first));
    }
    runs
}

/// What [`Store::fill_gap`] read from `LRS_IN` for a batch.
struct Gap {
    /// The missing messages it could read, to be applied in order with the batch.
    filled: Vec<jetstream::message::StreamMessage>,
    /// The first sequence below the batch's last that is neither applied, delivered nor read
    /// (NATS did not answer, or more were missing than one fill reads): the batch's messages
    /// after it wait for it, since applied before it they would take other positions than on
    /// the replicas that applied the log in order.
    open_from: Option<u64>,
}

/// The part of a batch that may be applied now (every message before `open_from`), and the
/// part that waits (after it; a message without its delivery info stays with the first).
fn split_at_gap(
    batch: Vec<jetstream::Message>,
    open_from: Option<u64>,
) -> (Vec<jetstream::Message>, Vec<jetstream::Message>) {
    let Some(open_from) = open_from else {
        return (batch, Vec::new());
    };
    batch.into_iter().partition(|message| {
        message
            .info()
            .map_or(true, |info| info.stream_sequence < open_from)
    })
}

/// How long a message held back behind a gap waits before JetStream delivers it again.
const HOLD_BACK: Duration = Duration::from_millis(500);

/// Attempts at applying a batch that failed on a database error before the store gives up.
const APPLY_ATTEMPTS: u32 = 5;

/// What an applied, flushed batch still needs: its events published, then its acks.
struct Finish {
    /// Each is acknowledged on its own (`AckPolicy::Explicit`): a cumulative ack would also
    /// acknowledge an earlier message still waiting for redelivery.
    messages: Vec<Ack>,
    through: u64,
    /// The last outbox key the batch's flush covered.
    outbox_through: Option<sled::IVec>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the sled database; one store process owns it.
    pub data_dir: PathBuf,
    /// At most this many messages are applied under one sled flush and one ack.
    pub max_batch: usize,
    /// A message delivered to a store that died unacknowledged is redelivered after this.
    /// Short, so a restarted store converges in seconds; long work sends progress acks.
    pub ack_wait: Duration,
    /// Created at start when the store has no credential at all (`serve`'s demo credential),
    /// so that a first run can be used at once.
    pub bootstrap_credential: Option<bus::access::CredentialRecord>,
    /// The bounds on what hubs publish and what one page, export or reply may hold.
    pub limits: xapi::limits::Limits,
    /// Take over an `LRS_IN` other than the one this store applied (README "Recovery").
    pub adopt_new_stream: bool,
    /// Start this (new, empty) replica from a snapshot of a healthy one.
    pub from_snapshot: bool,
    /// This store replica's name: its durable consumer of `LRS_IN`.
    pub replica: String,
    pub topology: subjects::Topology,
    /// sled's page cache for the database, in bytes.
    pub cache_bytes: u64,
}

pub struct Store {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) db: Arc<Db>,
    /// Compiled once; shared with the blocking apply tasks.
    pub(crate) validator: Arc<Validator>,
    /// `LRS_IN`, pulled with the store's durable consumer.
    pub(crate) puller: tokio::sync::Mutex<Puller>,
    /// Where attachment bodies live; an erasure deletes the ones no statement uses any more.
    pub(crate) attachments: jetstream::object_store::ObjectStore,
    pub(crate) api: crate::api::Subscriptions,
    pub(crate) config: StoreConfig,
    /// Messages pulled and not yet acknowledged: kept "in progress" for JetStream, so
    /// `ack_wait` can be short without redelivering long work.
    pub(crate) in_flight: InFlight,
    /// Wakes the housekeeping (erasure leftovers on NATS) after each batch.
    pub(crate) housekeeping: tokio::sync::Notify,
    /// The flushed `LRS_IN` watermark, for reads that need a given sequence.
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
    /// Requests for a snapshot for a new replica, answered between two batches.
    pub(crate) snapshots: tokio::sync::Mutex<async_nats::Subscriber>,
    /// The projector beside this store, which a pull waits for when it fell behind.
    pub(crate) pace: tokio::sync::Mutex<bus::pace::Pace>,
    /// The last `LRS_STORED` sequence this store published, for [`Store::pace`].
    pub(crate) published: bus::pace::Highest,
}

/// Why the store stops on its own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("the store's database failed")]
    Db(#[from] DbError),
    #[error(transparent)]
    Stream(#[from] crate::identity::StreamMismatch),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Store {
    /// Opens sled, makes sure the streams and the durable consumer exist. Fails fast with
    /// context: sled locked by another process, NATS without JetStream, schema errors, an
    /// `LRS_IN` that is not the stream this store applied.
    pub async fn build(client: async_nats::Client, config: StoreConfig) -> anyhow::Result<Store> {
        let validator = Arc::new(Validator::new().context("compiling xAPI schemas")?);
        let db_path = crate::compact::database_path(&config.data_dir)
            .context("finding the store's database")?;
        let js = jetstream::new(client.clone());
        let retention = subjects::ensure_streams(&js, &config.topology).await?;
        if retention == subjects::InRetention::WorkQueue && config.replica != subjects::MAIN_REPLICA
        {
            anyhow::bail!(
                "LRS_IN is a work queue made by an older Leerspoor, which takes one store only; \
                 replica {:?} cannot join until it is recreated (README \"Upgrading to replicas\")",
                config.replica
            );
        }
        let consumer = subjects::store_consumer(&config.replica);
        let (opening, cache_bytes) = (db_path.clone(), config.cache_bytes);
        let tree = tokio::task::spawn_blocking(move || Db::open_tree(&opening, cache_bytes))
            .await
            .context("opening sled")?
            .context("opening the store database (is another store running on it?)")?;
        if config.from_snapshot {
            // The consumer first: what comes after the snapshot then stays in LRS_IN until
            // this replica applied it.
            bus::pull::durable(&js, subjects::STREAM_IN, &consumer, config.ack_wait)
                .await
                .context("the new replica's durable consumer on LRS_IN")?;
            crate::snapshot::fetch(
                &client,
                &config.replica,
                config.topology.stream_replicas,
                &tree,
                &db_path,
                &config.data_dir,
            )
            .await?;
        }
        let limits = config.limits.clone();
        let db = tokio::task::spawn_blocking(move || Db::from_tree(tree, limits))
            .await
            .context("opening sled")?
            .context("opening the store database")?;
        let max_payload = client.server_info().max_payload;
        db.set_max_payload(max_payload);
        if config.limits.statement_bytes + bus::HEADROOM > max_payload {
            tracing::warn!(
                statement_bytes = config.limits.statement_bytes,
                max_payload,
                "limits.statement_bytes does not fit one NATS message with headroom; \
                 statements that large reach the projector slimmed: raise max_payload"
            );
        }
        if let Some(record) = config.bootstrap_credential.clone() {
            let access = crate::access::Access { tree: db.tree() };
            if access.credentials()?.is_empty() {
                bootstrap(&js, record).await?;
            }
        }
        let db = Arc::new(db);
        check_stream(&js, &db, config.adopt_new_stream)
            .await?
            .context("reading LRS_IN's state at start")?;
        let puller = Puller::open(
            client.clone(),
            subjects::STREAM_IN,
            &consumer,
            config.ack_wait,
            config.max_batch,
        )
        .await
        .context("the store's durable consumer on LRS_IN")?;
        let in_flight = puller.in_flight();
        let applied = tokio::sync::watch::Sender::new(db.applied_sequence()?);
        let api = crate::api::subscribe(&client).await?;
        let snapshots = client
            .queue_subscribe(subjects::API_SNAPSHOT_STORE, subjects::API_QUEUE.to_owned())
            .await?;
        let attachments = subjects::attachment_bucket(&js, config.topology.stream_replicas).await?;
        let pace =
            bus::pace::Pace::follow(&client, &config.replica, bus::pace::Bounds::default()).await?;
        Ok(Store {
            published: pace.published(),
            pace: tokio::sync::Mutex::new(pace),
            api,
            attachments,
            client,
            js,
            db,
            validator,
            puller: tokio::sync::Mutex::new(puller),
            config,
            in_flight,
            housekeeping: tokio::sync::Notify::new(),
            applied,
            snapshots: tokio::sync::Mutex::new(snapshots),
        })
    }

    /// This store's request side for a gateway in the same process: the answers it gives over
    /// NATS, without the trip through nats-server ([`bus::request::ask_here_first`]).
    pub fn here(&self) -> Arc<dyn bus::request::Here> {
        Arc::new(crate::api::Here::new(
            &self.db,
            self.applied.subscribe(),
            self.client.server_info().max_payload,
        ))
    }

    /// Runs until `shutdown`: finishes the batch in hand, flushes, acks, then returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = crate::api::serve(
            self.client.clone(),
            self.db.clone(),
            std::mem::take(&mut self.api),
            self.applied.subscribe(),
            shutdown.clone(),
        );
        let ingest = async {
            let result = self.ingest_loop(shutdown.clone()).await;
            if let Err(err) = &result {
                tracing::error!(error = %format!("{err:#}"), "the store stops");
            }
            result
        };
        let progress = bus::pull::keep_in_progress(
            self.client.clone(),
            self.in_flight.clone(),
            self.config.ack_wait,
            shutdown.clone(),
        );
        let housekeeping = self.housekeeping(shutdown.clone());
        let status = crate::replica::answer(
            self.client.clone(),
            self.db.clone(),
            self.config.replica.clone(),
            shutdown.clone(),
        );
        let (api_result, ingest_result, (), (), status_result) =
            tokio::join!(api, ingest, progress, housekeeping, status);
        if let Err(err) = status_result {
            tracing::warn!(error = %format!("{err:#}"), "replica status not answered");
        }
        // Whichever ended first, stop the other too.
        shutdown.cancel();
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .context("final flush")??;
        api_result.and(ingest_result.map_err(anyhow::Error::from))
    }

    /// Two stages: the pull loop applies and flushes batch N+1 while the finisher publishes
    /// batch N's outbox and acknowledges it.
    async fn ingest_loop(&self, shutdown: CancellationToken) -> Result<(), Stop> {
        // Anything flushed but not yet published before a crash goes first.
        self.publish_outbox_until_done(None, &shutdown).await?;
        let (finish_sender, finish_receiver) = tokio::sync::mpsc::channel(FINISH_QUEUE);
        let pull = async {
            let result = self.pull_and_apply(&shutdown, finish_sender).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let finish = async {
            let result = self.finish(finish_receiver, &shutdown).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        };
        let (pull_result, finish_result) = tokio::join!(pull, finish);
        pull_result.and(finish_result)
    }

    /// Publishes each applied batch's outbox, then acknowledges the batch. Runs until the
    /// pull loop ends and everything it handed over is done.
    async fn finish(
        &self,
        mut receiver: tokio::sync::mpsc::Receiver<Finish>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        while let Some(done) = receiver.recv().await {
            self.publish_outbox_until_done(done.outbox_through, shutdown)
                .await?;
            for message in &done.messages {
                // A lost ack is harmless: the message comes back and is skipped as applied.
                if let Err(err) = message.send(AckKind::Ack, &self.in_flight).await {
                    tracing::warn!(error = %err, through = done.through, "acking LRS_IN failed; it will be redelivered and skipped");
                }
            }
            self.housekeeping.notify_one();
        }
        Ok(())
    }

    /// Pulls in explicit requests (wait for one message, then take what else is there, up to
    /// `max_batch`), so that at shutdown nothing is delivered to this process that it has not
    /// applied and acknowledged.
    async fn pull_and_apply(
        &self,
        shutdown: &CancellationToken,
        finish: tokio::sync::mpsc::Sender<Finish>,
    ) -> Result<(), Stop> {
        let mut puller = self.puller.lock().await;
        let mut snapshots = self.snapshots.lock().await;
        let mut pace = self.pace.lock().await;
        loop {
            // Between two batches: the snapshot is the database at one sequence. Never by
            // dropping a pull in flight: the messages it fetched would come back only after
            // ack_wait, and the watermark (every verdict) would wait for them.
            while let Some(Some(request)) = snapshots.next().now_or_never() {
                self.answer_snapshot(request).await;
            }
            let waited = pace.wait(shutdown).await;
            if !waited.is_zero() {
                crate::metrics::paced(waited);
                tracing::debug!(
                    waited_ms = waited.as_millis() as u64,
                    "waited for the projector beside this store"
                );
            }
            let pulled = puller.next(shutdown).await;
            let batch = match pulled {
                Pulled::Batch(batch) => batch,
                Pulled::Nothing if shutdown.is_cancelled() => return Ok(()),
                Pulled::Nothing => continue,
                Pulled::Failed => {
                    // A consumer made on another LRS_IN would take its messages for applied
                    // ones: check the stream first.
                    if self.stream_reachable_and_ours().await? {
                        puller.reopen().await;
                    }
                    continue;
                }
            };
            let gap = self.fill_gap(&batch).await;
            let (batch, waiting) = split_at_gap(batch, gap.open_from);
            self.hold_back(waiting, gap.open_from).await;
            if batch.is_empty() && gap.filled.is_empty() {
                continue;
            }
            let done = self.apply_with_retries(batch, gap.filled, shutdown).await?;
            if let Some(done) = done {
                finish
                    .send(done)
                    .await
                    .map_err(|_| anyhow::anyhow!("the finisher stopped"))?;
            }
        }
    }

    async fn answer_snapshot(&self, request: async_nats::Message) {
        let db = self.db.clone();
        bus::snapshot::answer(
            &self.client,
            request,
            "store",
            &self.config.replica,
            self.config.topology.stream_replicas,
            &self.config.data_dir.join("snapshot.out"),
            move |file| db.write_snapshot(file).map_err(|err| format!("{err:#}")),
        )
        .await;
    }

    /// The messages missing below a batch's last: a message delivered on a connection that
    /// died (a NATS node lost, a replica killed) comes back only after `ack_wait`, and until
    /// then the contiguous watermark, so every read and write verdict, would wait behind it.
    /// They are read from `LRS_IN` directly (at most 256) and applied in order with the
    /// batch; their redelivery is skipped as applied. What cannot be read now leaves the gap
    /// open ([`Gap::open_from`]) and the batch's later messages wait; a message `LRS_IN` no
    /// longer holds (deleted before this replica applied it) is passed over as applied.
    async fn fill_gap(&self, batch: &[jetstream::Message]) -> Gap {
        const MOST: usize = 256;
        let delivered: Vec<u64> = batch
            .iter()
            .filter_map(|message| message.info().ok().map(|info| info.stream_sequence))
            .collect();
        let mut gap = Gap {
            filled: Vec::new(),
            open_from: None,
        };
        let Ok(applied) = self.db.applied_sequence() else {
            // The database fails: applying the batch says so.
            return gap;
        };
        let gaps = missing(applied, &delivered, MOST + 1);
        let Some(&first) = gaps.first() else {
            return gap;
        };
        let Ok(stream) = self.js.get_stream(subjects::STREAM_IN).await else {
            gap.open_from = Some(first);
            return gap;
        };
        for (index, sequence) in gaps.into_iter().enumerate() {
            if index == MOST {
                gap.open_from = Some(sequence);
                break;
            }
            if self.db.is_applied(sequence).unwrap_or(false) {
                continue;
            }
            match stream.get_raw_message(sequence).await {
                Ok(message) => gap.filled.push(message),
                Err(err)
                    if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    // Never to be delivered again either: waiting would stop the store.
                    tracing::warn!(
                        sequence,
                        "LRS_IN no longer holds a message this replica did not apply; passed over"
                    );
                    if let Err(err) = self.db.pass_over(sequence) {
                        tracing::warn!(error = %err, sequence, "cannot pass over a deleted message");
                        gap.open_from = Some(sequence);
                        break;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, sequence, "a gap's message not read");
                    gap.open_from = Some(sequence);
                    break;
                }
            }
        }
        if !gap.filled.is_empty() {
            tracing::debug!(
                from = applied + 1,
                count = gap.filled.len(),
                "filled a gap in a batch"
            );
        }
        gap
    }

    /// Gives back the messages that wait behind a gap: JetStream delivers them again shortly,
    /// by when the gap's own message may be there.
    async fn hold_back(&self, waiting: Vec<jetstream::Message>, open_from: Option<u64>) {
        if waiting.is_empty() {
            return;
        }
        tracing::info!(
            messages = waiting.len(),
            sequence = open_from,
            "messages wait for an earlier LRS_IN message to be applied first"
        );
        for message in &waiting {
            // A lost nak only delays the message until `ack_wait`.
            let _ = message.ack_with(AckKind::Nak(Some(HOLD_BACK))).await;
            self.in_flight.done(message);
        }
    }

    /// After a failed pull: whether NATS answers and `LRS_IN` is still the stream this store
    /// applied (another one stops the store).
    async fn stream_reachable_and_ours(&self) -> Result<bool, Stop> {
        if let Err(err) = subjects::ensure_streams(&self.js, &self.config.topology).await {
            tracing::debug!(error = %err, "streams not reachable yet");
            return Ok(false);
        }
        Ok(check_stream(&self.js, &self.db, false).await?.is_some())
    }

    /// Applies a batch; a database error is retried a few times with a pause (a full disk
    /// may be cleared), since skipping ahead would apply later messages first.
    async fn apply_with_retries(
        &self,
        batch: Vec<jetstream::Message>,
        filled: Vec<jetstream::message::StreamMessage>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Finish>, Stop> {
        let batch = Arc::new(batch);
        let filled = Arc::new(filled);
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        loop {
            match self.apply_batch(batch.clone(), filled.clone()).await {
                Ok(done) => return Ok(done),
                Err(err) if attempt < APPLY_ATTEMPTS => {
                    tracing::warn!(error = %format!("{err:#}"), attempt, "applying a batch failed; retrying");
                    attempt += 1;
                    if !backoff.wait(shutdown).await {
                        return Ok(None);
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Applies and flushes a batch and announces it; returns what the finisher still owes it.
    async fn apply_batch(
        &self,
        batch: Arc<Vec<jetstream::Message>>,
        filled: Arc<Vec<jetstream::message::StreamMessage>>,
    ) -> Result<Option<Finish>, Stop> {
        let db = self.db.clone();
        let validator = self.validator.clone();
        let started = std::time::Instant::now();
        let limits = self.config.limits.clone();
        let applying = batch.clone();
        let alone = self.config.topology.stores.len() != 1;
        // Messages read to fill a gap have events to publish even when the whole batch waits.
        let any_filled = !filled.is_empty();
        let (through, verdicts, outbox_through, flush_started) =
            tokio::task::spawn_blocking(move || {
                let mut verdicts = Vec::new();
                // In the log's order, whatever the delivery's: a message redelivered after
                // `ack_wait` can come in one pull after later ones.
                let mut arriving: Vec<Arriving> = filled
                    .iter()
                    .map(Arriving::fetched)
                    .chain(applying.iter().filter_map(Arriving::delivered))
                    .collect();
                arriving.sort_by_key(|arrived| arrived.sequence);
                let sizes: Vec<(u64, usize)> = arriving
                    .iter()
                    .map(|arrived| (arrived.sequence, arrived.payload.len()))
                    .collect();
                for (arrived, run) in arriving.into_iter().zip(runs(&sizes, alone)) {
                    let sequence = arrived.sequence;
                    let incoming = Incoming {
                        sequence,
                        subject: arrived.subject,
                        payload: arrived.payload,
                        published: arrived.published,
                        run,
                    };
                    let parsed =
                        ingest::check_source(incoming.subject, arrived.source).and_then(|()| {
                            ingest::decode(
                                incoming.subject,
                                incoming.payload,
                                arrived.version,
                                arrived.parts,
                                &limits,
                            )
                        });
                    let statements = match &parsed {
                        Ok(ingest::Ingest::Statements(batch)) => Some(vec![batch.statements.len()]),
                        Ok(ingest::Ingest::Bundle(parts)) => {
                            Some(parts.iter().map(|part| part.statements.len()).collect())
                        }
                        Ok(_) => None,
                        Err(_) => bus::subjects::ingest_source(incoming.subject).map(|_| vec![1]),
                    };
                    let applying = std::time::Instant::now();
                    let verdict = db.apply(&incoming, parsed, &validator)?;
                    crate::metrics::applied(
                        &incoming,
                        statements.as_deref(),
                        &verdict,
                        applying.elapsed(),
                    );
                    if verdict != Verdict::Applied {
                        match &verdict {
                            // An erasure logs itself (counts only).
                            Verdict::Erased { .. } => {}
                            Verdict::Credential { credential } => tracing::info!(
                                sequence,
                                key = %credential.key,
                                "credential changed"
                            ),
                            refused => tracing::info!(
                                sequence,
                                subject = incoming.subject,
                                verdict = ?refused,
                                "message not applied"
                            ),
                        }
                        verdicts.push((sequence, verdict));
                    }
                }
                let flush_started = std::time::Instant::now();
                // Only what this flush covers may be published: a later batch's events could
                // still be lost to a crash.
                // Announce the contiguous watermark, not the highest sequence: a message that
                // comes back after a later one must not be reported applied early.
                let through = db.applied_sequence()?;
                let outbox_through = db.last_outbox_key()?;
                db.flush()?;
                crate::metrics::flushed(&db, through, flush_started.elapsed());
                Ok::<_, DbError>((through, verdicts, outbox_through, flush_started))
            })
            .await
            .context("apply task")??;
        // Durable in sled: readers may see it now; the ack can follow.
        self.applied.send_replace(through);
        let credentials_changed = verdicts
            .iter()
            .any(|(_, verdict)| matches!(verdict, Verdict::Credential { .. }));
        self.announce(through, verdicts).await;
        if credentials_changed {
            // Gateways reload their copy.
            // With the sequence that made it: gateways reload from a replica that has it.
            if let Err(err) = self
                .client
                .publish(subjects::CREDENTIALS_CHANGED, through.to_string().into())
                .await
            {
                tracing::warn!(error = %err, "cannot announce a credential change");
            }
        }
        tracing::debug!(
            messages = batch.len(),
            through,
            apply_us = (flush_started - started).as_micros() as u64,
            flush_us = flush_started.elapsed().as_micros() as u64,
            "batch applied"
        );
        // What the finisher acknowledges, without the payloads it no longer needs.
        let messages: Vec<Ack> = Arc::try_unwrap(batch)
            .unwrap_or_else(|shared| (*shared).clone())
            .into_iter()
            .map(Ack::from)
            .collect();
        Ok((!messages.is_empty() || any_filled).then_some(Finish {
            messages,
            through,
            outbox_through,
        }))
    }

    /// Says `lrs.applied`, in as many messages as the verdicts need: every one but the last
    /// carries no watermark, so a gateway never sees a sequence applied before its verdict.
    async fn announce(&self, through: u64, verdicts: Vec<(u64, Verdict)>) {
        let budget = self.db.message_budget();
        let mut chunks: Vec<Vec<(u64, Verdict)>> = vec![Vec::new()];
        let mut size = 64;
        for verdict in verdicts {
            let length = serde_json::to_vec(&verdict).map_or(0, |bytes| bytes.len()) + 1;
            if size + length > budget && chunks.last().is_some_and(|chunk| !chunk.is_empty()) {
                chunks.push(Vec::new());
                size = 64;
            }
            size += length;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(verdict);
            }
        }
        let last = chunks.len() - 1;
        for (index, verdicts) in chunks.into_iter().enumerate() {
            let applied = Applied {
                through: if index == last { through } else { 0 },
                verdicts,
            };
            let Ok(announcement) = serde_json::to_vec(&applied) else {
                continue;
            };
            // Core NATS: a lost announcement costs a gateway one verdict request.
            if let Err(err) = self
                .client
                .publish(subjects::APPLIED, announcement.into())
                .await
            {
                tracing::warn!(error = %err, "announcing the applied watermark failed");
            }
        }
    }
}

/// Asks for the demo credential through `LRS_IN` (every replica makes it, and only on a
/// store without credentials). The message id makes replicas started together write it once.
async fn bootstrap(
    js: &jetstream::Context,
    record: bus::access::CredentialRecord,
) -> anyhow::Result<()> {
    let key = record.key.clone();
    let change = bus::access::CredentialChange::Bootstrap { record };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(bus::MSG_ID_HEADER, format!("bootstrap-{key}").as_str());
    js.publish_with_headers(
        subjects::IN_CREDENTIALS,
        headers,
        serde_json::to_vec(&change)?.into(),
    )
    .await
    .context("asking for the demo credential")?
    .await
    .context("asking for the demo credential")?;
    tracing::warn!(%key, "no credentials yet: the demo credential is being made");
    Ok(())
}

/// Checks that `LRS_IN` is the stream the store applied (see [`crate::identity`]). `Ok(None)`
/// when NATS did not answer (try again later).
async fn check_stream(
    js: &jetstream::Context,
    db: &Arc<Db>,
    adopt: bool,
) -> Result<Option<()>, Stop> {
    let info = match js.get_stream(subjects::STREAM_IN).await {
        Ok(mut stream) => stream.info().await.cloned(),
        Err(err) => {
            tracing::debug!(error = %err, "LRS_IN not reachable");
            return Ok(None);
        }
    };
    let Ok(info) = info else {
        return Ok(None);
    };
    let state = StreamState {
        created_ns: info.created.unix_timestamp_nanos(),
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
    };
    let db = db.clone();
    let checked = tokio::task::spawn_blocking(move || db.check_stream(&state, adopt))
        .await
        .context("stream check task")??;
    match checked? {
        StreamCheck::Same => {}
        StreamCheck::Recorded => tracing::info!("recorded the LRS_IN this store applies"),
        StreamCheck::Adopted => tracing::warn!("took over a new LRS_IN (--adopt-new-stream)"),
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::{missing, runs, RUN_BYTES, RUN_MESSAGES};

    #[test]
    fn a_sole_replica_groups_small_messages_in_runs_and_one_of_several_does_not() {
        // Single statements: runs of RUN_MESSAGES.
        let small: Vec<(u64, usize)> = (10..10 + RUN_MESSAGES as u64 + 3)
            .map(|sequence| (sequence, 1_200))
            .collect();
        let grouped = runs(&small, false);
        assert_eq!(grouped.len(), small.len());
        assert!(grouped[..RUN_MESSAGES].iter().all(|run| *run == Some(10)));
        assert!(grouped[RUN_MESSAGES..]
            .iter()
            .all(|run| *run == Some(10 + RUN_MESSAGES as u64)));
        // Until their bytes would pass RUN_BYTES; a message larger than that goes alone.
        let mixed = [
            (1, RUN_BYTES / 2),
            (2, RUN_BYTES / 2),
            (3, 1),
            (4, RUN_BYTES * 2),
            (5, 10),
            (6, 10),
        ];
        assert_eq!(
            runs(&mixed, false),
            vec![Some(1), Some(1), Some(3), Some(4), Some(5), Some(5)]
        );
        assert_eq!(runs(&mixed, true), vec![None; 6]);
        assert!(runs(&[], false).is_empty());
    }

    #[test]
    fn a_batch_is_applied_with_every_sequence_missing_below_its_last() {
        // In order, nothing missing.
        assert_eq!(missing(10, &[11, 12, 13], 256), Vec::<u64>::new());
        // Redelivered after later ones (the delivery's order is not the log's).
        assert_eq!(missing(10, &[13, 11, 12], 256), Vec::<u64>::new());
        // Below the batch, and inside it.
        assert_eq!(missing(10, &[13, 16], 256), vec![11, 12, 14, 15]);
        // At most `most` of them, the first ones.
        assert_eq!(missing(10, &[20], 3), vec![11, 12, 13]);
        // Already applied: nothing.
        assert_eq!(missing(10, &[5, 9], 256), Vec::<u64>::new());
        assert_eq!(missing(10, &[], 256), Vec::<u64>::new());
    }
}
