//! xAPI 1.0.3's Alternate Request Syntax: a browser that cannot send custom headers or
//! methods POSTs `?method=PUT` with an `application/x-www-form-urlencoded` body whose fields
//! are the headers, the parameters and the `content`. This layer turns such a request back
//! into the request it stands for, before anything else sees it. xAPI 2.0 dropped the syntax,
//! so a rewritten request that speaks 2.0 is refused.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xapi::limits::Limit;
use xapi::XapiVersion;

use crate::error::ApiError;
use crate::AppState;

/// Form fields that are headers, not parameters.
const HEADER_FIELDS: [&str; 6] = [
    "authorization",
    "x-experience-api-version",
    "content-type",
    "content-length",
    "if-match",
    "if-none-match",
];

/// Rebuilds an alternate-syntax request on the xAPI routes (nowhere else). The form is read
/// only after the credentials in the `Authorization` header passed, within
/// `limits.body_bytes`; a form that carries its credentials inside is read before anyone is
/// known, so only up to `limits.unauthenticated_form_bytes`.
pub async fn rewrite(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/xapi/") {
        return next.run(request).await;
    }
    let method_param = request.uri().query().and_then(|query| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == "method")
            .map(|(_, value)| value)
    });
    let Some(method) = method_param else {
        return next.run(request).await;
    };
    match rebuild(&state, request, &method).await {
        Ok(rebuilt) => next.run(rebuilt).await,
        Err(err) => {
            let mut response = err.into_response();
            response.headers_mut().insert(
                crate::version::HEADER,
                HeaderValue::from_static(XapiVersion::V1_0_3.as_str()),
            );
            response
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

async fn rebuild(state: &AppState, request: Request, method: &str) -> Result<Request, ApiError> {
    if request.method() != Method::POST {
        return Err(bad(
            "the alternate request syntax (?method=) is only for POST requests",
        ));
    }
    let query = request.uri().query().unwrap_or("");
    let query_pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|err| bad(format!("malformed query string: {err}")))?;
    if query_pairs.len() != 1 {
        return Err(bad("with the alternate request syntax, method is the only query parameter; send the others as form fields"));
    }
    let target = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|method| {
            matches!(
                *method,
                Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
            )
        })
        .ok_or_else(|| {
            bad(format!(
                "method {method:?} is not GET, HEAD, PUT, POST or DELETE"
            ))
        })?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(bad(
            "the alternate request syntax needs an application/x-www-form-urlencoded body",
        ));
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let (max, limit) = match authorization {
        Some(authorization) => {
            state.credentials.authenticate(Some(authorization)).await?;
            (state.limits.body_bytes, Limit::BodyBytes)
        }
        None => (
            state.limits.unauthenticated_form_bytes,
            Limit::UnauthenticatedFormBytes,
        ),
    };
    let (parts, body) = request.into_parts();
    let deadline = std::time::Duration::from_secs(state.limits.body_read_timeout_secs);
    let bytes = crate::body::read_limited(&parts.headers, body, max, limit, deadline).await?;
    from_form(target, &parts.uri, &parts.headers, &bytes)
}

/// The request an alternate-syntax form stands for: `target` on the path of `uri`, with the
/// form's header fields as headers, its other fields as the query and its `content` as the
/// body. Pure, so it can be fuzzed.
pub fn from_form(
    target: Method,
    uri: &Uri,
    original_headers: &axum::http::HeaderMap,
    form: &[u8],
) -> Result<Request, ApiError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form)
        .map_err(|err| bad(format!("the form body is not url-encoded: {err}")))?;
    let mut headers = original_headers.clone();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let mut content = None;
    let mut parameters = Vec::new();
    for (name, value) in fields {
        let lower = name.to_ascii_lowercase();
        if lower == "content" {
            content = Some(value);
        } else if HEADER_FIELDS.contains(&lower.as_str()) {
            if lower == "content-length" {
                continue;
            }
            let header_name =
                HeaderName::from_bytes(lower.as_bytes()).map_err(|_| bad("bad header field"))?;
            let header_value = HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("form field {name} is not a valid header value")))?;
            headers.insert(header_name, header_value);
        } else {
            parameters.push((name, value));
        }
    }
    let version = headers
        .get(crate::version::HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(XapiVersion::from_header);
    if version == Some(XapiVersion::V2_0_0) {
        return Err(bad(
            "xAPI 2.0.0 has no alternate request syntax; send a real PUT/GET/DELETE",
        ));
    }
    if content.is_some() && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let query = serde_urlencoded::to_string(&parameters)
        .map_err(|_| bad("cannot re-encode the parameters"))?;
    let path_and_query = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{query}", uri.path())
    };
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| bad("the form fields do not make a valid request"))?;
    let mut rebuilt = Request::new(Body::from(content.unwrap_or_default()));
    *rebuilt.method_mut() = target;
    *rebuilt.uri_mut() = uri;
    *rebuilt.headers_mut() = headers;
    Ok(rebuilt)
}
