//! Lists without scans: every summary has one key per sortable field, ordered by the field's
//! value, kept up to date with the summary in the same sled batch. A list sorted by a field
//! reads that field's keys in order (reversed for descending) and loads only the page; its
//! cost depends on the page, not on how many workers there are. How many summaries of each
//! kind there are is a counter beside them.
//!
//! `o` + kind(1) + field(1) + value(8, order-preserving f64) + id -> empty.

use crate::summary::{CompanyState, HubState, WorkerState};

pub const ORDER: u8 = b'o';
/// `mcount` + kind -> u64: how many summaries of the kind exist.
const COUNT: &[u8] = b"mcount";
/// Present once the order keys cover every summary (databases made before them get them at
/// open).
pub const BUILT: &[u8] = b"morder1";

/// The bytes of `value` whose order is the order of the numbers (NaN last).
pub fn encode(value: f64) -> [u8; 8] {
    let bits = value.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

pub fn prefix(kind: u8, field: u8) -> [u8; 3] {
    [ORDER, kind, field]
}

pub fn key(kind: u8, field: u8, value: f64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(11 + id.len());
    key.extend_from_slice(&prefix(kind, field));
    key.extend_from_slice(&encode(value));
    key.extend_from_slice(id.as_bytes());
    key
}

/// The id at the end of an order key.
pub fn id_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(11..).unwrap_or_default()).into_owned()
}

/// A list cursor: the key a page ended at, without its 3-byte prefix, as hex (opaque to
/// clients; URL-safe).
pub fn cursor_of(key: &[u8], prefix_len: usize) -> String {
    key.get(prefix_len..)
        .unwrap_or_default()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The key a cursor names under `prefix`, or why it is not a cursor.
pub fn key_of_cursor(prefix: &[u8], cursor: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("cursor {cursor:?} is not one this list gave");
    if cursor.is_empty() || !cursor.len().is_multiple_of(2) || cursor.len() > 2048 {
        return Err(bad());
    }
    let mut key = prefix.to_vec();
    for pair in cursor.as_bytes().chunks(2) {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        key.push(u8::from_str_radix(text, 16).map_err(|_| bad())?);
    }
    Ok(key)
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

pub fn count_key(kind: u8) -> Vec<u8> {
    let mut key = COUNT.to_vec();
    key.push(kind);
    key
}

/// The sortable fields of a kind (by its key prefix), in field-number order.
pub fn fields(kind: u8) -> &'static [&'static str] {
    match kind {
        crate::projection::WORKER => &WorkerState::SORTABLE,
        crate::projection::HUB => &HubState::SORTABLE,
        _ => &CompanyState::SORTABLE,
    }
}

/// Writes into `batch` the order keys that change when a summary goes from `before` to
/// `after` (`None`: no summary). Returns the change in the kind's count (-1, 0, 1).
///
/// `beneath`, for a part written behind: the summary's values as the layers under the
/// overlay's active one hold them (`Some(None)`: no summary there). A key of `before` that
/// is not one of those was written into the active layer by an earlier pull, so the part
/// forgets it ([`crate::part::Part::forget`]) rather than removing it.
pub fn update(
    batch: &mut crate::part::Part,
    kind: u8,
    id: &str,
    before: Option<&[f64]>,
    after: Option<&[f64]>,
    beneath: Option<Option<&[f64]>>,
) -> i64 {
    let fields = fields(kind).len();
    for field in 0..fields {
        let old = before.and_then(|values| values.get(field)).copied();
        let new = after.and_then(|values| values.get(field)).copied();
        if old.map(f64::to_bits) == new.map(f64::to_bits) {
            continue;
        }
        let field = u8::try_from(field).unwrap_or(u8::MAX);
        if let Some(old) = old {
            let under = beneath.map(|values| {
                values
                    .and_then(|values| values.get(usize::from(field)))
                    .map(|value| value.to_bits())
            });
            match under {
                Some(under) if under != Some(old.to_bits()) => {
                    batch.forget(key(kind, field, old, id));
                }
                _ => batch.remove(key(kind, field, old, id)),
            }
        }
        if let Some(new) = new {
            batch.insert(key(kind, field, new, id), Vec::new());
        }
    }
    i64::from(after.is_some()) - i64::from(before.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_the_key_it_came_from() {
        let key = key(b'w', 0, 12.5, "mbox:mailto:a@example.org");
        let cursor = cursor_of(&key, 3);
        assert_eq!(key_of_cursor(&prefix(b'w', 0), &cursor), Ok(key));
        assert!(key_of_cursor(&prefix(b'w', 0), "zz").is_err());
        assert!(key_of_cursor(&prefix(b'w', 0), "abc").is_err());
        assert_eq!(prefix_end(&[b'o', b'w', 0]), vec![b'o', b'w', 1]);
        assert_eq!(prefix_end(&[b'o', 0xff]), vec![b'p']);
    }

    #[test]
    fn encoded_numbers_sort_as_numbers() {
        let mut values = vec![3.5, -1.0, 0.0, f64::MIN, 1e12, -0.5, 2.0, f64::MAX, -1e12];
        let mut encoded: Vec<[u8; 8]> = values.iter().map(|value| encode(*value)).collect();
        encoded.sort();
        values.sort_by(f64::total_cmp);
        assert_eq!(
            encoded,
            values
                .iter()
                .map(|value| encode(*value))
                .collect::<Vec<_>>()
        );
    }
}
