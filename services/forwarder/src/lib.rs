//! The forwarder: every statement the store stores, delivered to the targets registered in
//! [`bus::targets`]: other LRSs over the xAPI statement API, and webhooks as signed POSTs.
//!
//! Each target has its own durable consumer on `LRS_STORED` and its own task here: a batch is
//! pulled, its stored statements that pass the target's filter are POSTed (in the target's
//! batch size, in stream order), and only then acknowledged, so delivery is at least once and
//! in order, and a target that was down for a day finds its statements waiting. A failed POST
//! is retried with a growing pause; a webhook gives up after its `max_attempts` and puts the
//! statements on its dead-letter list (which can be replayed), an LRS target never gives up
//! on a failure that may pass (5xx, timeouts), and buries only what it refuses outright (4xx).
//!
//! # Layout
//! - [`deliver`]: one POST to a target: the body, the signature, what the answer means.
//! - [`target`]: one target's loop: pull, filter, deliver, acknowledge; replays.

pub mod deliver;
pub mod target;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bus::targets::{Target, Targets};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Copies NATS keeps of the registry and the dead letters.
    pub stream_replicas: usize,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
    /// How long one POST may take.
    pub request_timeout: Duration,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            stream_replicas: 1,
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Forwarder {
    client: async_nats::Client,
    targets: Targets,
    config: ForwarderConfig,
    http: reqwest::Client,
}

impl Forwarder {
    pub async fn build(
        client: async_nats::Client,
        config: ForwarderConfig,
    ) -> anyhow::Result<Self> {
        let targets = Targets::open(&client, config.stream_replicas)
            .await
            .context("the targets registry")?;
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .user_agent(concat!("Leerspoor/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Forwarder {
            client,
            targets,
            config,
            http,
        })
    }

    /// Runs a task per registered target until `shutdown`, starting, restarting and stopping
    /// them as targets are added, changed and removed.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut running: HashMap<String, Running> = HashMap::new();
        loop {
            // The registry as it is now, then its changes; a watch that ends (NATS away) is
            // made again after a pause.
            let watch = self.targets.bucket().watch_all().await;
            match self.targets.list().await {
                Ok(targets) => self.reconcile(&mut running, targets, &shutdown),
                Err(err) => tracing::warn!(error = %err, "cannot list the targets yet"),
            }
            if let Ok(mut watch) = watch {
                loop {
                    let change = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        change = watch.next() => change,
                    };
                    match change {
                        Some(Ok(_)) => match self.targets.list().await {
                            Ok(targets) => self.reconcile(&mut running, targets, &shutdown),
                            Err(err) => tracing::warn!(error = %err, "cannot list the targets"),
                        },
                        Some(Err(err)) => {
                            tracing::warn!(error = %err, "watching the targets failed");
                            break;
                        }
                        None => break,
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Starts the tasks of new targets, restarts those whose settings changed (a replay
    /// request is passed to the running task instead), stops those removed.
    fn reconcile(
        &self,
        running: &mut HashMap<String, Running>,
        targets: Vec<Target>,
        shutdown: &CancellationToken,
    ) {
        let wanted: HashMap<String, Target> = targets
            .into_iter()
            .map(|target| (target.name.clone(), target))
            .collect();
        running.retain(|name, task| {
            let keep = wanted
                .get(name)
                .is_some_and(|target| same_settings(target, &task.target));
            if !keep {
                task.stop.cancel();
            }
            keep
        });
        for (name, target) in wanted {
            if let Some(task) = running.get_mut(&name) {
                let asked = target.replay_requested.is_some()
                    && task.target.replay_requested != target.replay_requested;
                task.target.replay_requested = target.replay_requested.clone();
                if asked {
                    task.replay.send_modify(|count| *count += 1);
                }
                continue;
            }
            let stop = shutdown.child_token();
            let (replay, replays) = tokio::sync::watch::channel(0u64);
            let task = target::TargetTask::new(
                self.client.clone(),
                self.targets.clone(),
                self.http.clone(),
                target.clone(),
                self.config.max_backoff,
                replays,
            );
            tokio::spawn(task.run(stop.clone()));
            tracing::info!(target = %name, url = %target.url(), "delivering to a target");
            running.insert(
                name,
                Running {
                    target,
                    stop,
                    replay,
                },
            );
        }
    }
}

/// A target's running task.
struct Running {
    target: Target,
    stop: CancellationToken,
    replay: tokio::sync::watch::Sender<u64>,
}

/// Whether two versions of a target differ only in their replay request.
fn same_settings(a: &Target, b: &Target) -> bool {
    let strip = |target: &Target| Target {
        replay_requested: None,
        ..target.clone()
    };
    strip(a) == strip(b)
}
