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
pub fn parse_duration_seconds(value: &str) -> Result<f64, &'static str> {
    const RULE: &str = "not an ISO 8601 duration, e.g. PT1H30M or P1DT2.5S";
    // ISO 8601 needs at least one element after `P` and after `T`; the parser accepts `PT`.
    if value.ends_with('P') || value.ends_with('T') {
        return Err(RULE);
    }
    // Weeks stand alone in ISO 8601 (`P4W`, not `P4W1D`).
    if value.contains('W') && !value.ends_with('W') {
        return Err(RULE);
    }
    let parsed = iso8601::duration(value).map_err(|_| RULE)?;
    let seconds = match parsed {
        iso8601::Duration::Weeks(weeks) => f64::from(weeks) * 7.0 * 86_400.0,
        iso8601::Duration::YMDHMS {
            year,
            month,
            day,
            hour,
            minute,
            second,
            millisecond,
        } => {
            f64::from(year) * 365.0 * 86_400.0
                + f64::from(month) * 30.0 * 86_400.0
                + f64::from(day) * 86_400.0
                + f64::from(hour) * 3_600.0
                + f64::from(minute) * 60.0
                + f64::from(second)
                + f64::from(millisecond) / 1_000.0
        }
    };
    Ok(seconds)
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
        assert!(parse_duration_seconds("").is_err());
    }
}
