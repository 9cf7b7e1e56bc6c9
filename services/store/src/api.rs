//! The store's request/reply side: statement queries, verdicts, documents, activities and
//! agents. Each request is answered on a blocking thread (sled reads can take longer than an
//! async task may block), at most 32 at a time.

use std::sync::Arc;

use bus::subjects;
use bus::wire::{
    DocumentReply, DocumentRequest, DocumentStatus, ObjectQuery, StatementQuery, StatementReply,
    VerdictReply, VerdictRequest,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::documents::Documents;
use crate::{objects, query};

/// Answers until shutdown.
pub async fn serve(
    client: async_nats::Client,
    db: Arc<Db>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut subscriptions = Vec::new();
    for subject in [
        subjects::API_STATEMENTS,
        subjects::API_VERDICT,
        subjects::API_DOCUMENTS,
        subjects::API_OBJECTS,
    ] {
        subscriptions.push(
            client
                .queue_subscribe(subject, subjects::API_QUEUE.to_owned())
                .await?,
        );
    }
    let requests = futures::stream::select_all(subscriptions);
    let handle_all = requests.for_each_concurrent(32, |request| {
        let client = client.clone();
        let db = db.clone();
        async move {
            let Some(reply_to) = request.reply.clone() else {
                return;
            };
            let subject = request.subject.to_string();
            let payload = request.payload.clone();
            let answer = tokio::task::spawn_blocking(move || answer(&db, &subject, &payload)).await;
            let body = match answer {
                Ok(body) => body,
                Err(err) => {
                    tracing::error!(error = %err, "api task failed");
                    return;
                }
            };
            if let Err(err) = client.publish(reply_to, body.into()).await {
                tracing::warn!(error = %err, "cannot send api reply");
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = handle_all => Ok(()),
    }
}

fn answer(db: &Db, subject: &str, payload: &[u8]) -> Vec<u8> {
    let encoded = match subject {
        subjects::API_VERDICT => verdict(db, payload),
        subjects::API_DOCUMENTS => return document(db, payload),
        subjects::API_OBJECTS => object(db, payload),
        _ => statements(db, payload),
    };
    encoded.unwrap_or_default()
}

fn verdict(db: &Db, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
    match serde_json::from_slice::<VerdictRequest>(payload) {
        Ok(request) => match db.verdict(request.sequence) {
            Ok(verdict) => serde_json::to_vec(&VerdictReply { verdict }),
            Err(err) => {
                tracing::error!(error = %err, "verdict lookup failed");
                serde_json::to_vec(&VerdictReply { verdict: None })
            }
        },
        Err(err) => serde_json::to_vec(&StatementReply::Error {
            message: format!("bad verdict request: {err}"),
        }),
    }
}

fn statements(db: &Db, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
    let reply = match serde_json::from_slice::<StatementQuery>(payload) {
        Ok(request) => query::run(db, &request).unwrap_or_else(|err| {
            tracing::error!(error = %err, "statement query failed");
            StatementReply::Error {
                message: "internal error".into(),
            }
        }),
        Err(err) => StatementReply::Error {
            message: format!("bad statement query: {err}"),
        },
    };
    serde_json::to_vec(&reply)
}

fn object(db: &Db, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
    let reply = match serde_json::from_slice::<ObjectQuery>(payload) {
        Ok(query) => objects::run(db, &query).unwrap_or_else(|err| {
            tracing::error!(error = %err, "object query failed");
            serde_json::json!({"error": "internal error"})
        }),
        Err(err) => serde_json::json!({"error": format!("bad object query: {err}")}),
    };
    serde_json::to_vec(&reply)
}

fn document(db: &Db, payload: &[u8]) -> Vec<u8> {
    let failed = |status: DocumentStatus, message: String| DocumentReply {
        status,
        message: Some(message),
        content_type: None,
        etag: None,
        updated: None,
    };
    let (reply, body) = match bus::wire::unframe::<DocumentRequest>(payload) {
        Ok((request, body)) => {
            let documents = Documents { tree: db.tree() };
            documents.handle(&request, body).unwrap_or_else(|err| {
                tracing::error!(error = %err, "document request failed");
                (
                    failed(DocumentStatus::Internal, "internal error".into()),
                    Vec::new(),
                )
            })
        }
        Err(reason) => (
            failed(
                DocumentStatus::BadRequest,
                format!("bad document request: {reason}"),
            ),
            Vec::new(),
        ),
    };
    bus::wire::frame(&reply, &body).unwrap_or_default()
}
