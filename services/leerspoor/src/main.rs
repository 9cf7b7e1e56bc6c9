//! `leerspoor`: one binary for every part of the LRS.

use clap::Parser;
use leerspoor::node::{Node, Parts};

mod cli;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        // stdout carries the one "ready" line that scripts and tests read.
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    let config = cli.common.config()?;
    let demo_credentials = config.store.demo_credential;
    let parts = match cli.command {
        cli::Command::Serve => Parts::All,
        cli::Command::Gateway => Parts::Gateway,
        cli::Command::Store => Parts::Store,
        cli::Command::Projector => Parts::Projector,
        cli::Command::Bench(args) => return leerspoor::bench::run(args).await,
        cli::Command::Demo(args) => return leerspoor::demo::run(args).await,
        cli::Command::Summary(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::analyst::run(&client, args).await;
        }
        cli::Command::Credentials(command) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::credentials(&client, command).await;
        }
        cli::Command::Audit(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::audit(&client, args).await;
        }
        cli::Command::EraseAgent(args) => {
            let client = admin_client(&config).await?;
            return leerspoor::access::erase(&client, args).await;
        }
        cli::Command::Project { rebuild } => {
            anyhow::ensure!(
                rebuild,
                "leerspoor project does one thing for now: --rebuild"
            );
            let client = admin_client(&config).await?;
            return leerspoor::analyst::rebuild(&client).await;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
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
    let signals = shutdown.clone();
    let (result, ()) = tokio::join!(node.run(shutdown.clone()), async move {
        tokio::select! {
            _ = wait_for_signal() => signals.cancel(),
            _ = signals.cancelled() => {}
        }
    });
    result
}

/// NATS as the configured user (`leerspoor-admin` with deploy/nats-accounts.conf), for the
/// operator's commands.
async fn admin_client(config: &leerspoor::config::Config) -> anyhow::Result<async_nats::Client> {
    leerspoor::node::connect(config, &config.nats_url_or_local()).await
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
