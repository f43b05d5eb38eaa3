//! Timestamps as Docker writes them: RFC 3339 in UTC with nanoseconds
//! (`2024-05-01T12:00:00.123456789Z`), and back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Docker's "never" (the zero `time.Time` of Go).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `t` as RFC 3339 with nanoseconds, UTC: Docker's fixed nine digits.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    OffsetDateTime::from(t.max(UNIX_EPOCH))
        .format(fmt)
        .unwrap_or_else(|_| ZERO_TIME.to_string())
}

pub fn now() -> String {
    rfc3339_nano(SystemTime::now())
}

/// Parses RFC 3339 (any number of fraction digits, `Z` or an offset); times before the
/// epoch (Docker's zero time among them) come back as the epoch.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(SystemTime::from(t).max(UNIX_EPOCH))
}

/// Seconds since the epoch, as the Docker API's integer `Created` fields want.
pub fn unix_seconds(s: &str) -> i64 {
    parse_rfc3339(s)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// "2 seconds", "About a minute", "3 hours"... as Docker's `ps` STATUS column says it.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

/// How long ago the RFC 3339 time `s` was.
pub fn since(s: &str) -> Duration {
    parse_rfc3339(s)
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        let s = rfc3339_nano(t);
        assert_eq!(s, "2024-05-01T12:00:00.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
    }

    #[test]
    fn parses_short_fractions_and_offsets() {
        let t = parse_rfc3339("2024-05-01T14:00:00.5+02:00").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::new(1_714_564_800, 500_000_000));
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(unix_seconds("1970-01-01T00:01:00Z"), 60);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2 hours");
    }
}
