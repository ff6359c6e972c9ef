//! Timestamps as written into files: RFC 3339, UTC, milliseconds.
//!
//! This module is the one place that says how a time looks on disk. The file types
//! hold `chrono::DateTime<Utc>` and name one of the serde adapters below
//! ([`rfc3339`], [`rfc3339_opt`], [`rfc3339_or_empty`]); they all write
//! [`to_rfc3339`]'s form (`2026-01-01T00:00:00.000Z`) and read every RFC 3339 form
//! an older rigmind or a person wrote (with or without fractional seconds, `Z` or
//! an offset such as `+00:00`).
//!
//! A file holds milliseconds, so a time is truncated to the millisecond when it is
//! taken ([`now`], [`millis`]): the value in memory is then the value read back.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to what a file holds (milliseconds).
pub fn now() -> DateTime<Utc> {
    millis(Utc::now())
}

/// `t` truncated to the millisecond, as a file holds it.
pub fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

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

/// Parses a file's timestamp text, or says what was wrong with it.
fn parse_field<E: serde::de::Error>(s: &str) -> Result<DateTime<Utc>, E> {
    parse_rfc3339(s).ok_or_else(|| {
        E::custom(format!(
            "'{s}' is not an RFC 3339 time (expected e.g. 2026-01-01T00:00:00.000Z)"
        ))
    })
}

/// Serde adapter for a required `DateTime<Utc>` field.
pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        parse_field(&text)
    }
}

/// Serde adapter for an `Option<DateTime<Utc>>` field: `None` is written as
/// `null` (fields that leave it out say `skip_serializing_if`); `null` and an
/// empty string read as `None`.
pub mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&to_rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => parse_field(&text).map(Some),
        }
    }
}

/// Serde adapter for an `Option<DateTime<Utc>>` field that files have always
/// written, as `""` when unknown (a task file's `created_at`, the brain record's
/// times): `None` is written as `""`, and reads back from `""`, `null` or a
/// missing field (with `#[serde(default)]`).
pub mod rfc3339_or_empty {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.map(to_rfc3339).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        super::rfc3339_opt::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Times {
        #[serde(with = "rfc3339")]
        at: DateTime<Utc>,
        #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
        maybe: Option<DateTime<Utc>>,
        #[serde(default, with = "rfc3339_or_empty")]
        created: Option<DateTime<Utc>>,
    }

    #[test]
    fn every_old_form_reads_and_writes_in_the_one_form() {
        for text in [
            "2026-01-01T10:00:00.250Z",
            "2026-01-01T10:00:00.250+00:00",
            "2026-01-01T11:00:00.250+01:00",
            "2026-01-01T10:00:00.250123Z",
        ] {
            let json = format!(r#"{{"at":"{text}","maybe":"{text}","created":"{text}"}}"#);
            let t: Times = serde_json::from_str(&json).unwrap();
            let want = "2026-01-01T10:00:00.250Z";
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!(r#"{{"at":"{want}","maybe":"{want}","created":"{want}"}}"#),
                "{text}"
            );
        }
        let t: Times = serde_json::from_str(r#"{"at":"2026-01-01T10:00:00Z"}"#).unwrap();
        assert_eq!(to_rfc3339(t.at), "2026-01-01T10:00:00.000Z");
        assert_eq!((t.maybe, t.created), (None, None));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"at":"2026-01-01T10:00:00.000Z","created":""}"#
        );
    }

    #[test]
    fn a_bad_time_is_an_error_that_quotes_it() {
        let e = serde_json::from_str::<Times>(r#"{"at":"yesterday"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'yesterday' is not an RFC 3339 time"), "{e}");
        let empty = r#"{"at":"2026-01-01T10:00:00Z","maybe":"","created":null}"#;
        let t: Times = serde_json::from_str(empty).unwrap();
        assert_eq!((t.maybe, t.created), (None, None));
    }

    #[test]
    fn now_is_what_a_file_gives_back() {
        let t = now();
        assert_eq!(parse_rfc3339(&to_rfc3339(t)), Some(t));
    }
}
