//! `X-Experience-API-Version`: required on every request but `GET /xapi/about`, and sent on
//! every response in the version the client spoke.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xapi::XapiVersion;

use crate::error::ApiError;

pub const HEADER: &str = "X-Experience-API-Version";

pub async fn negotiate(mut request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(HEADER)
        .map(|value| value.to_str().ok().and_then(XapiVersion::from_header));
    // The summary API is Leerspoor's own, not xAPI: no version to negotiate.
    if !request.uri().path().starts_with("/xapi/") {
        return next.run(request).await;
    }
    let is_about = request.uri().path() == "/xapi/about";
    let version = match declared {
        Some(Some(version)) => version,
        Some(None) => {
            return stamp(
                ApiError::BadRequest(format!(
                    "{HEADER} must be 1.0.x or 2.0.x; this LRS speaks 1.0.3 and 2.0.0"
                ))
                .into_response(),
                XapiVersion::V2_0_0,
            )
        }
        None if is_about => XapiVersion::V2_0_0,
        None => {
            return stamp(
                ApiError::BadRequest(format!("the {HEADER} header is required")).into_response(),
                XapiVersion::V2_0_0,
            )
        }
    };
    request.extensions_mut().insert(version);
    stamp(next.run(request).await, version)
}

fn stamp(mut response: Response, version: XapiVersion) -> Response {
    response
        .headers_mut()
        .insert(HEADER, HeaderValue::from_static(version.as_str()));
    response
}
