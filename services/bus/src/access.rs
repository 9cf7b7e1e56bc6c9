//! Who may do what: credentials and their scopes, the admin requests on `lrs.api.admin`, the
//! audit log, and the erasure command on `lrs.in.admin.erase`.
//!
//! Credentials live in the store's sled database; gateways keep a copy (hashes only) and
//! refresh it when `lrs.credentials.changed` says so.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A permission a credential carries: the xAPI OAuth scopes and Leerspoor's own two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Write statements.
    #[serde(rename = "statements/write")]
    StatementsWrite,
    /// Read every statement.
    #[serde(rename = "statements/read")]
    StatementsRead,
    /// Read the statements this credential wrote (whose authority is its own).
    #[serde(rename = "statements/read/mine")]
    StatementsReadMine,
    /// The State resource, read and write.
    #[serde(rename = "state")]
    State,
    /// (Re)define activities and agents: without it, a credential's statements do not
    /// change what the Activities resource returns.
    #[serde(rename = "define")]
    Define,
    /// The Activity Profile and Agent Profile resources, read and write.
    #[serde(rename = "profile")]
    Profile,
    /// Read everything in the xAPI API.
    #[serde(rename = "all/read")]
    AllRead,
    /// Everything in the xAPI API.
    #[serde(rename = "all")]
    All,
    /// Leerspoor's summary API.
    #[serde(rename = "summaries/read")]
    SummariesRead,
    /// Leerspoor's admin routes: audit log, credentials listing, erasure.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const EVERY: [Scope; 10] = [
        Scope::StatementsWrite,
        Scope::StatementsRead,
        Scope::StatementsReadMine,
        Scope::State,
        Scope::Define,
        Scope::Profile,
        Scope::AllRead,
        Scope::All,
        Scope::SummariesRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StatementsWrite => "statements/write",
            Scope::StatementsRead => "statements/read",
            Scope::StatementsReadMine => "statements/read/mine",
            Scope::State => "state",
            Scope::Define => "define",
            Scope::Profile => "profile",
            Scope::AllRead => "all/read",
            Scope::All => "all",
            Scope::SummariesRead => "summaries/read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::EVERY
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = Scope::EVERY.iter().map(|scope| scope.as_str()).collect();
                format!("unknown scope {text:?}; known: {}", known.join(", "))
            })
    }
}

/// A credential as the store keeps it. The secret itself is never stored, only its Argon2
/// hash in PHC string form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The Basic auth user name; also the account name of its authority.
    pub key: String,
    /// A human name for the client ("Moodle of hub Eindhoven").
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Argon2id hash of the secret (PHC string).
    pub secret_hash: String,
    /// The person or organisation the tool acts for, if any: statements then get the
    /// OAuth-style authority, a Group of the tool and this agent.
    pub on_behalf_of: Option<Value>,
    /// Requests per minute this credential may make (burst included); the gateway's default
    /// when absent.
    pub requests_per_minute: Option<u32>,
    pub created: String,
    /// When the secret was last replaced.
    pub rotated: Option<String>,
    /// Revoked credentials are kept (for the audit trail) but authenticate nothing.
    pub revoked: Option<String>,
}

impl CredentialRecord {
    /// The agent that stands for this client in `authority`.
    pub fn client_agent(&self, home_page: &str) -> Value {
        serde_json::json!({
            "objectType": "Agent",
            "name": self.name,
            "account": {"homePage": home_page, "name": self.key},
        })
    }

