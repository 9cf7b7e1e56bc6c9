//! The projector on NATS: pull and read `LRS_STORED` (beside the apply: [`crate::pulls`]) ->
//! apply (behind: [`crate::overlay`]) -> a checkpoint writes and flushes -> ack; answer summary queries on `lrs.api.summaries`; say
//! how far it applied, for the store beside it to wait by ([`bus::pace`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use bus::pull::{Ack, InFlight, Pulled, Puller};
use bus::subjects;
use bus::wire::{SummaryQuery, SummaryReply};
use futures::{FutureExt as _, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::compact::{Compaction, Step};
use crate::projection::{Projection, ProjectionError};
use crate::pulls::{Pull, APPLY_EVENTS};
use crate::rebuild::Current;
use crate::summary::MonthRange;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Folder of the projector's sled database.
    pub data_dir: PathBuf,
    pub max_batch: usize,
    pub ack_wait: Duration,
    /// This projector replica's name: its durable consumer of `LRS_STORED`.
    pub replica: String,
    pub topology: subjects::Topology,
    /// Start this (new, empty) replica from a snapshot of a healthy one.
    pub from_snapshot: bool,
    /// sled's page cache for the database, in bytes.
    pub cache_bytes: u64,
}

pub struct Projector {
    client: async_nats::Client,
    /// Messages pulled and not yet acknowledged, kept "in progress" for JetStream.
    in_flight: InFlight,
    /// The database in use; a rebuild swaps it.
    projection: Current,
    /// `LRS_STORED`, pulled with the projector's durable consumer.
    puller: tokio::sync::Mutex<Puller>,
    config: ProjectorConfig,
    /// Messages applied behind, acknowledged after the checkpoint that writes them.
    held: std::sync::Mutex<Vec<Ack>>,
    /// Asks for a checkpoint before [`CHECKPOINT_EVERY`] is up (the overlay is full).
    checkpoint_due: tokio::sync::Notify,
    /// The last `LRS_STORED` sequence applied, announced to the store beside this projector
    /// ([`bus::pace`]).
    progress: bus::pace::Highest,
}

/// The most summaries one list page returns.
pub const MAX_PAGE: usize = 500;

impl Projector {
    pub async fn build(
        client: async_nats::Client,
        config: ProjectorConfig,
    ) -> anyhow::Result<Projector> {
        let path = crate::rebuild::active_path(&config.data_dir);
        crate::rebuild::remove_unfinished(&config.data_dir, &path);
        let js = jetstream::new(client.clone());
        subjects::ensure_streams(&js, &config.topology).await?;
        let consumer = subjects::projector_consumer(&config.replica);
        let (opening, cache_bytes) = (path.clone(), config.cache_bytes);
        let tree =
            tokio::task::spawn_blocking(move || Projection::open_tree(&opening, cache_bytes))
                .await
                .context("opening sled")?
                .context("opening the projector database (is another projector running on it?)")?;
        if config.from_snapshot {
            // The consumer first: what comes after the snapshot then stays in LRS_STORED
            // until this replica applied it.
            bus::pull::durable(&js, subjects::STREAM_STORED, &consumer, config.ack_wait)
                .await
                .context("the new replica's durable consumer on LRS_STORED")?;
            std::fs::create_dir_all(&config.data_dir)?;
            let file = config.data_dir.join("snapshot.in");
            let reply = bus::snapshot::fetch(
                &client,
                subjects::API_SNAPSHOT_PROJECTOR,
                &config.replica,
                config.topology.stream_replicas,
                &file,
            )
            .await
            .context("a snapshot from a projector replica")?;
            let (into, at, loading) = (tree.clone(), path.clone(), file.clone());
            let entries = tokio::task::spawn_blocking(move || {
                Projection::load_snapshot(&into, &at, &loading)
            })
            .await
            .context("loading the snapshot")?
            .map_err(anyhow::Error::msg)?;
            std::fs::remove_file(&file).ok();
            tracing::info!(from = %reply.from, applied = reply.applied, entries, "started from a snapshot; applying LRS_STORED after it");
        }
        let projection =
            tokio::task::spawn_blocking(move || Projection::from_tree(tree, &path, cache_bytes))
                .await
                .context("opening sled")?
                .context("opening the projector database")?;
        let puller = Puller::open(
            client.clone(),
            subjects::STREAM_STORED,
            &consumer,
            config.ack_wait,
            config.max_batch,
        )
        .await
        .context("the projector's durable consumer on LRS_STORED")?;
        Ok(Projector {
            in_flight: puller.in_flight(),
            puller: tokio::sync::Mutex::new(puller),
            client,
            projection: Current::new(projection),
            config,
            held: Default::default(),
            checkpoint_due: tokio::sync::Notify::new(),
            progress: bus::pace::Highest::default(),
        })
    }

