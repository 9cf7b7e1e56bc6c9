//! The summary API for analysts: one worker, hub or company, and lists of them, as JSON or
//! CSV (`Accept: text/csv` or `format=csv`), answered by the projector over NATS.
//!
//! - `GET /summaries/workers?agent=<Agent JSON>` (or a list without `agent`)
//! - `GET /summaries/hubs/{hub}`, `GET /summaries/hubs`
//! - `GET /summaries/companies/{company}`, `GET /summaries/companies`
//!
//! One summary takes `from` and `to` (`YYYY-MM`) for its month series; lists take `sort` (a
//! numeric field), `order` (`asc`, `desc`), `limit`, and `offset` or `cursor` (the
//! `next_cursor` of the previous page: deep pages without walking the earlier ones).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bus::subjects;
use bus::wire::{SummaryKind, SummaryQuery, SummaryReply};
use serde_json::{json, Map, Value};
use xapi::XapiVersion;

use crate::auth::Caller;
use crate::documents::agent_key;
use crate::error::ApiError;
use crate::params::parse_pairs;
use crate::AppState;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Options {
    csv: bool,
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    descending: bool,
    limit: usize,
    offset: usize,
    agent: Option<String>,
    hub: Option<String>,
    company: Option<String>,
    cursor: Option<String>,
}

fn month(name: &str, value: &str) -> Result<String, ApiError> {
    let valid = value.len() == 7
        && value.as_bytes()[4] == b'-'
        && value[..4].bytes().all(|b| b.is_ascii_digit())
        && value[5..]
            .parse::<u8>()
            .is_ok_and(|month| (1..=12).contains(&month));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} must be a month as YYYY-MM, not {value:?}"
        )))
    }
}

fn number(name: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be a non-negative integer, not {value:?}"
        ))
    })
}

fn options(
    state: &AppState,
    raw: Option<&str>,
    headers: &HeaderMap,
    allowed: &[&str],
) -> Result<Options, ApiError> {
    let accept_csv = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    let mut options = Options {
        csv: accept_csv,
        from: None,
        to: None,
        sort: None,
        descending: false,
        limit: 0,
        offset: 0,
        agent: None,
        hub: None,
        company: None,
        cursor: None,
    };
    for (name, value) in parse_pairs(raw)? {
        if name != "format" && !allowed.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {name:?}; this summary takes {}",
                allowed.join(", ")
            )));
        }
        match name.as_str() {
            "format" => match value.as_str() {
                "csv" => options.csv = true,
                "json" => options.csv = false,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "format must be json or csv, not {other:?}"
                    )))
                }
            },
            "from" => options.from = Some(month("from", &value)?),
            "to" => options.to = Some(month("to", &value)?),
            "sort" => options.sort = Some(value),
            "order" => {
                options.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "order must be asc or desc, not {other:?}"
                        )))
                    }
                }
            }
            "limit" => {
                options.limit = number("limit", &value)?;
                let most = state.limits.summary_limit;
                if options.limit > most {
                    return Err(ApiError::limit(
                        xapi::limits::Limit::SummaryLimit,
                        most,
                        format!(
                            "limit {} is above the most one page holds; ask for at most {most} (0: the most)",
                            options.limit
                        ),
                    ));
                }
            }
            "offset" => options.offset = number("offset", &value)?,
            "hub" => options.hub = Some(value),
            "company" => options.company = Some(value),
            "cursor" => options.cursor = Some(value),
            _ => options.agent = Some(value),
        }
    }
    Ok(options)
}

pub(crate) async fn ask(state: &AppState, query: &SummaryQuery) -> Result<SummaryReply, ApiError> {
    let to = bus::request::Ask::projector(subjects::API_SUMMARIES, TIMEOUT)
        .retrying_every(bus::request::READ_ATTEMPT);
    let here = state.projector_here.as_deref();
    match bus::request::ask_json_here_first(here, &state.client, to, query).await? {
        SummaryReply::Error { message } => {
            tracing::error!(%message, "projector refused a query");
            Err(ApiError::Internal)
        }
        SummaryReply::Refused { message } => Err(ApiError::BadRequest(message)),
        reply => Ok(reply),
    }
}