    /// The `authority` the LRS writes into this client's statements: the client itself, or
    /// (acting for someone) an anonymous Group of exactly the client and that agent, as xAPI
    /// prescribes for OAuth's three-legged flow.
    pub fn authority(&self, home_page: &str) -> Value {
        let client = self.client_agent(home_page);
        match &self.on_behalf_of {
            None => client,
            Some(user) => serde_json::json!({
                "objectType": "Group",
                "member": [client, user],
            }),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn has_any(&self, scopes: &[Scope]) -> bool {
        scopes.iter().any(|scope| self.has(*scope))
    }
}

/// A credential as listed to people: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    pub key: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub on_behalf_of: Option<Value>,
    pub requests_per_minute: Option<u32>,
    pub created: String,
    pub rotated: Option<String>,
    pub revoked: Option<String>,
}

impl From<&CredentialRecord> for CredentialView {
    fn from(record: &CredentialRecord) -> CredentialView {
        CredentialView {
            key: record.key.clone(),
            name: record.name.clone(),
            scopes: record.scopes.clone(),
            on_behalf_of: record.on_behalf_of.clone(),
            requests_per_minute: record.requests_per_minute,
            created: record.created.clone(),
            rotated: record.rotated.clone(),
            revoked: record.revoked.clone(),
        }
    }
}

/// An admin action, kept in the store's audit log. Never holds personal data: an erasure
/// records counts and the operator's reason, not whom it erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The entry's number, increasing.
    pub id: u64,
    pub time: String,
    /// Who did it: `credential:<key>` over HTTP, `cli:<user>` from the command line.
    pub actor: String,
    pub action: String,
    pub details: Value,
}

/// The erasure command, published to `lrs.in.admin.erase` so that it is applied in order with
/// the statements, exactly once, by the store's single writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EraseCommand {
    /// The agent whose data goes (an Agent object with one IFI).
    pub agent: Value,
    pub actor: String,
    /// Why, for the audit log (a ticket number, say). Must not name the person.
    pub reason: Option<String>,
}

/// A change to the credentials, published to `lrs.in.admin.credentials` so that every store
/// replica makes the same change at the same point of the log (times come from the message).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum CredentialChange {
    Create {
        record: CredentialRecord,
        actor: String,
    },
    /// Replaces the secret's hash; the old secret stops working at once.
    Rotate {
        key: String,
        secret_hash: String,
        actor: String,
    },
    Revoke {
        key: String,
        actor: String,
    },
    /// Creates the credential only if the store has none at all (`serve`'s demo credential).
    Bootstrap {
        record: CredentialRecord,
    },
}

/// Requests on `lrs.api.admin` (services' NATS users only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Every credential, hashes included (gateways verify secrets with them).
    ListCredentials,
    /// Audit entries after `after` (exclusive), oldest first.
    Audit { after: Option<u64>, limit: usize },
    /// One page of the statements that name an agent (voided ones included), for an export
    /// before erasure. `after` is a position cursor.
    ExportStatements {
        agent: String,
        after: Option<u64>,
        limit: usize,
    },
    /// The next document (State or Agent Profile) that belongs to an agent, after the cursor
    /// of the previous reply (`None`: the first).
    ExportDocument {
        agent: String,
        after: Option<String>,
    },
    /// The hub registry, by id.
    ListHubs,
}

/// Replies on `lrs.api.admin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum AdminReply {
    Credentials {
        credentials: Vec<CredentialRecord>,
    },
    Audit {
        entries: Vec<AuditEntry>,
    },
    Statements {
        statements: Vec<Value>,
        next_after: Option<u64>,
    },
    /// `None` when there is no further document; `next` is the cursor for the one after.
    Document {
        document: Option<ExportedDocument>,
        next: Option<String>,
    },
    Hubs {
        hubs: Vec<crate::hubs::HubEntry>,
    },
    Error {
        /// `not_found`, `conflict`, `bad_request` or `internal`.
        code: String,
        message: String,
    },
}

/// A document in an export: its resource and keys, and the body (UTF-8 text, or base64 when
/// it is not text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedDocument {
    /// `state` or `agent_profile`.
    pub resource: String,
    pub activity_id: Option<String>,
    pub registration: Option<String>,
    pub id: String,
    pub content_type: String,
    pub updated: String,
    pub text: Option<String>,
    pub base64: Option<String>,
}

/// Why an admin request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the store is unavailable ({0}); is `leerspoor store` or `serve` running?")]
    Unavailable(String),
    /// The store answered with [`AdminReply::Error`].
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("unreadable reply from the store: {0}")]
    Unreadable(String),
}

