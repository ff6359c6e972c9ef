//! Timestamps as written into files: RFC 3339, UTC, milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, as written into task files and logs.
pub fn now_rfc3339() -> String {
    to_rfc3339(Utc::now())
}

/// A time as written into task files and logs.
pub fn to_rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a timestamp written by [`to_rfc3339`] (or any RFC 3339 time).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