    /// This projector's summaries for a gateway in the same process: the answers it gives
    /// over NATS, without the trip through nats-server ([`bus::request::ask_here_first`]).
    pub fn here(&self) -> Arc<dyn bus::request::Here> {
        Arc::new(Here {
            projection: self.projection.downgrade(),
            gate: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_QUERIES)),
            budget: reply_budget(&self.client),
        })
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let api = serve_api(
            self.client.clone(),
            self.projection.clone(),
            shutdown.clone(),
        );
        let pull = self.pull_and_apply(&shutdown);
        let progress = bus::pull::keep_in_progress(
            self.client.clone(),
            self.in_flight.clone(),
            self.config.ack_wait,
            shutdown.clone(),
        );
        let status = self.answer_status(shutdown.clone());
        let checkpoints = stops_all(self.checkpoints(&shutdown), &shutdown);
        let announce = bus::pace::announce_progress(
            self.client.clone(),
            self.config.replica.clone(),
            self.progress.clone(),
            shutdown.clone(),
        );
        let (api_result, pull_result, (), status_result, checkpoints_result, ()) =
            tokio::join!(api, pull, progress, status, checkpoints, announce);
        if let Err(err) = status_result {
            tracing::warn!(error = %err, "replica status not answered");
        }
        // What was applied behind, written and acknowledged before the end.
        let last = self.checkpoint().await;
        let projection = self.projection.get();
        tokio::task::spawn_blocking(move || projection.flush())
            .await
            .context("final flush")??;
        api_result
            .and(pull_result)
            .and(checkpoints_result)
            .and(last)
    }

    /// Checkpoints every [`CHECKPOINT_EVERY`], or sooner when the overlay is full, until
    /// shutdown.
    async fn checkpoints(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.checkpoint_due.notified() => {}
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            self.checkpoint().await?;
        }
    }

    /// Writes what was applied behind to sled and flushes ([`Projection::checkpoint`]), then
    /// acknowledges the messages it held: after it, every message applied before it is
    /// acknowledged. One at a time (the projection's own lock); reads go on meanwhile, and
    /// its sled batches wait while a part is applied ([`crate::overlay::Applying`]).
    async fn checkpoint(&self) -> anyhow::Result<()> {
        // Taken before the freeze: each was applied before it, so the checkpoint writes it.
        let messages = std::mem::take(
            &mut *self
                .held
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let projection = self.projection.get();
        if messages.is_empty() && !projection.is_behind() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let writes = tokio::task::spawn_blocking(move || projection.checkpoint())
            .await
            .context("checkpoint task")?
            .context("writing the projector's checkpoint")?;
        let written = started.elapsed();
        for message in &messages {
            // A lost ack is harmless: the message comes back and changes nothing twice.
            if let Err(err) = message.send(AckKind::Ack, &self.in_flight).await {
                tracing::warn!(error = %err, "acking LRS_STORED failed; it will be redelivered");
            }
        }
        tracing::debug!(
            messages = messages.len(),
            writes,
            written_ms = written.as_millis() as u64,
            acked_ms = (started.elapsed() - written).as_millis() as u64,
            "checkpoint written"
        );
        Ok(())
    }

    /// Pulls, reads and applies until shutdown: [`Projector::pull_and_read`] beside
    /// [`Projector::apply_pulls`] ([`crate::pulls`]). A NATS outage pauses it (the client
    /// reconnects; the durable consumer is made again if it went); a message it cannot read is
    /// parked, not skipped; it stops on its own only when its database fails.
    async fn pull_and_apply(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (pulls, taken) = tokio::sync::mpsc::unbounded_channel();
        // Either side's end ends the other: the reader at shutdown, the applier when the
        // reader's pulls end.
        let (read, applied) = tokio::join!(
            stops_all(self.pull_and_read(pulls, shutdown), shutdown),
            stops_all(self.apply_pulls(taken), shutdown)
        );
        read.and(applied)
    }

    /// Pulls `LRS_STORED` and reads each pull on a blocking thread as it arrives, while the
    /// pulls read before are applied; at most [`crate::pulls::AHEAD_EVENTS`] wait read. Ends
    /// at shutdown (a batch begun is completed and handed on) or when nothing applies.
    ///
    /// A pull takes what is there and does not wait for more: the applying side takes every
    /// pull read meanwhile at once, so small pulls make no small parts while it is busy. (The
    /// projector's pulls lingered 25 ms after a lone first message, when each pull was a part
    /// and a sled flush; reading beside the apply, that wait put a message read after the
    /// apply that could have taken it, and the lag p99 under HTTP batches halved without it:
    /// BENCHMARKS.md, the fiftieth round.)
    async fn pull_and_read(
        &self,
        pulls: tokio::sync::mpsc::UnboundedSender<Pull>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut puller = self.puller.lock().await;
        let ahead = crate::pulls::ahead();
        loop {
            let pulling = std::time::Instant::now();
            let pulled = puller.next(shutdown).await;
            let waited = pulling.elapsed();
            let batch = match pulled {
                Pulled::Batch(batch) => batch,
                Pulled::Nothing if shutdown.is_cancelled() || pulls.is_closed() => return Ok(()),
                Pulled::Nothing => continue,
                Pulled::Failed => {
                    puller.reopen().await;
                    continue;
                }
            };
            let mut pull = tokio::task::spawn_blocking(move || Pull::read(batch, waited))
                .await
                .context("reading task")?;
            pull.hold(&ahead).await;
            if pulls.send(pull).is_err() {
                // The applying side stopped (its error ends the projector).
                return Ok(());
            }
        }
    }

    /// Applies what [`Projector::pull_and_read`] read, every pull read meanwhile at once, in
    /// parts of at most [`APPLY_EVENTS`] statements written behind (acknowledged after the
    /// checkpoint that writes them); between two, what waits: a rebuild, a snapshot, a
    /// compaction's step. Ends when the reading side has ended.
    async fn apply_pulls(
        &self,
        mut taken: tokio::sync::mpsc::UnboundedReceiver<Pull>,
    ) -> anyhow::Result<()> {
        let mut rebuilds = self
            .client
            .queue_subscribe(subjects::API_REBUILD, subjects::SUMMARY_QUEUE.to_owned())
            .await?;
        let mut snapshots = self
            .client
            .queue_subscribe(
                subjects::API_SNAPSHOT_PROJECTOR,
                subjects::SUMMARY_QUEUE.to_owned(),
            )
            .await?;
        // A database made before the programme figures (or whose hubs held workers their
        // learner groups did not) is rebuilt once (retried while the store cannot answer);
        // its summaries are answered meanwhile.
        let mut upgrade_at = self
            .projection
            .get()
            .needs_rebuild()?
            .then(std::time::Instant::now);
        let mut compaction = Compaction::default();
        let mut last_applied = std::time::Instant::now();
        loop {
            if upgrade_at.is_some_and(|at| at <= std::time::Instant::now()) {
                self.checkpoint().await?;
                self.compaction_abandoned(&mut compaction).await;
                tracing::info!("this database is not complete (it predates the programme figures, or its hubs' workers were not all in their learner groups); rebuilding it");
                match crate::rebuild::rebuild(&self.client, &self.config.data_dir, &self.projection)
                    .await
                {
                    Ok(report) => {
                        tracing::info!(statements = report.statements, "upgrade rebuild done");
                        upgrade_at = None;
                    }
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), "upgrade rebuild failed; trying again in 30 s");
                        upgrade_at =
                            Some(std::time::Instant::now() + std::time::Duration::from_secs(30));
                    }
                }
            }
            // Between two batches, what waits: a rebuild, a snapshot (the database at one
            // sequence). Never by dropping a pull in flight: the messages it fetched would
            // come back only after ack_wait, after later ones.
            while let Some(Some(request)) = rebuilds.next().now_or_never() {
                // Maintenance reads and replaces sled: nothing may wait behind it.
                self.checkpoint().await?;
                match maintenance_action(&request).as_deref() {
                    Some("compact") => compaction.ask(request.reply),
                    Some("replay_parked" | "list_parked") => self.answer_maintenance(request).await,
                    // A rebuild replaces the database a copy reads.
                    None | Some("rebuild") => {
                        self.compaction_abandoned(&mut compaction).await;
                        self.answer_maintenance(request).await;
                    }
                    Some(other) => self.refuse_maintenance(request.reply, other).await,
                }
            }
            if compaction.is_copying() {
                // A copy's pause needs every write in sled, and none under way.
                self.checkpoint().await?;
            }
            self.compaction_step(&mut compaction, last_applied.elapsed())
                .await;
            while let Some(Some(request)) = snapshots.next().now_or_never() {
                self.checkpoint().await?;
                self.answer_snapshot(request).await;
            }
            let first = tokio::select! {
                pull = taken.recv() => pull,
                // Nothing for a while: what waits between two applies is looked at again.
                _ = tokio::time::sleep(bus::pull::PULL_WAIT) => continue,
            };
            let Some(first) = first else {
                // The reading side ended: shutdown, or its error.
                return Ok(());
            };
            let mut pulls = vec![first];
            while let Ok(more) = taken.try_recv() {
                pulls.push(more);
            }
            let waited = pulls[0].waited;
            let projection = self.projection.get();
            let applying = std::time::Instant::now();
            let progress = self.progress.clone();
            let (batch, statements) = tokio::task::spawn_blocking(move || {
                let mut batch = Vec::new();
                let mut read = Vec::new();
                for pull in pulls {
                    for unreadable in &pull.unreadable {
                        // Kept with the reason for `leerspoor project --replay-parked`.
                        tracing::error!(sequence = unreadable.sequence, error = %unreadable.reason, "unreadable LRS_STORED message parked");
                        projection.park(
                            unreadable.sequence,
                            &unreadable.reason,
                            &unreadable.payload,
                        )?;
                    }
                    let Pull { messages, read: each, .. } = pull;
                    batch.extend(messages);
                    read.extend(each);
                }
                let statements = read.iter().map(|read| read.events).sum::<usize>();
                for part in crate::pulls::parts(read, APPLY_EVENTS) {
                    projection.apply_behind(&part)?;
                    // Each part's last sequence is how far this projector applied, for its
                    // store.
                    if let Some((sequence, _)) = part.last() {
                        progress.record(*sequence);
                    }
                }
                Ok::<_, ProjectionError>((batch, statements))
            })
            .await
            .context("apply task")??;
            let applied = applying.elapsed();
            let projection = self.projection.get();
            record_applied(&batch, &projection);
            if let Some(last) = batch
                .iter()
                .filter_map(|message| message.info().ok())
                .map(|info| info.stream_sequence)
                .max()
            {
                // Parked messages too: they are done with.
                self.progress.record(last);
            }
            last_applied = std::time::Instant::now();
            let messages = batch.len();
            self.held
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend(batch.into_iter().map(Ack::from));
            let behind = projection.behind_bytes();
            if behind >= 2 * BEHIND_BYTES {
                // Checkpoints fall behind the pulls: this pull waits for one.
                self.checkpoint().await?;
            } else if behind >= BEHIND_BYTES {
                self.checkpoint_due.notify_one();
            }
            tracing::debug!(
                messages,
                statements,
                waited_ms = waited.as_millis() as u64,
                applied_ms = applied.as_millis() as u64,
                behind_bytes = behind,
                "LRS_STORED batch applied"
            );
        }
    }
}

