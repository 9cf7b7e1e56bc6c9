//! `/dashboard`: the programme, its hubs, companies and workers as pages for analysts,
//! served by the gateway itself (assets embedded in the binary) under the `summaries/read`
//! scope. Pages are rendered here from the summary API's answers: every figure is in an HTML
//! table (charts draw from the same figures), every table downloads as CSV (`?csv=<table>`),
//! Dutch and English (`?lang=nl|en`, else the browser's preference).
//!
//! - `/dashboard`: the programme overview
//! - `/dashboard/hubs/{hub}`, `/dashboard/companies/{company}`, `/dashboard/workers?id=<IFI key>`
//! - `/dashboard/search?q=...`: a hub, company or worker by identifier
//! - `/dashboard/assets/{file}`

pub mod html;
mod pages;
pub mod text;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::parse_pairs;
use crate::AppState;
use html::{Chart, Table};
use text::Lang;

/// What a page is made of, in order.
pub(crate) enum Block {
    Html(String),
    Table(Table),
    Chart(Chart, Table),
}

/// A page before it is rendered (or one of its tables downloaded).
pub(crate) struct Page {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// The request as the pages see it.
pub(crate) struct Asked {
    pub lang: Lang,
    pub csv: Option<String>,
    pub path_and_query: String,
    pub params: Vec<(String, String)>,
}

impl Asked {
    fn new(uri: &Uri, raw: Option<&str>, headers: &HeaderMap) -> Result<Asked, ApiError> {
        let params = parse_pairs(raw)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let lang = Lang::pick(
            get("lang").as_deref(),
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|value| value.to_str().ok()),
        );
        // The page's own address without `csv`, with the language made explicit.
        let mut kept: Vec<String> = params
            .iter()
            .filter(|(key, _)| key != "csv" && key != "lang")
            .map(|(key, value)| format!("{key}={}", html::segment(value)))
            .collect();
        kept.push(format!("lang={}", lang.code()));
        Ok(Asked {
            lang,
            csv: get("csv"),
            path_and_query: format!("{}?{}", uri.path(), kept.join("&")),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A dashboard address in this language.
    pub fn link(&self, path: &str) -> String {
        let join = if path.contains('?') { '&' } else { '?' };
        format!("{path}{join}lang={}", self.lang.code())
    }
}

fn render(asked: &Asked, page: Page) -> Result<Response, ApiError> {
    if let Some(wanted) = &asked.csv {
        let table = page.blocks.iter().find_map(|block| match block {
            Block::Table(table) | Block::Chart(_, table) if table.id == wanted.as_str() => {
                Some(table)
            }
            _ => None,
        });
        let Some(table) = table else {
            return Err(ApiError::NotFound(format!(
                "this page has no table {wanted:?}"
            )));
        };
        let bytes = table.csv().map_err(|_| ApiError::Internal)?;
        let mut response = bytes.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(value) =
            HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", table.id))
        {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        return Ok(response);
    }
    let mut body = String::new();
    for block in &page.blocks {
        match block {
            Block::Html(html) => body.push_str(html),
            Block::Table(table) => body.push_str(&table.html(&asked.path_and_query, asked.lang)),
            Block::Chart(chart, table) => {
                body.push_str(&chart.html(table, &asked.path_and_query, asked.lang))
            }
        }
    }
    let html = html::page(asked.lang, &page.title, &asked.path_and_query, &body);
    let mut response = html.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Only its own scripts and styles; no frames (clickjacking), no sniffing.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn overview(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&uri, query.as_deref(), &headers)?;
    let page = pages::overview(&state, &asked).await?;
    render(&asked, page)
}

pub async fn hub(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    Path(hub): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&uri, query.as_deref(), &headers)?;
    let page = pages::hub(&state, &asked, &hub).await?;
    render(&asked, page)
}

pub async fn company(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    Path(company): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&uri, query.as_deref(), &headers)?;
    let page = pages::company(&state, &asked, &company).await?;
    render(&asked, page)
}

pub async fn worker(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&uri, query.as_deref(), &headers)?;
    let id = asked
        .param("id")
        .ok_or_else(|| ApiError::BadRequest("id (the worker's identifier) is required".into()))?
        .to_owned();
    let page = pages::worker(&state, &asked, &id).await?;
    render(&asked, page)
}

pub async fn search(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&uri, query.as_deref(), &headers)?;
    let wanted = asked.param("q").unwrap_or_default().trim().to_owned();
    match pages::find(&state, &asked, &wanted).await? {
        Ok(location) => Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()),
        Err(page) => {
            let mut response = render(&asked, page)?;
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok(response)
        }
    }
}

/// The embedded assets: uPlot (MIT, `assets/uPlot.LICENSE`) and the dashboard's own.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (body, kind): (&'static [u8], &'static str) = match file.as_str() {
        "uPlot.iife.min.js" => (
            include_bytes!("../../assets/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "uPlot.min.css" => (
            include_bytes!("../../assets/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        "dashboard.js" => (
            include_bytes!("../../assets/dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "dashboard.css" => (
            include_bytes!("../../assets/dashboard.css"),
            "text/css; charset=utf-8",
        ),
        "uPlot.LICENSE" => (
            include_bytes!("../../assets/uPlot.LICENSE"),
            "text/plain; charset=utf-8",
        ),
        other => return Err(ApiError::NotFound(format!("no dashboard asset {other:?}"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}
