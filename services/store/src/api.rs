//! The store's request/reply side: statement queries, verdicts, documents, activities and
//! agents, and the admin requests (credentials, audit log, exports). Each request is
//! answered on a blocking thread (sled reads can take longer than an async task may block),
//! at most 32 at a time.

use std::sync::Arc;

use bus::access::{AdminReply, AdminRequest};
use bus::subjects;
use bus::wire::{
    DocumentReply, DocumentRequest, DocumentStatus, ObjectQuery, PageHead, StatementQuery,
    StatementReply, VerdictReply, VerdictRequest,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::db::Db;
use crate::{objects, query};

/// The store's request subjects, subscribed when the store is built: a request sent between
/// start and run waits in the subscription instead of finding no responder.
#[derive(Default)]
pub struct Subscriptions(Vec<async_nats::Subscriber>);

pub async fn subscribe(client: &async_nats::Client) -> anyhow::Result<Subscriptions> {
    let mut subscriptions = Vec::new();
    for subject in [
        subjects::API_STATEMENTS,
        subjects::API_VERDICT,
        subjects::API_DOCUMENTS,
        subjects::API_OBJECTS,
        subjects::API_ADMIN,
    ] {
        subscriptions.push(
            client
                .queue_subscribe(subject, subjects::API_QUEUE.to_owned())
                .await?,
        );
    }
    Ok(Subscriptions(subscriptions))
}

/// How long a request waits for this replica to apply what it needs before the replica says
/// it is behind (the caller then asks again, perhaps another replica).
const BEHIND_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Sequences a replica may be behind and still wait for a request rather than refuse it.
const BEHIND_CLOSE: u64 = 256;

/// Answers until shutdown. `applied` follows this replica's flushed `LRS_IN` watermark: a
/// request that needs more ([`bus::request::MIN_APPLIED_HEADER`]) waits for it a moment, or
/// is told this replica is behind.
pub async fn serve(
    client: async_nats::Client,
    db: Arc<Db>,
    subscriptions: Subscriptions,
    applied: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subscriptions = subscriptions.0;
    let requests = futures::stream::select_all(subscriptions);
    let handle_all = requests.for_each_concurrent(CONCURRENT, |request| {
        let client = client.clone();
        let db = db.clone();
        let mut applied = applied.clone();
        async move {
            let Some(reply_to) = request.reply.clone() else {
                return;
            };
            let needed = bus::request::min_applied(&request);
            if needed > 0 && !caught_up(&mut applied, needed).await {
                let behind = bus::request::behind(*applied.borrow());
                if let Err(err) = client
                    .publish_with_headers(reply_to, behind, Vec::new().into())
                    .await
                {
                    tracing::warn!(error = %err, "cannot send api reply");
                }
                return;
            }
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
            let body = fit_reply(&request.subject, body, client.server_info().max_payload);
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

/// Whether this replica has applied `needed`, after waiting a moment for it. A replica far
/// behind (catching up after a restart) says so at once, so the caller asks another instead
/// of waiting here.
async fn caught_up(applied: &mut tokio::sync::watch::Receiver<u64>, needed: u64) -> bool {
    let close = needed.saturating_sub(*applied.borrow()) <= BEHIND_CLOSE;
    close
        && tokio::time::timeout(BEHIND_WAIT, applied.wait_for(|at| *at >= needed))
            .await
            .is_ok_and(|waited| waited.is_ok())
}

/// The store's request side for a gateway in the same process ([`bus::request::Here`]): the
/// same answers as over NATS, from a state that includes what the request needs, without
/// the trip through nats-server.
pub struct Here {
    /// Not kept open by this: once the store has stopped, reads go over NATS.
    db: std::sync::Weak<Db>,
    applied: tokio::sync::watch::Receiver<u64>,
    /// At most as many requests at a time as over NATS, each on a blocking thread.
    gate: Arc<tokio::sync::Semaphore>,
    /// The NATS server's `max_payload`: an answer is held to what it would be over NATS.
    max_payload: usize,
}

/// Requests answered at a time, over NATS and here each.
const CONCURRENT: usize = 32;

impl Here {
    pub(crate) fn new(
        db: &Arc<Db>,
        applied: tokio::sync::watch::Receiver<u64>,
        max_payload: usize,
    ) -> Here {
        Here {
            db: Arc::downgrade(db),
            applied,
            gate: Arc::new(tokio::sync::Semaphore::new(CONCURRENT)),
            max_payload,
        }
    }
}

impl bus::request::Here for Here {
    fn answer(
        &self,
        subject: &'static str,
        payload: bytes::Bytes,
        min_applied: u64,
    ) -> futures::future::BoxFuture<'static, Option<bytes::Bytes>> {
        let (db, mut applied, gate) = (self.db.clone(), self.applied.clone(), self.gate.clone());
        let max_payload = self.max_payload;
        Box::pin(async move {
            let db = db.upgrade()?;
            if min_applied > 0 && !caught_up(&mut applied, min_applied).await {
                return None;
            }
            let _permit = gate.acquire_owned().await.ok()?;
            let body = tokio::task::spawn_blocking(move || answer(&db, subject, &payload))
                .await
                .map_err(|err| tracing::error!(error = %err, "api task failed"))
                .ok()?;
            Some(fit_reply(subject, body, max_payload).into())
        })
    }
}

/// A reply too large for one NATS message would fail to send and leave the caller waiting;
/// pages and exports are built to fit, so this only catches what nothing else bounds (an
/// activity merged from many large definitions): it becomes an error reply that says so.
fn fit_reply(subject: &str, body: Vec<u8>, max_payload: usize) -> Vec<u8> {
    if body.len() + 1024 <= max_payload {
        return body;
    }
    tracing::error!(
        subject,
        bytes = body.len(),
        max_payload,
        "reply too large for one NATS message"
    );
    let message = format!(
        "the answer ({} bytes) does not fit one NATS message (max_payload {max_payload})",
        body.len()
    );
    let encoded = match subject {
        subjects::API_DOCUMENTS => {
            let reply = DocumentReply {
                status: DocumentStatus::Internal,
                message: Some(message),
                content_type: None,
                etag: None,
                updated: None,
            };
            return bus::wire::frame(&reply, &[]).unwrap_or_default();
        }
        subjects::API_ADMIN => serde_json::to_vec(&admin_error("internal", message)),
        subjects::API_OBJECTS => serde_json::to_vec(&serde_json::json!({ "error": message })),
        _ => serde_json::to_vec(&StatementReply::<serde_json::Value>::Error { message }),
    };
    encoded.unwrap_or_default()
}

/// The reply body.
fn answer(db: &Db, subject: &str, payload: &[u8]) -> Vec<u8> {
    let encoded = match subject {
        subjects::API_VERDICT => verdict(db, payload),
        subjects::API_DOCUMENTS => return document(db, payload),
        subjects::API_OBJECTS => object(db, payload),
        subjects::API_ADMIN => serde_json::to_vec(&admin(db, payload)),
        _ => statements(db, payload),
    };
    encoded.unwrap_or_default()
}

fn admin_error(code: &str, message: impl Into<String>) -> AdminReply {
    AdminReply::Error {
        code: code.into(),
        message: message.into(),
    }
}

fn internal(err: impl std::fmt::Display) -> AdminReply {
    tracing::error!(error = %err, "admin request failed");
    admin_error("internal", "internal error")
}

/// Credentials, audit log and exports (reads: changes go through `LRS_IN`).
fn admin(db: &Db, payload: &[u8]) -> AdminReply {
    let request = match serde_json::from_slice::<AdminRequest>(payload) {
        Ok(request) => request,
        Err(err) => return admin_error("bad_request", format!("bad admin request: {err}")),
    };
    let access = Access { tree: db.tree() };
    match request {
        AdminRequest::ListCredentials => match access.credentials() {
            Ok(credentials) => AdminReply::Credentials { credentials },
            Err(err) => internal(err),
        },
        AdminRequest::Audit { after, limit } => match access.audit(after, limit) {
            Ok(entries) => AdminReply::Audit { entries },
            Err(err) => internal(err),
        },
        AdminRequest::ExportStatements {
            agent,
            after,
            limit,
        } => match db.export_statements(&agent, after, limit) {
            Ok((statements, next_after)) => AdminReply::Statements {
                statements,
                next_after,
            },
            Err(err) => internal(err),
        },
        AdminRequest::ListHubs => match (crate::registry::Registry { tree: db.tree() }).list() {
            Ok(hubs) => AdminReply::Hubs { hubs },
            Err(err) => internal(err),
        },
        AdminRequest::ExportDocument { agent, after } => {
            match db.documents().export(&agent, after.as_deref()) {
                Ok(found) => {
                    let (document, next) = found.unzip();
                    AdminReply::Document { document, next }
                }
                Err(err) => internal(err),
            }
        }
    }
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
        Err(err) => serde_json::to_vec(&StatementReply::<serde_json::Value>::Error {
            message: format!("bad verdict request: {err}"),
        }),
    }
}

pub(crate) fn statements(db: &Db, payload: &[u8]) -> serde_json::Result<Vec<u8>> {
    let (reply, joined) = match serde_json::from_slice::<StatementQuery>(payload) {
        Ok(request) => (
            query::run(db, &request).unwrap_or_else(|err| {
                tracing::error!(error = %err, "statement query failed");
                StatementReply::Error {
                    message: "internal error".into(),
                }
            }),
            request.joined,
        ),
        Err(err) => (
            StatementReply::Error {
                message: format!("bad statement query: {err}"),
            },
            false,
        ),
    };
    match reply {
        StatementReply::Page {
            statements,
            next_after,
            consistent_through,
            last_modified,
            // A joined page goes out without attachments (`query::run` allows none).
            bodies: _,
        } if joined => {
            let head = PageHead {
                next_after,
                consistent_through,
                last_modified,
            };
            let texts: Vec<&str> = statements.iter().map(|text| text.get()).collect();
            bus::wire::joined_page(&head, &texts)
        }
        reply => serde_json::to_vec(&reply),
    }
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
        Ok((request, _)) => db.documents().read(&request).unwrap_or_else(|err| {
            tracing::error!(error = %err, "document request failed");
            (
                failed(DocumentStatus::Internal, "internal error".into()),
                Vec::new(),
            )
        }),
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