impl Projector {
    async fn answer_snapshot(&self, request: async_nats::Message) {
        let projection = self.projection.get();
        bus::snapshot::answer(
            &self.client,
            request,
            "projector",
            &self.config.replica,
            self.config.topology.stream_replicas,
            &self.config.data_dir.join("snapshot.out"),
            move |file| projection.write_snapshot(file),
        )
        .await;
    }

    /// Answers `lrs.api.replicas` (`leerspoor replicas`) until `shutdown`.
    async fn answer_status(
        &self,
        shutdown: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let js = jetstream::new(self.client.clone());
        let replica = self.config.replica.clone();
        bus::request::answer_each(
            self.client.clone(),
            subjects::API_REPLICAS,
            shutdown,
            |payload| {
                let request: bus::wire::ReplicasRequest =
                    serde_json::from_slice(&payload).unwrap_or_default();
                let projection = self.projection.get();
                let (js, replica) = (js.clone(), replica.clone());
                async move {
                    let stream_last = bus::pull::stream_last(&js, subjects::STREAM_STORED).await;
                    // `applied` is the highest sequence applied: a message delivered to a
                    // projector that died comes back after later ones, so what the consumer
                    // still holds unacknowledged counts as lag too.
                    let unacknowledged = bus::health::consumer_state(
                        &js,
                        subjects::STREAM_STORED,
                        &subjects::projector_consumer(&replica),
                    )
                    .await
                    .ok()
                    .map(|state| state.lag());
                    let computed = tokio::task::spawn_blocking(move || {
                        if request.digest {
                            projection
                                .digest()
                                .map(|(applied, items, digest)| (applied, Some((items, digest))))
                        } else {
                            projection.applied().map(|applied| (applied, None))
                        }
                    })
                    .await;
                    let (applied, digest, error) = match computed {
                        Ok(Ok((applied, digest))) => (applied, digest, None),
                        Ok(Err(err)) => (0, None, Some(err.to_string())),
                        Err(err) => (0, None, Some(err.to_string())),
                    };
                    let status = bus::wire::ReplicaStatus {
                        kind: "projector".into(),
                        consumer: subjects::projector_consumer(&replica),
                        name: replica,
                        stream: subjects::STREAM_STORED.into(),
                        applied,
                        stream_last,
                        lag: stream_last.map(|last| {
                            last.saturating_sub(applied)
                                .max(unacknowledged.unwrap_or(0))
                        }),
                        items: digest.as_ref().map(|(items, _)| *items),
                        digest: digest.map(|(_, digest)| digest),
                        error,
                    };
                    serde_json::to_vec(&status).unwrap_or_default()
                }
            },
        )
        .await
    }

