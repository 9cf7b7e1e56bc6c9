//! The HTTP server loop: hyper's HTTP/1 connections with a deadline for request headers (a
//! client that trickles its headers, or opens a connection and says nothing, is cut off), and a
//! graceful shutdown that lets requests in flight finish.
//!
//! `axum::serve` has no header deadline, so connections are served here. Each connection runs
//! in a task of a [`JoinSet`] owned by this loop, so none outlives the server.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long requests in flight may take to finish once shutdown began.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown`, then drains the open connections.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow with the server's age.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (socket, _) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service =
            TowerToHyperService::new(app.clone().map_request(
                |request: hyper::Request<Incoming>| request.map(axum::body::Body::new),
            ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        // No upgrades: nothing Leerspoor serves switches protocols.
        let connection = builder.serve_connection(TokioIo::new(socket), service);
        let watched = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(err) = watched.await {
                tracing::debug!(error = %err, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after {DRAIN:?}; closing them");
    }
    connections.shutdown().await;
    Ok(())
}
