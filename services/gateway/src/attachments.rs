//! Statement attachments: matching the parts of a `multipart/mixed` request to the
//! statements' attachment metadata, checking hashes and JWS signatures, and keeping the
//! bodies in a NATS Object Store bucket (chunked there, so size is not bound by NATS's
//! message limit).

use std::collections::HashMap;

use async_nats::jetstream::{self, object_store};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use crate::error::ApiError;
use crate::multipart::Part;

use xapi::USAGE_SIGNATURE as SIGNATURE_USAGE;

/// The attachment bucket.
#[derive(Clone)]
pub struct AttachmentStore {
    bucket: object_store::ObjectStore,
}

impl AttachmentStore {
    pub async fn open(js: &jetstream::Context, stream_replicas: usize) -> anyhow::Result<Self> {
        let bucket = bus::subjects::attachment_bucket(js, stream_replicas).await?;
        Ok(AttachmentStore { bucket })
    }

    /// Stores a body under its hash; a body already there is not written again.
    pub async fn put(&self, sha2: &str, body: &Bytes) -> Result<(), ApiError> {
        if self.bucket.info(sha2).await.is_ok() {
            return Ok(());
        }
        let mut reader = body.as_ref();
        self.bucket.put(sha2, &mut reader).await.map_err(|err| {
            tracing::warn!(error = %err, "storing an attachment failed");
            ApiError::Unavailable("the attachment store is unavailable; nothing was stored".into())
        })?;
        Ok(())
    }