    /// Between two batches: a compaction finished or started (see [`crate::compact`]).
    async fn compaction_step(&self, compaction: &mut Compaction, quiet_for: Duration) {
        match compaction
            .step(&self.projection, &self.config.data_dir, quiet_for)
            .await
        {
            Step::Nothing => {}
            Step::Started { bytes } => {
                tracing::info!(bytes, "copying the projector's database into a fresh one");
            }
            Step::Done(done, waiting) => {
                let reply = match done {
                    Ok(report) if report.kept_back => {
                        tracing::info!(
                            bytes_in_use = report.bytes_before,
                            bytes_of_copy = report.bytes_after,
                            "a copy of the projector's database removed, the database in use \
                             stays{}",
                            report.why()
                        );
                        serde_json::json!({ "ok": report })
                    }
                    Ok(report) => {
                        tracing::info!(
                            bytes_before = report.bytes_before,
                            bytes_after = report.bytes_after,
                            entries = report.entries,
                            rounds = report.rounds,
                            written_in_pause = report.written_in_pause,
                            seconds = report.seconds,
                            pause_seconds = report.pause_seconds,
                            "the projector's database compacted"
                        );
                        serde_json::json!({ "ok": report })
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "compaction failed; the database in use stays");
                        serde_json::json!({ "error": err.to_string() })
                    }
                };
                self.reply_all(waiting, &reply).await;
            }
        }
    }

    /// Gives up a compaction under way (before a rebuild), telling whoever waited for it.
    async fn compaction_abandoned(&self, compaction: &mut Compaction) {
        let waiting = compaction.abandon();
        let reply =
            serde_json::json!({"error": "a rebuild came first; the compaction was abandoned"});
        self.reply_all(waiting, &reply).await;
    }

    async fn reply_all(&self, waiting: Vec<async_nats::Subject>, reply: &Value) {
        let body = serde_json::to_vec(reply).unwrap_or_default();
        for reply_to in waiting {
            if let Err(err) = self.client.publish(reply_to, body.clone().into()).await {
                tracing::warn!(error = %err, "cannot answer a compaction request");
            }
        }
    }

    /// Maintenance between batches (so nothing is applied meanwhile): a rebuild (an empty
    /// request or `{}`), or `{"action": "replay_parked"}`.
    async fn answer_maintenance(&self, request: async_nats::Message) {
        let action = maintenance_action(&request);
        let projection = self.projection.get();
        let outcome = match action.as_deref() {
            Some("replay_parked") => tokio::task::spawn_blocking(move || {
                projection.replay_parked().map(|(applied, left)| {
                    tracing::info!(applied, left, "parked LRS_STORED messages replayed");
                    serde_json::json!({"applied": applied, "still_parked": left})
                })
            })
            .await,
            Some("list_parked") => tokio::task::spawn_blocking(move || {
                projection.parked().map(|parked| {
                    let listed: Vec<Value> = parked
                        .iter()
                        .map(|one| serde_json::json!({"sequence": one.sequence, "reason": one.reason, "bytes": one.payload.len()}))
                        .collect();
                    serde_json::json!({ "parked": listed })
                })
            })
            .await,
            _ => return self.answer_rebuild(request).await,
        };
        let reply = match outcome {
            Ok(Ok(report)) => serde_json::json!({ "ok": report }),
            Ok(Err(err)) => serde_json::json!({"error": err.to_string()}),
            Err(err) => serde_json::json!({"error": err.to_string()}),
        };
        if let Some(reply_to) = request.reply {
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(err) = self.client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %err, "cannot answer the replay request");
            }
        }
    }

    /// Answers a maintenance request this projector does not know (from a newer
    /// `leerspoor`): an error naming what it knows, rather than a rebuild nobody asked for.
    async fn refuse_maintenance(&self, reply: Option<async_nats::Subject>, action: &str) {
        tracing::warn!(
            action,
            "a maintenance request this projector does not know; refused"
        );
        let Some(reply_to) = reply else {
            return;
        };
        let refusal = serde_json::json!({"error": format!(
            "this projector does not know the maintenance action {action:?} \
             (it knows rebuild, compact, replay_parked and list_parked)"
        )});
        let body = serde_json::to_vec(&refusal).unwrap_or_default();
        if let Err(err) = self.client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %err, "cannot answer the maintenance request");
        }
    }

    /// Runs a rebuild and replies with its report or its error.
    async fn answer_rebuild(&self, request: async_nats::Message) {
        tracing::info!("rebuilding every summary from the stored statements");
        let started = std::time::Instant::now();
        let outcome =
            crate::rebuild::rebuild(&self.client, &self.config.data_dir, &self.projection).await;
        let reply = match &outcome {
            Ok(report) => {
                tracing::info!(
                    statements = report.statements,
                    seconds = started.elapsed().as_secs_f64(),
                    "rebuild done"
                );
                serde_json::json!({"ok": report})
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "rebuild failed; the old summaries stay");
                serde_json::json!({"error": format!("{err:#}")})
            }
        };
        if let Some(reply_to) = request.reply {
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(err) = self.client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %err, "cannot answer the rebuild request");
            }
        }
    }
}

