//! `X-Experience-API-Version`: required on every request but `GET /xapi/about`, and sent on
//! every response in the version the client spoke.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xapi::XapiVersion;

use crate::error::ApiError;

pub const HEADER: &str = "X-Experience-API-Version";

/// The versions a deployment speaks (`[gateway] xapi_versions`), oldest first; never empty.
#[derive(Debug, Clone)]
pub struct Versions(std::sync::Arc<[XapiVersion]>);

impl Versions {
    /// Both 1.0.3 and 2.0.0.
    pub fn all() -> Self {
        Versions(XapiVersion::ALL.into())
    }

    /// The configured list (`"1.0.3"`, `"2.0.0"`, or a `1.0.x`/`2.0.x` spelling of them).
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut versions = Vec::new();
        for name in names {
            let version = XapiVersion::from_header(name).ok_or_else(|| {
                format!("xapi_versions: {name:?} is not an xAPI version (1.0.3 or 2.0.0)")
            })?;
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        if versions.is_empty() {
            return Err("xapi_versions names no version: give 1.0.3, 2.0.0 or both".into());
        }
        versions.sort();
        Ok(Versions(versions.into()))
    }

    pub fn speaks(&self, version: XapiVersion) -> bool {
        self.0.contains(&version)
    }

    /// The latest version spoken: what a request that names none is answered in.
    pub fn latest(&self) -> XapiVersion {
        self.0.last().copied().unwrap_or(XapiVersion::V2_0_0)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|version| version.as_str()).collect()
    }

    fn listed(&self) -> String {
        self.names().join(" and ")
    }
}

pub async fn negotiate(
    State(versions): State<Versions>,
    mut request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(HEADER)
        .map(|value| value.to_str().ok().and_then(XapiVersion::from_header));
    // The summary API is Leerspoor's own, not xAPI: no version to negotiate.
    if !request.uri().path().starts_with("/xapi/") {
        return next.run(request).await;
    }
    let is_about = request.uri().path() == "/xapi/about";
    let latest = versions.latest();
    let version = match declared {
        Some(Some(version)) if versions.speaks(version) => version,
        Some(Some(version)) => {
            return stamp(
                ApiError::BadRequest(format!(
                    "{HEADER} {} is not spoken here: this LRS speaks {}",
                    version.as_str(),
                    versions.listed()
                ))
                .into_response(),
                latest,
            )
        }
        Some(None) => {
            return stamp(
                ApiError::BadRequest(format!(
                    "{HEADER} must be 1.0.x or 2.0.x; this LRS speaks {}",
                    versions.listed()
                ))
                .into_response(),
                latest,
            )
        }
        None if is_about => latest,
        None => {
            return stamp(
                ApiError::BadRequest(format!("the {HEADER} header is required")).into_response(),
                latest,
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
