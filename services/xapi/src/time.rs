//! Timestamps and durations as xAPI restricts ISO 8601.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// Parses an xAPI timestamp: ISO 8601 extended date-time with a time zone (RFC 3339).
/// The "unknown local offset" forms `-00`, `-0000` and `-00:00` are refused, as xAPI requires.
pub fn parse_timestamp(value: &str) -> Result<DateTime<FixedOffset>, &'static str> {
    if value.ends_with("-00:00") || value.ends_with("-0000") || value.ends_with("-00") {
        return Err("the offset -00:00 (unknown local offset) is not allowed");
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(value) {
        return Ok(parsed);
    }
    // ISO 8601 also allows `+hhmm` and `+hh` offsets, which RFC 3339 does not.
    DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_str(&format!("{value}00"), "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map_err(|_| "not an ISO 8601 date-time with a time zone, e.g. 2026-11-26T10:00:00.000Z")
}

/// The form the LRS writes `stored` (and a missing `timestamp`) in: UTC, milliseconds.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an ISO 8601 duration (`PT1H30M`, `P1DT2.5S`, `P2W`) into seconds.
/// Years and months are taken as 365 and 30 days: xAPI durations of learning never need more.
///
/// Hand-written because the `iso8601` crate accepts forms ISO 8601 forbids (`PTH`, a
/// fraction on an element that is not the last), which xAPI requires an LRS to refuse.
pub fn parse_duration_seconds(value: &str) -> Result<f64, &'static str> {
    const RULE: &str = "not an ISO 8601 duration, e.g. PT1H30M or P1DT2.5S";
    let rest = value.strip_prefix('P').ok_or(RULE)?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return Err(RULE),
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return Err(RULE);
    }
    let date_units: &[(char, f64)] = &[
        ('Y', 365.0 * 86_400.0),
        ('M', 30.0 * 86_400.0),
        ('W', 7.0 * 86_400.0),
        ('D', 86_400.0),
    ];
    let time_units: &[(char, f64)] = &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)];
    let date_elements = elements(date, date_units).ok_or(RULE)?;
    // Weeks stand alone: `P4W`, never `P4W1D`.
    if date.contains('W') && (date_elements.len() > 1 || time.is_some()) {
        return Err(RULE);
    }
    let mut seconds: f64 = date_elements.iter().sum();
    if let Some(time) = time {
        seconds += elements(time, time_units).ok_or(RULE)?.iter().sum::<f64>();
    }
    // Only the last element of the whole duration may carry a fraction.
    let fraction_at = value.find(['.', ',']);
    if let Some(at) = fraction_at {
        let after = &value[at + 1..];
        if after.chars().filter(|c| c.is_ascii_alphabetic()).count() != 1 {
            return Err(RULE);
        }
    }
    Ok(seconds)
}

/// `<number><unit>` elements in the order of `units`, each unit at most once; their seconds.
fn elements(text: &str, units: &[(char, f64)]) -> Option<Vec<f64>> {
    let mut found = Vec::new();
    let mut next_unit = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || c == '.' || c == ',' {
            number.push(if c == ',' { '.' } else { c });
            continue;
        }
        let offset = units[next_unit..].iter().position(|(unit, _)| *unit == c)?;
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return None;
        }
        let amount: f64 = number.parse().ok()?;
        found.push(amount * units[next_unit + offset].1);
        next_unit += offset + 1;
        number.clear();
    }
    number.is_empty().then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_zone_parse() {
        for ok in [
            "2013-05-18T05:32:34.804Z",
            "2013-05-18T05:32:34Z",
            "2008-09-15T15:53:00.601+00:00",
            "2013-05-18T05:32:34.804+0200",
            "2013-05-18T05:32:34+02",
        ] {
            assert!(parse_timestamp(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn timestamps_without_zone_or_with_unknown_offset_fail() {
        for bad in [
            "should fail",
            "01/011/2015",
            "2008-09-15T15:53:00.601-00",
            "2008-09-15T15:53:00.601-0000",
            "2008-09-15T15:53:00.601-00:00",
            "2013-02-30T05:32:34Z",
            "",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_count_seconds() {
        assert_eq!(parse_duration_seconds("PT1H30M"), Ok(5_400.0));
        assert_eq!(parse_duration_seconds("P1DT2.5S"), Ok(86_402.5));
        assert_eq!(parse_duration_seconds("P2W"), Ok(1_209_600.0));
        assert!(parse_duration_seconds("1H").is_err());
        assert!(parse_duration_seconds("PT").is_err());
        assert!(parse_duration_seconds("P4W1D").is_err());
        assert!(parse_duration_seconds("PTH").is_err());
        assert!(parse_duration_seconds("PT1.5H1M").is_err());
        assert!(parse_duration_seconds("PT1M1H").is_err());
        assert_eq!(
            parse_duration_seconds("P1Y2M3DT4H5M6.07S"),
            Ok(36_993_906.07)
        );
        assert_eq!(parse_duration_seconds("PT0,5S"), Ok(0.5));
        assert!(parse_duration_seconds("").is_err());
    }
}