async fn serve_api(
    client: async_nats::Client,
    projection: Current,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let requests = client
        .queue_subscribe(subjects::API_SUMMARIES, subjects::SUMMARY_QUEUE.to_owned())
        .await?;
    let handle_all = requests.for_each_concurrent(CONCURRENT_QUERIES, |request| {
        let client = client.clone();
        let projection = projection.get();
        async move {
            let Some(reply_to) = request.reply.clone() else {
                return;
            };
            let payload = request.payload.clone();
            let budget = reply_budget(&client);
            let answer =
                tokio::task::spawn_blocking(move || answer(&projection, &payload, budget)).await;
            let Ok(body) = answer else {
                tracing::error!("summary task failed");
                return;
            };
            if let Err(err) = client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %err, "cannot send summary reply");
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = handle_all => Ok(()),
    }
}

/// Summary queries answered at a time, over NATS and in process each.
const CONCURRENT_QUERIES: usize = 16;

/// The bytes a summary reply may take: one NATS message, less room for its headers.
fn reply_budget(client: &async_nats::Client) -> usize {
    client
        .server_info()
        .max_payload
        .saturating_sub(bus::HEADROOM)
}

/// The projector's side of [`bus::request::Here`]: summaries need no applied sequence (they
/// follow the store), so every query is answered here while the projector runs (it does not
/// keep the database open after the projector stopped).
struct Here {
    projection: crate::rebuild::Weak,
    gate: Arc<tokio::sync::Semaphore>,
    budget: usize,
}

impl bus::request::Here for Here {
    fn answer(
        &self,
        _subject: &'static str,
        payload: bytes::Bytes,
        _min_applied: u64,
    ) -> futures::future::BoxFuture<'static, Option<bytes::Bytes>> {
        let (projection, gate, budget) = (self.projection.get(), self.gate.clone(), self.budget);
        Box::pin(async move {
            let projection = projection?;
            let _permit = gate.acquire_owned().await.ok()?;
            tokio::task::spawn_blocking(move || answer(&projection, &payload, budget))
                .await
                .map_err(|err| tracing::error!(error = %err, "summary task failed"))
                .ok()
                .map(Into::into)
        })
    }
}