async fn one(
    state: &AppState,
    kind: SummaryKind,
    id: String,
    options: Options,
) -> Result<Response, ApiError> {
    let query = SummaryQuery::One {
        kind,
        id: id.clone(),
        from: options.from,
        to: options.to,
    };
    match ask(state, &query).await? {
        SummaryReply::One {
            summary: Some(mut summary),
        } => {
            state.programme.skill_labels.apply(&mut summary);
            render(vec![summary], options.csv, None)
        }
        SummaryReply::One { summary: None } => {
            Err(ApiError::NotFound(format!("no summary for {id}")))
        }
        _ => Err(ApiError::Internal),
    }
}

async fn list(state: &AppState, kind: SummaryKind, options: Options) -> Result<Response, ApiError> {
    let query = SummaryQuery::List {
        kind,
        sort: options.sort,
        descending: options.descending,
        offset: options.offset,
        limit: options.limit,
        filter: bus::wire::ListFilter {
            hub: options.hub,
            company: options.company,
            from: options.from,
            to: options.to,
        },
        cursor: options.cursor,
    };
    match ask(state, &query).await? {
        SummaryReply::List {
            total,
            mut items,
            next_offset,
            next_cursor,
        } => {
            for item in &mut items {
                state.programme.skill_labels.apply(item);
            }
            let mut response = render(
                items,
                options.csv,
                Some(Page {
                    total,
                    next_offset,
                    next_cursor: next_cursor.clone(),
                }),
            )?;
            // CSV has no room for it: the next page's cursor is a header there too.
            if let Some(value) = next_cursor.and_then(|cursor| HeaderValue::from_str(&cursor).ok())
            {
                response.headers_mut().insert("x-next-cursor", value);
            }
            Ok(response)
        }
        _ => Err(ApiError::Internal),
    }
}

/// What a list answer says beside its items.
struct Page {
    total: usize,
    /// Where the next page starts when this one stopped early to fit one message.
    next_offset: Option<usize>,
    next_cursor: Option<String>,
}

/// JSON (one object, or `{total, items, next_offset?, next_cursor?}`), or CSV with one row
/// per summary: scalar fields, lists joined with `;`, month series left out.
fn render(items: Vec<Value>, csv: bool, page: Option<Page>) -> Result<Response, ApiError> {
    if !csv {
        return Ok(match page {
            Some(page) => {
                let mut answer = json!({"total": page.total, "items": items});
                if let Some(next_offset) = page.next_offset {
                    answer["next_offset"] = json!(next_offset);
                }
                if let Some(next_cursor) = page.next_cursor {
                    answer["next_cursor"] = json!(next_cursor);
                }
                Json(answer).into_response()
            }
            None => Json(items.into_iter().next().unwrap_or(Value::Null)).into_response(),
        });
    }
    let bytes = to_csv(&items).map_err(|err| {
        tracing::error!(error = %err, "csv");
        ApiError::Internal
    })?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}

