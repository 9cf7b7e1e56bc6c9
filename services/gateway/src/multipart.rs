//! `multipart/mixed` as xAPI uses it for statements with attachments: a first part of
//! `application/json` statements, then one part per attachment, each with an
//! `X-Experience-API-Hash` header. Small and strict on purpose: the multipart crates in reach
//! are built for `multipart/form-data` and its `Content-Disposition` names, which xAPI parts
//! do not have.

use std::collections::HashMap;

use bytes::Bytes;

/// One part: its headers (lowercased names) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let media = pieces.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    pieces.find_map(|piece| {
        let (name, value) = piece.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|boundary| !boundary.is_empty())
    })
}

/// The first `needle` in `haystack` at or after `from`: linear in the haystack whatever the
/// needle (memchr's two-way search), so a crafted boundary cannot make parsing quadratic.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|at| at + from)
}

/// Why a body did not split into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// More parts than the caller allows.
    TooManyParts,
    /// What is wrong, for the 400.
    Malformed(String),
}

impl From<&str> for Error {
    fn from(reason: &str) -> Error {
        Error::Malformed(reason.to_owned())
    }
}

impl From<String> for Error {
    fn from(reason: String) -> Error {
        Error::Malformed(reason)
    }
}

/// Splits a body into at most `max_parts` parts, in one pass over the body.
pub fn parse(body: &Bytes, boundary: &str, max_parts: usize) -> Result<Vec<Part>, Error> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let next_delimiter = [b"\r\n".as_slice(), delimiter].concat();
    let mut at = find(body, delimiter, 0).ok_or("the body has no multipart boundary line")?;
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Ok(parts);
        }
        if parts.len() == max_parts {
            return Err(Error::TooManyParts);
        }
        // The rest of the boundary line (transport padding), then CRLF.
        let line_end = find(body, b"\r\n", after).ok_or("a boundary line does not end in CRLF")?;
        let start = line_end + 2;
        let next = find(body, &next_delimiter, start)
            .ok_or("the multipart body does not end with its closing boundary")?;
        parts.push(parse_part(body.slice(start..next))?);
        at = next + 2;
    }
}

fn parse_part(raw: Bytes) -> Result<Part, Error> {
    let header_end = if raw.starts_with(b"\r\n") {
        0
    } else {
        find(&raw, b"\r\n\r\n", 0).ok_or("a part has no blank line after its headers")? + 2
    };
    let head = std::str::from_utf8(&raw[..header_end]).map_err(|_| "part headers are not UTF-8")?;
    let mut headers = HashMap::new();
    for line in head.split("\r\n").filter(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed part header {line:?}"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Ok(Part {
        headers,
        body: raw.slice(header_end + 2..),
    })
}

/// Builds a `multipart/mixed` body; returns it with its boundary.
pub fn build(parts: &[(Vec<(&str, String)>, Bytes)]) -> (Vec<u8>, String) {
    let boundary = format!("leerspoor-{}", uuid::Uuid::new_v4().simple());
    let mut out = Vec::new();
    for (headers, body) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (out, boundary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/mixed; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Mixed; charset=x; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("multipart/form-data; boundary=abc"), None);
        assert_eq!(boundary("multipart/mixed"), None);
    }

    #[test]
    fn parts_round_trip_with_binary_bodies() {
        let binary = Bytes::from_static(&[0, 159, 146, 150, b'\r', b'\n', b'-', b'-']);
        let (body, boundary) = build(&[
            (
                vec![("Content-Type", "application/json".into())],
                Bytes::from_static(b"{}"),
            ),
            (
                vec![("X-Experience-API-Hash", "abc".into())],
                binary.clone(),
            ),
        ]);
        let parts = parse(&Bytes::from(body), &boundary, 10).expect("parses");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-type"), Some("application/json"));
        assert_eq!(parts[0].body, Bytes::from_static(b"{}"));
        assert_eq!(parts[1].header("x-experience-api-hash"), Some("abc"));
        assert_eq!(parts[1].body, binary);
    }

    #[test]
    fn the_test_suite_layout_parses() {
        // A leading CRLF, headers without a space after the colon, no trailing CRLF.
        let body = Bytes::from_static(b"\r\n--xyz\r\nContent-Type:application/json\r\n\r\n[1]\r\n--xyz\r\nContent-Type:text/plain\r\nX-Experience-API-Hash:h\r\n\r\nhello\r\n--xyz--");
        let parts = parse(&body, "xyz", 10).expect("parses");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].body, Bytes::from_static(b"hello"));
        assert_eq!(parts[1].header("x-experience-api-hash"), Some("h"));
    }

    #[test]
    fn more_parts_than_allowed_are_refused() {
        let parts: Vec<(Vec<(&str, String)>, Bytes)> =
            (0..5).map(|_| (vec![], Bytes::from_static(b"x"))).collect();
        let (body, boundary) = build(&parts);
        let body = Bytes::from(body);
        assert_eq!(parse(&body, &boundary, 5).map(|p| p.len()), Ok(5));
        assert_eq!(parse(&body, &boundary, 4), Err(Error::TooManyParts));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"--xyz",
            b"--xyz\r\nContent-Type: a\r\n\r\nno end",
            b"garbage",
        ] {
            assert!(parse(&Bytes::copy_from_slice(body), "xyz", 10).is_err());
        }
    }
}