/// How often what was applied behind is written to sled and its messages acknowledged
/// ([`crate::overlay`]): a key written by the pulls in between reaches sled once.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bytes of keys and values applied behind after which a checkpoint starts at once; at twice
/// this the pulls wait for one. Bounds the overlay's memory whatever the pace, and how long a
/// checkpoint waits for the parts being applied ([`crate::overlay::Applying`]).
const BEHIND_BYTES: usize = 16 * 1024 * 1024;

fn answer(projection: &Arc<Projection>, payload: &[u8], budget: usize) -> Vec<u8> {
    let reply = match serde_json::from_slice::<SummaryQuery>(payload) {
        Ok(query) => run_query(projection, query, budget).unwrap_or_else(|err| {
            tracing::error!(error = %err, "summary query failed");
            SummaryReply::Error {
                message: "internal error".into(),
            }
        }),
        Err(err) => SummaryReply::Error {
            message: format!("bad summary query: {err}"),
        },
    };
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// Answers a summary query; a list page stops early (with `next_offset`) rather than pass
/// `budget` bytes, and a single summary too large for one message is an error that says so.
pub fn run_query(
    projection: &Arc<Projection>,
    query: SummaryQuery,
    budget: usize,
) -> Result<SummaryReply, ProjectionError> {
    match query {
        SummaryQuery::One { kind, id, from, to } => {
            let months = MonthRange { from, to };
            let summary = match kind {
                bus::wire::SummaryKind::Worker => projection.worker(&id, &months)?,
                bus::wire::SummaryKind::Hub => projection.hub(&id, &months)?,
                bus::wire::SummaryKind::Company => projection.company(&id)?,
            };

            let size = summary
                .as_ref()
                .map_or(0, |summary| summary.to_string().len());
            if size > budget {
                return Ok(SummaryReply::Refused {
                    message: format!(
                        "this summary takes {size} bytes, more than one NATS message holds ({budget}); narrow it with from/to"
                    ),
                });
            }
            Ok(SummaryReply::One { summary })
        }
        SummaryQuery::Programme { hubs, target } => {
            let summary = projection.programme(&hubs, target)?;
            let size = summary.to_string().len();
            if size > budget {
                return Ok(SummaryReply::Refused {
                    message: format!(
                        "the programme summary takes {size} bytes, more than one NATS message holds ({budget})"
                    ),
                });
            }
            Ok(SummaryReply::One {
                summary: Some(summary),
            })
        }
        SummaryQuery::List {
            kind,
            sort,
            descending,
            offset,
            limit,
            filter,
            cursor,
        } => {
            let limit = if limit == 0 {
                MAX_PAGE
            } else {
                limit.min(MAX_PAGE)
            };
            let found = projection.list(
                kind,
                sort.as_deref(),
                descending,
                offset,
                limit,
                &filter,
                cursor.as_deref(),
            )?;
            let found = match found {
                Ok(found) => found,
                Err(message) => return Ok(SummaryReply::Refused { message }),
            };
            let total = usize::try_from(found.total).unwrap_or(usize::MAX);
            let mut page = Vec::new();
            let mut size = 64;
            let mut next_offset = None;
            let count = found.items.len();
            for (index, item) in found.items.into_iter().enumerate() {
                let bytes = item.to_string().len() + 1;
                if !page.is_empty() && size + bytes > budget {
                    next_offset = Some(offset + index);
                    break;
                }
                size += bytes;
                page.push(item);
            }
            // The next page starts behind the last item sent: after one cut to fit the
            // message, or after a full page.
            let cut = page.len() < count;
            let next_cursor = if cut || found.full {
                found.cursors.get(page.len().wrapping_sub(1)).cloned()
            } else {
                None
            };
            Ok(SummaryReply::List {
                total,
                items: page,
                next_offset,
                next_cursor,
            })
        }
    }
}

/// The `action` of a maintenance request (none, or a body that is not JSON: a rebuild, as
/// the first `leerspoor project --rebuild` sent it).
fn maintenance_action(request: &async_nats::Message) -> Option<String> {
    serde_json::from_slice::<Value>(&request.payload)
        .ok()
        .and_then(|body| {
            body.get("action")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// The projector's gauges after a batch (names in [`bus::metrics`]): the sequence applied,
/// how old the newest message was when applied, and (every 10 s at most) its size on disk.
/// Runs `work`, then stops the projector's other tasks, saying why when it failed.
async fn stops_all(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let result = work.await;
    if let Err(err) = &result {
        tracing::error!(error = %format!("{err:#}"), "the projector stops");
    }
    shutdown.cancel();
    result
}

fn record_applied(batch: &[jetstream::Message], projection: &Projection) {
    use bus::metrics as m;
    let Some(info) = batch
        .iter()
        .filter_map(|message| message.info().ok())
        .last()
    else {
        return;
    };
    metrics::gauge!(m::PROJECTOR_APPLIED).set(info.stream_sequence as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128);
    let age = (now - info.published.unix_timestamp_nanos()) as f64 / 1e9;
    metrics::gauge!(m::PROJECTOR_LAG_SECONDS).set(age.max(0.0));
    static LAST_SIZED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let Ok(mut last) = LAST_SIZED.lock() else {
        return;
    };
    if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(10)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    if let Some(bytes) = projection.size_on_disk() {
        metrics::gauge!(m::SLED_BYTES, "db" => "projector").set(bytes as f64);
    }
}