/// Summaries as CSV: a header of the first summary's fields (month series left out), then one
/// row per summary, lists joined with `;`. Shared with the `leerspoor summary` command.
pub fn to_csv(items: &[Value]) -> Result<Vec<u8>, csv::Error> {
    let mut columns: Vec<String> = items
        .first()
        .and_then(Value::as_object)
        .map(|first| {
            first
                .keys()
                .filter(|key| key.as_str() != "months")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    // What the row is about comes first.
    columns.sort_by_key(|column| {
        !matches!(
            column.as_str(),
            "worker" | "hub" | "company" | "month" | "type" | "region"
        )
    });
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&columns)?;
    let empty = Map::new();
    for item in items {
        let object = item.as_object().unwrap_or(&empty);
        writer.write_record(columns.iter().map(|column| cell(object.get(column))))?;
    }
    writer
        .into_inner()
        .map_err(|err| csv::Error::from(err.into_error()))
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => inert(text),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(";"),
        Some(other) => other.to_string(),
    }
}

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return before one) gets a leading `'`, which spreadsheets show as text (OWASP's advice for
/// CSV injection). Hub and company ids come from statements, so from anyone who may write.
pub(crate) fn inert(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

const ONE: &[&str] = &["from", "to"];
const LIST: &[&str] = &["sort", "order", "limit", "offset", "cursor"];

pub async fn workers(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let allowed: Vec<&str> = ["agent", "hub", "company"]
        .iter()
        .chain(ONE)
        .chain(LIST)
        .copied()
        .collect();
    let mut options = options(&state, query.as_deref(), &headers, &allowed)?;
    if options.agent.is_some() && (options.hub.is_some() || options.company.is_some()) {
        return Err(ApiError::BadRequest(
            "agent asks for one worker; hub and company narrow a list: give one or the other"
                .into(),
        ));
    }
    match options.agent.take() {
        Some(agent) => {
            let ifi = agent_key(&state, XapiVersion::V2_0_0, &agent)?;
            one(&state, SummaryKind::Worker, ifi, options).await
        }
        None => list(&state, SummaryKind::Worker, options).await,
    }
}

pub async fn hub(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    Path(hub): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let options = options(&state, query.as_deref(), &headers, ONE)?;
    one(&state, SummaryKind::Hub, hub, options).await
}

pub async fn hubs(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let options = options(&state, query.as_deref(), &headers, LIST)?;
    list(&state, SummaryKind::Hub, options).await
}

pub async fn company(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    Path(company): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let options = options(&state, query.as_deref(), &headers, &[])?;
    one(&state, SummaryKind::Company, company, options).await
}

pub async fn companies(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let allowed: Vec<&str> = ["hub"].iter().chain(LIST).copied().collect();
    let options = options(&state, query.as_deref(), &headers, &allowed)?;
    list(&state, SummaryKind::Company, options).await
}

/// The programme summary as the projector computes it from the registry the store keeps.
pub async fn programme_summary(state: &AppState) -> Result<Value, ApiError> {
    let hubs = crate::hubs::registry(state).await?;
    let query = SummaryQuery::Programme {
        hubs,
        target: state.programme.company_target,
    };
    match ask(state, &query).await? {
        SummaryReply::One {
            summary: Some(summary),
        } => Ok(summary),
        _ => Err(ApiError::Internal),
    }
}

/// `GET /summaries/programme`: companies reached against the target (as a whole, by hub
/// type, by region; per month, cumulative), workers by learner group per hub and region.
/// As CSV (`format=csv`, `table=`): one of its tables, `months` (the default), `types`,
/// `regions` or `hubs`.
pub async fn programme(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut table = "months".to_owned();
    let mut rest = Vec::new();
    for (name, value) in parse_pairs(query.as_deref())? {
        if name == "table" {
            table = value;
        } else {
            rest.push(format!("{name}={value}"));
        }
    }
    let options = options(&state, Some(&rest.join("&")), &headers, &[])?;
    let summary = programme_summary(&state).await?;
    if !options.csv {
        return Ok(Json(summary).into_response());
    }
    let field = match table.as_str() {
        "months" => "months",
        "types" => "by_type",
        "regions" => "by_region",
        "hubs" => "hubs",
        other => {
            return Err(ApiError::BadRequest(format!(
                "table must be months, types, regions or hubs, not {other:?}"
            )))
        }
    };
    let rows = summary
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Value> = rows.into_iter().map(flatten_groups).collect();
    render(
        rows,
        true,
        Some(Page {
            total: 0,
            next_offset: None,
            next_cursor: None,
        }),
    )
}

/// A row's learner groups as columns of their own (`learner_groups.youth`), for CSV.
fn flatten_groups(mut row: Value) -> Value {
    if let Some(object) = row.as_object_mut() {
        if let Some(Value::Object(groups)) = object.remove("learner_groups") {
            for group in ["youth", "worker", "jobseeker", "unknown"] {
                let count = groups.get(group).cloned().unwrap_or(json!(0));
                object.insert(format!("learner_groups.{group}"), count);
            }
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_made_text() {
        let items = vec![
            json!({"hub": "=HYPERLINK(\"http://x\")", "company": "+31", "workers": -1, "skills": ["@SUM(A1)", "ok"]}),
        ];
        let text = String::from_utf8(to_csv(&items).expect("csv")).expect("utf-8");
        assert!(text.contains("'=HYPERLINK"), "{text}");
        assert!(text.contains("'+31"), "{text}");
        assert!(text.contains("'@SUM(A1);ok"), "{text}");
        assert!(text.contains(",-1"), "numbers stay numbers: {text}");
    }
}