/// Sends one admin request on `lrs.api.admin` and decodes the reply; the store's refusals
/// become [`AdminError::Refused`]. The gateway, its credential copy and the CLI all go
/// through here. `min_applied`: the `LRS_IN` sequence the answer must include (0: any).
pub async fn request(
    client: &async_nats::Client,
    request: &AdminRequest,
    timeout: std::time::Duration,
    min_applied: u64,
) -> Result<AdminReply, AdminError> {
    let to = crate::request::Ask::store(crate::subjects::API_ADMIN, timeout)
        .retrying_every(crate::request::READ_ATTEMPT.max(timeout / 4))
        .after(min_applied);
    match crate::request::ask_json(client, to, request).await {
        Ok(AdminReply::Error { code, message }) => Err(AdminError::Refused { code, message }),
        Ok(reply) => Ok(reply),
        Err(crate::request::AskError::Timeout(..)) => Err(AdminError::Timeout(timeout)),
        Err(crate::request::AskError::Unavailable { reason, .. }) => {
            Err(AdminError::Unavailable(reason))
        }
        Err(crate::request::AskError::Unreadable { reason, .. }) => {
            Err(AdminError::Unreadable(reason))
        }
        Err(crate::request::AskError::Refused { message, .. }) => {
            Err(AdminError::Unreadable(message))
        }
    }
}

/// Everything stored about one person, for an export before erasure: their statements
/// (voided ones included, paged through the store) and their State and Agent Profile
/// documents, as `{"statements": [...], "documents": [...]}`. From replicas that applied
/// `LRS_IN` through `min_applied` at least (positions, the page cursor, are the same on
/// every replica).
pub async fn export_of(
    client: &async_nats::Client,
    person: &str,
    timeout: std::time::Duration,
    min_applied: u64,
) -> Result<Value, AdminError> {
    let unexpected =
        |reply: AdminReply| AdminError::Unreadable(format!("unexpected reply {reply:?}"));
    let mut statements = Vec::new();
    let mut after = None;
    loop {
        let page = AdminRequest::ExportStatements {
            agent: person.to_owned(),
            after,
            limit: 500,
        };
        match request(client, &page, timeout, min_applied).await? {
            AdminReply::Statements {
                statements: page,
                next_after,
            } => {
                statements.extend(page);
                match next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    let mut documents = Vec::new();
    let mut after = None;
    loop {
        let next_document = AdminRequest::ExportDocument {
            agent: person.to_owned(),
            after,
        };
        match request(client, &next_document, timeout, min_applied).await? {
            AdminReply::Document {
                document: Some(document),
                next,
            } => {
                documents.push(document);
                after = next;
            }
            AdminReply::Document { document: None, .. } => break,
            other => return Err(unexpected(other)),
        }
    }
    Ok(serde_json::json!({ "statements": statements, "documents": documents }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_xapi_names() {
        for scope in Scope::EVERY {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(
                serde_json::to_value(scope).expect("json"),
                Value::String(scope.as_str().into())
            );
        }
        assert!("statements".parse::<Scope>().is_err());
    }

    #[test]
    fn a_tool_acting_for_someone_gets_a_group_authority() {
        let mut record = CredentialRecord {
            key: "moodle".into(),
            name: "Moodle".into(),
            scopes: vec![Scope::All],
            secret_hash: String::new(),
            on_behalf_of: None,
            requests_per_minute: None,
            created: String::new(),
            rotated: None,
            revoked: None,
        };
        assert_eq!(record.authority("https://x")["objectType"], "Agent");
        record.on_behalf_of = Some(serde_json::json!({"mbox": "mailto:hub@example.org"}));
        let authority = record.authority("https://x");
        assert_eq!(authority["objectType"], "Group");
        assert_eq!(authority["member"].as_array().map(Vec::len), Some(2));
        assert_eq!(authority["member"][0]["account"]["name"], "moodle");
    }
}
