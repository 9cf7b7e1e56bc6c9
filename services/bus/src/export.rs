//! Every stored statement, voided ones too, oldest first, a page at a time: what
//! `leerspoor export`, `GET /admin/exports/statements`, forwarding's catch-up and the import
//! from another Leerspoor read. One page in memory at a time, whatever the store holds.

use std::time::Duration;

use serde_json::Value;

use crate::request::{ask_json, Ask, AskError};
use crate::subjects;
use crate::wire::{StatementQuery, StatementReply};

/// Statements per page asked of the store (a page also stops at the store's byte budget).
pub const PAGE: usize = 500;

/// Filters of an export (the statement API's own, as the store takes them).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// RFC 3339 `stored` bounds: since exclusive, until inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Canonical IFI key of the agent.
    pub agent: Option<String>,
    pub verb: Option<String>,
}

/// A cursor over the store's statements matching `filters`.
pub struct Export {
    query: StatementQuery,
    done: bool,
}

impl Export {
    pub fn new(filters: Filters) -> Self {
        Export {
            query: StatementQuery {
                since: filters.since,
                until: filters.until,
                agent: filters.agent,
                verb: filters.verb,
                limit: PAGE,
                ascending: true,
                include_voided: true,
                ..StatementQuery::default()
            },
            done: false,
        }
    }

    /// A cursor with nothing left.
    pub fn finished() -> Self {
        Export {
            query: StatementQuery::default(),
            done: true,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next_page(
        &mut self,
        client: &async_nats::Client,
    ) -> Result<Option<Vec<Value>>, AskError> {
        if self.done {
            return Ok(None);
        }
        let to = Ask::store(subjects::API_STATEMENTS, Duration::from_secs(30));
        let reply: StatementReply = ask_json(client, to, &self.query).await?;
        match reply {
            StatementReply::Page {
                statements,
                next_after,
                ..
            } => {
                match next_after {
                    Some(after) => self.query.after = Some(after),
                    None => self.done = true,
                }
                Ok(Some(statements))
            }
            StatementReply::One { .. } => {
                self.done = true;
                Ok(Some(Vec::new()))
            }
            StatementReply::Error { message } => Err(AskError::Refused {
                service: "the store",
                message,
            }),
        }
    }
}
