//! `leerspoor`: one binary for every part of the LRS.

use clap::Parser;
use leerspoor::node::{Node, Parts};

mod cli;

/// jemalloc, with an arena per CPU and no transparent huge pages (`percpu_arena:percpu` and
/// `thp:never`, built in through `.cargo/config.toml`). With glibc's malloc the threads that
/// apply, index, project and answer each grew an arena of their own and `serve` held 6.4 GB
/// resident at a million statements; with mimalloc, each thread's freed pages stayed in its
/// own heap and the peak of the grow to a million was 1,048–1,128 MiB, with jemalloc as built
/// here 767–834 (BENCHMARKS.md, issue 14, the forty-second round).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Like `println!`, but a closed stdout (a supervisor that stopped reading) is not a reason
/// for a running LRS to panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        // stdout carries the one "ready" line that scripts and tests read.
        .with_writer(std::io::stderr);
    match cli.common.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let config = cli.common.config()?;
    let demo_credentials = config.store.demo_credential;
    let parts = match cli.command {
        cli::Command::Serve => Parts::All,
        cli::Command::Gateway => Parts::Gateway,
        cli::Command::Store => Parts::Store,
        cli::Command::Projector => Parts::Projector,
        cli::Command::Forwarder => Parts::Forwarder,
        cli::Command::Forward(command) => {
            let client = admin_client(&config).await?;
            let copies = config.replicas.stream_replicas;
            return leerspoor::targets::forward(&client, copies, command).await;
        }
        cli::Command::Webhooks(command) => {
            let client = admin_client(&config).await?;
            let copies = config.replicas.stream_replicas;
            return leerspoor::targets::webhooks(&client, copies, command).await;
        }
        cli::Command::Bench(args) => {
            // A bench stopped by a signal (an operator's Ctrl-C) drops its node first: the
            // data folder it made in the temporary directory (gigabytes at a million
            // statements) goes with it, and its nats-server is killed.
            tokio::select! {
                done = leerspoor::bench::run(args) => return done,
                _ = wait_for_signal() => {}
            }
            eprintln!("leerspoor bench: stopped by a signal");
            std::process::exit(130);
        }
        cli::Command::Demo(args) => {
            let local = with_local_credentials(&config);
            let auth = local.nats.user.clone().zip(local.nats.password.clone());
            return leerspoor::demo::run(args, auth).await;
        }
        cli::Command::Hub(args) => {
            return run_hub(config, cli.common.listen, args).await;
        }
        cli::Command::Hubs(command) => {
            let client = admin_client(&config).await?;
            return leerspoor::hubs::run(&client, command).await;
        }
        cli::Command::Summary(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::analyst::run(&client, args, config.programme.company_target).await;
        }
        cli::Command::Credentials(command) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::credentials(&client, command).await;
        }
        cli::Command::Audit(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::audit(&client, args).await;
        }
        cli::Command::Replicas(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::replicas::run(&client, &config.topology()?, args).await;
        }
        cli::Command::Health { url, wait } => {
            let url = url.unwrap_or_else(|| {
                let addr = config.ops.listen.unwrap_or(config.gateway.listen);
                format!("http://{addr}/health/ready")
            });
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            let http = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?;
            loop {
                let said = match http.get(&url).send().await {
                    Ok(response) => {
                        let ready = response.status().is_success();
                        let body = response.text().await.unwrap_or_default();
                        if ready {
                            say!("{body}");
                            return Ok(());
                        }
                        body
                    }
                    Err(err) => err.to_string(),
                };
                if std::time::Instant::now() >= deadline {
                    say!("{said}");
                    std::process::exit(1);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        cli::Command::Export(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::transfer::export(&client, args).await;
        }
        cli::Command::Import(args) => {
            let client = admin_client(&config).await?;
            std::fs::create_dir_all(&config.data_dir).ok();
            return leerspoor::transfer::import(&client, &config.data_dir, args)
                .await
                .map(|_| ());
        }
        cli::Command::Compact => {
            let data_dir = config.data_dir.clone();
            let compacted =
                tokio::task::spawn_blocking(move || leerspoor::compact::run(&config)).await??;
            for line in compacted.lines() {
                say!("{line}");
            }
            say!("compacted in {}", data_dir.display());
            return Ok(());
        }
        cli::Command::Backup(args) => {
            let client = admin_client(&config).await?;
            let copies = config.replicas.stream_replicas;
            return leerspoor::backup::run(&client, copies, args).await;
        }
        cli::Command::Restore(args) => {
            let client = admin_client(&config).await?;
            let ack_wait = std::time::Duration::from_secs(config.store.ack_wait_secs.max(1));
            let restored = leerspoor::backup::restore(
                &client,
                &args.from,
                &config.data_dir,
                &config.replicas.name,
                ack_wait,
            )
            .await?;
            say!(
                "restored replica {} into {}: store at LRS_IN {} ({} entries), projector at LRS_STORED {} ({} entries)",
                restored.replica,
                config.data_dir.display(),
                restored.store_applied,
                restored.store_entries,
                restored.projector_applied,
                restored.projector_entries
            );
            say!(
                "start it (serve, or store and projector) and it applies the log after the backup"
            );
            return Ok(());
        }
        cli::Command::EraseAgent(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::erase(&client, args).await;
        }
        cli::Command::Project {
            rebuild,
            parked,
            replay_parked,
            compact,
        } => {
            let client = admin_client(&config).await?;
            return match (rebuild, parked, replay_parked, compact) {
                (true, false, false, false) => leerspoor::analyst::rebuild(&client).await,
                (false, true, false, false) => leerspoor::analyst::parked(&client, false).await,
                (false, false, true, false) => leerspoor::analyst::parked(&client, true).await,
                (false, false, false, true) => leerspoor::analyst::compact(&client).await,
                _ => anyhow::bail!(
                    "leerspoor project takes one of --rebuild, --parked, --replay-parked, --compact"
                ),
            };
        }
    };
    let node = Node::start(config, parts).await?;
    if let Some(addr) = node.http_addr() {
        say!(
            "Leerspoor is ready: xAPI endpoint http://{addr}/xapi  (NATS {})",
            node.nats_url()
        );
        print_example(addr, demo_credentials);
    } else {
        say!("Leerspoor {parts:?} is running (NATS {})", node.nats_url());
    }
    if let Some(addr) = node.leaf_addr() {
        say!("Hub nodes connect as NATS leaf nodes to {addr} (let one in: leerspoor hubs add ID)");
    }
    if let Some(addr) = node.ops_addr() {
        say!("Metrics: http://{addr}/metrics  Health: http://{addr}/health/ready");
    } else if let Some(addr) = node.http_addr() {
        say!("Metrics: http://{addr}/metrics  Health: http://{addr}/health/ready");
    }
    until_signal(|shutdown| node.run(shutdown)).await
}

/// Runs `part` until it ends or SIGINT/SIGTERM asks it to (through its shutdown token).
async fn until_signal<F>(
    part: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signals = shutdown.clone();
    let (result, ()) = tokio::join!(part(shutdown), async move {
        tokio::select! {
            _ = wait_for_signal() => signals.cancel(),
            _ = signals.cancelled() => {}
        }
    });
    result
}

/// `leerspoor hub`: a hub node, or one of its commands.
async fn run_hub(
    mut config: leerspoor::config::Config,
    listen: Option<std::net::SocketAddr>,
    args: leerspoor::hubnode::HubArgs,
) -> anyhow::Result<()> {
    use leerspoor::hubnode::{self, HubCommand, HubNode};
    match args.command {
        Some(HubCommand::HashSecret) => return hubnode::hash_secret(),
        Some(HubCommand::ImportAttendance(import)) => {
            let report = hubnode::import_attendance(&import).await?;
            hubnode::print_report(&import.file, &report, import.dry_run);
            return Ok(());
        }
        None => {}
    }
    if let Some(hub) = args.hub {
        config.hub.id = Some(hub);
    }
    if let Some(central) = args.central_nats {
        config.hub.central_nats = Some(central);
    }
    if let Some(listen) = listen {
        config.hub.listen = listen;
    }
    let node = HubNode::start(&config).await?;
    say!(
        "Leerspoor hub node {} is ready: its tools write to http://{}/xapi/statements (NATS {}, a leaf node of the central site)",
        node.hub(),
        node.http_addr(),
        node.nats_url()
    );
    until_signal(|shutdown| node.run(shutdown)).await
}

/// NATS as the configured user (`leerspoor-admin` with deploy/nats-accounts.conf), for the
/// operator's commands.
async fn admin_client(config: &leerspoor::config::Config) -> anyhow::Result<async_nats::Client> {
    leerspoor::node::connect(&with_local_credentials(config), &config.nats_url_or_local()).await
}

/// Without a NATS URL or user of its own, a command talks to `serve`'s nats-server on this
/// machine, with the password `serve` keeps in the data folder.
fn with_local_credentials(config: &leerspoor::config::Config) -> leerspoor::config::Config {
    let mut config = config.clone();
    if config.nats.url.is_none() && config.nats.user.is_none() {
        if let Some((user, password)) = leerspoor::node::local_credentials(&config.data_dir) {
            config.nats.user = Some(user);
            config.nats.password = Some(password);
        }
    }
    config
}

/// A first request to copy, with the demo credential when no other is configured.
fn print_example(addr: std::net::SocketAddr, demo_credentials: bool) {
    let user = if demo_credentials {
        "leerspoor:leerspoor"
    } else {
        "KEY:SECRET"
    };
    let statement = r#"{"actor":{"mbox":"mailto:ann@example.org"},"verb":{"id":"http://adlnet.gov/expapi/verbs/attended"},"object":{"id":"https://hub.example/sessions/1"}}"#;
    say!("Try it:");
    say!(
        "  curl -u {user} -H 'X-Experience-API-Version: 2.0.0' -H 'Content-Type: application/json' -d '{statement}' http://{addr}/xapi/statements"
    );
    say!("  curl -u {user} -H 'X-Experience-API-Version: 2.0.0' http://{addr}/xapi/statements");
    say!(
        "The programme dashboard (as {user}): http://{addr}/dashboard  (demo data: leerspoor demo)"
    );
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}