    /// The body stored under a hash, if any.
    pub async fn get(&self, sha2: &str) -> Result<Option<Bytes>, ApiError> {
        let mut object = match self.bucket.get(sha2).await {
            Ok(object) => object,
            Err(err) if err.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(err) => {
                tracing::warn!(error = %err, "reading an attachment failed");
                return Err(ApiError::Unavailable(
                    "the attachment store is unavailable".into(),
                ));
            }
        };
        let mut body = Vec::new();
        object.read_to_end(&mut body).await.map_err(|err| {
            tracing::warn!(error = %err, "reading an attachment failed");
            ApiError::Unavailable("the attachment store is unavailable".into())
        })?;
        Ok(Some(Bytes::from(body)))
    }
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

/// The SHA-2 of `body` in the variant the hex length names (224, 256, 384, 512 bits).
fn sha2_hex(body: &[u8], hex_length: usize) -> Option<String> {
    let digest = match hex_length {
        56 => format!("{:x}", sha2::Sha224::digest(body)),
        64 => format!("{:x}", sha2::Sha256::digest(body)),
        96 => format!("{:x}", sha2::Sha384::digest(body)),
        128 => format!("{:x}", sha2::Sha512::digest(body)),
        _ => return None,
    };
    Some(digest)
}

fn attachments(statement: &Value) -> &[Value] {
    statement
        .get("attachments")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every attachment without a `fileUrl` needs its body in the request.
pub fn require_no_raw_attachments(statements: &[Value]) -> Result<(), ApiError> {
    for (index, statement) in statements.iter().enumerate() {
        for (position, attachment) in attachments(statement).iter().enumerate() {
            if attachment.get("fileUrl").is_none() {
                return Err(bad(format!(
                    "statement {index}: attachment {position} has no fileUrl, so its body must be sent as a multipart/mixed part"
                )));
            }
        }
    }
    Ok(())
}

/// Matches attachment parts to the statements: every part carries a correct hash and
/// `Content-Transfer-Encoding: binary` and belongs to an attachment; every attachment without
/// a `fileUrl` has its part. Returns the bodies by hash.
pub fn match_parts(
    statements: &[Value],
    parts: Vec<Part>,
) -> Result<HashMap<String, Bytes>, ApiError> {
    let mut bodies = HashMap::new();
    for (index, part) in parts.into_iter().enumerate() {
        let number = index + 2;
        let encoding = part.header("content-transfer-encoding").unwrap_or("");
        if !encoding.eq_ignore_ascii_case("binary") {
            return Err(bad(format!(
                "part {number} must have Content-Transfer-Encoding: binary"
            )));
        }
        let declared = part
            .header("x-experience-api-hash")
            .ok_or_else(|| bad(format!("part {number} has no X-Experience-API-Hash header")))?
            .to_ascii_lowercase();
        let actual = sha2_hex(&part.body, declared.len()).ok_or_else(|| {
            bad(format!(
                "part {number}: X-Experience-API-Hash is not a SHA-2 hex digest"
            ))
        })?;
        if actual != declared {
            return Err(bad(format!(
                "part {number}: its body does not hash to its X-Experience-API-Hash"
            )));
        }
        bodies.insert(declared, part.body);
    }
    let mut referenced = std::collections::HashSet::new();
    for (index, statement) in statements.iter().enumerate() {
        for (position, attachment) in attachments(statement).iter().enumerate() {
            let sha2 = attachment
                .get("sha2")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if bodies.contains_key(&sha2) {
                referenced.insert(sha2);
            } else if attachment.get("fileUrl").is_none() {
                return Err(bad(format!(
                    "statement {index}: attachment {position} (sha2 {sha2}) has no fileUrl and no part in the request"
                )));
            }
        }
    }
    if let Some(extra) = bodies.keys().find(|sha2| !referenced.contains(*sha2)) {
        return Err(bad(format!(
            "the part with hash {extra} belongs to no attachment"
        )));
    }
    Ok(bodies)
}

/// Checks every signature attachment: a JWS in compact form, signed with RS256/384/512, whose
/// payload is the statement as sent (without its attachments). The signature itself is not
/// verified against a key: xAPI leaves trust in the signer to the reader.
pub fn check_signatures(
    statements: &[Value],
    bodies: &HashMap<String, Bytes>,
    limits: &xapi::limits::Limits,
) -> Result<(), ApiError> {
    for (index, statement) in statements.iter().enumerate() {
        for attachment in attachments(statement) {
            if attachment.get("usageType").and_then(Value::as_str) != Some(SIGNATURE_USAGE) {
                continue;
            }
            let sha2 = attachment
                .get("sha2")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            let Some(jws) = bodies.get(&sha2) else {
                return Err(bad(format!(
                    "statement {index}: the signature attachment has no body in the request"
                )));
            };
            check_jws(statement, jws, limits).map_err(|reason| {
                bad(format!("statement {index}: malformed signature: {reason}"))
            })?;
        }
    }
    Ok(())
}

pub fn check_jws(
    statement: &Value,
    jws: &[u8],
    limits: &xapi::limits::Limits,
) -> Result<(), String> {
    let text = std::str::from_utf8(jws)
        .map_err(|_| "the JWS is not text")?
        .trim();
    let segments: Vec<&str> = text.split('.').collect();
    let [header, payload, signature] = segments.as_slice() else {
        return Err("a JWS has three dot-separated parts".into());
    };
    let decode = |segment: &str, what: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .map_err(|_| format!("the JWS {what} is not base64url"))
    };
    let header: Value = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|_| "the JWS header is not JSON")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !matches!(alg, "RS256" | "RS384" | "RS512") {
        return Err(format!("algorithm {alg:?} is not RS256, RS384 or RS512"));
    }
    if decode(signature, "signature")?.is_empty() {
        return Err("the JWS signature is empty".into());
    }
    let payload = decode(payload, "payload")?;
    xapi::limits::check_depth(&payload, limits).map_err(|exceeded| exceeded.to_string())?;
    let signed: Value =
        serde_json::from_slice(&payload).map_err(|_| "the JWS payload is not a JSON statement")?;
    let strip = |value: &Value| -> Value {
        let mut value = value.clone();
        if let Some(object) = value.as_object_mut() {
            for key in ["attachments", "stored", "authority", "version"] {
                object.remove(key);
            }
        }
        value
    };
    if !xapi::statement::equivalent(&strip(&signed), &strip(statement)) {
        return Err("the JWS payload is not the statement it is attached to".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn part(body: &'static [u8], hash: Option<String>, encoding: Option<&str>) -> Part {
        let mut headers = HashMap::new();
        if let Some(hash) = hash {
            headers.insert("x-experience-api-hash".to_owned(), hash);
        }
        if let Some(encoding) = encoding {
            headers.insert("content-transfer-encoding".to_owned(), encoding.to_owned());
        }
        Part {
            headers,
            body: Bytes::from_static(body),
        }
    }

    fn statement_with(sha2: &str) -> Value {
        json!({"attachments": [{"usageType": "http://x.example/u", "display": {"en": "x"},
            "contentType": "text/plain", "length": 5, "sha2": sha2}]})
    }

    #[test]
    fn parts_must_hash_right_and_belong_to_an_attachment() {
        let hash = format!("{:x}", sha2::Sha256::digest(b"hello"));
        let statements = [statement_with(&hash)];
        let good = part(b"hello", Some(hash.clone()), Some("binary"));
        assert!(match_parts(&statements, vec![good.clone()]).is_ok());
        assert!(match_parts(&statements, vec![]).is_err(), "missing part");
        assert!(match_parts(
            &statements,
            vec![part(b"hellO", Some(hash.clone()), Some("binary"))]
        )
        .is_err());
        assert!(match_parts(&statements, vec![part(b"hello", None, Some("binary"))]).is_err());
        assert!(match_parts(&statements, vec![part(b"hello", Some(hash.clone()), None)]).is_err());
        let other = format!("{:x}", sha2::Sha256::digest(b"other"));
        assert!(
            match_parts(
                &statements,
                vec![good, part(b"other", Some(other), Some("binary"))]
            )
            .is_err(),
            "extra part"
        );
    }

    fn jws(header: &Value, payload: &[u8]) -> Bytes {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Bytes::from(format!(
            "{}.{}.{}",
            encode(header.to_string().as_bytes()),
            encode(payload),
            encode(b"sig")
        ))
    }

    #[test]
    fn signatures_must_be_rs_jws_of_the_statement() {
        let limits = xapi::limits::Limits::default();
        let check = |statement: &Value, jws: &[u8]| check_jws(statement, jws, &limits);
        let statement = json!({"actor": {"mbox": "mailto:a@b.c"}, "verb": {"id": "http://x.example/v"}, "object": {"id": "http://x.example/a"}});
        let good = jws(&json!({"alg": "RS256"}), statement.to_string().as_bytes());
        assert!(check(&statement, &good).is_ok());
        let hs256 = jws(&json!({"alg": "HS256"}), statement.to_string().as_bytes());
        assert!(check(&statement, &hs256).is_err());
        assert!(check(&statement, &jws(&json!({"alg": "RS256"}), b"{'actor': 1}")).is_err());
        let other = json!({"actor": {"mbox": "mailto:x@b.c"}, "verb": {"id": "http://x.example/v"}, "object": {"id": "http://x.example/a"}});
        let signed_other = jws(&json!({"alg": "RS512"}), other.to_string().as_bytes());
        assert!(check(&statement, &signed_other).is_err());
        assert!(check(&statement, b"not.a.jws.at.all").is_err());
        assert!(check(&statement, b"\xff\xfe").is_err());
        // A payload whose duration is no duration, with a multi-byte character: an error for
        // the signature check, not a panic.
        let mut odd = statement.clone();
        odd["result"] = json!({"duration": "\u{e9}S"});
        let odd_jws = jws(&json!({"alg": "RS256"}), odd.to_string().as_bytes());
        assert!(check(&statement, &odd_jws).is_err());
        assert!(check(&odd, &odd_jws).is_ok());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(check(&statement, &jws(&json!({"alg": "RS256"}), deep.as_bytes())).is_err());
    }
}
