//! The `keep_alive` request field, decoded the way Ollama decodes it.
//!
//! Ollama (`api.Duration`) takes either a JSON number of seconds or a Go duration
//! string (`"5m"`, `"1h30m"`, `"0"`); any negative value means "keep loaded forever".
//! A bare number inside a string (`"-1"`, `"300"`) is *not* a Go duration and Ollama
//! answers 400 for it; the fake does the same so that clients are tested against the
//! real rule.

use std::time::Duration;

use serde_json::Value;

/// How long a model stays loaded after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload as soon as the request is done (`keep_alive: 0`).
    Zero,
    /// Unload this long after the last request ends.
    For(Duration),
    /// Never expire (any negative `keep_alive`).
    Forever,
}

impl KeepAlive {
    /// Ollama's default when a request carries no `keep_alive`.
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(5 * 60));

    /// Decodes the JSON value of a `keep_alive` field; `null` means "not given".
    pub fn from_json(v: &Value) -> Result<Option<KeepAlive>, String> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => {
                let secs = n
                    .as_f64()
                    .ok_or_else(|| format!("keep_alive: unsupported number {n}"))?;
                Ok(Some(Self::from_secs_f64(secs)))
            }
            Value::String(s) => parse_go_duration(s).map(|ns| Some(Self::from_nanos(ns))),
            other => Err(format!(
                "Unsupported type: '{}'",
                match other {
                    Value::Bool(_) => "bool",
                    Value::Array(_) => "[]interface {}",
                    _ => "map[string]interface {}",
                }
            )),
        }
    }

    /// Parses the text form used on the command line: a Go duration, or a bare number
    /// of seconds (the fake is lenient here, unlike on the wire).
    pub fn parse_cli(s: &str) -> Result<KeepAlive, String> {
        if let Ok(secs) = s.trim().parse::<f64>() {
            return Ok(Self::from_secs_f64(secs));
        }
        parse_go_duration(s).map(Self::from_nanos)
    }

    fn from_secs_f64(secs: f64) -> KeepAlive {
        if secs < 0.0 {
            KeepAlive::Forever
        } else if secs == 0.0 {
            KeepAlive::Zero
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs.min(1e12)))
        }
    }

    fn from_nanos(ns: i128) -> KeepAlive {
        match ns {
            n if n < 0 => KeepAlive::Forever,
            0 => KeepAlive::Zero,
            n => KeepAlive::For(Duration::from_nanos(n.min(u64::MAX as i128) as u64)),
        }
    }
}

/// Parses a Go `time.ParseDuration` string into nanoseconds (signed).
///
/// Grammar: optional sign, then one or more `<decimal><unit>` parts with units
/// `ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`; the lone string `"0"` is allowed.
pub fn parse_go_duration(input: &str) -> Result<i128, String> {
    let err = |why: &str| format!("time: {why} in duration \"{input}\"");
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(format!("time: invalid duration \"{input}\""));
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("time: invalid duration \"{input}\""));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| format!("time: invalid duration \"{input}\""))?;
        s = &s[num_len..];
        let unit_len = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        let scale: f64 = match unit {
            "" => return Err(err("missing unit")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{input}\""
                ))
            }
        };
        total += value * scale;
        s = &s[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(format!("time: invalid duration \"{input}\""));
    }
    let ns = total.round() as i128;
    Ok(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("-1m"), Ok(-60_000_000_000));
        assert_eq!(parse_go_duration("250ms"), Ok(250_000_000));
        assert!(parse_go_duration("-1")
            .unwrap_err()
            .contains("missing unit"));
        assert!(parse_go_duration("300").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5x")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn json_values_follow_ollama() {
        assert_eq!(KeepAlive::from_json(&json!(null)), Ok(None));
        assert_eq!(KeepAlive::from_json(&json!(0)), Ok(Some(KeepAlive::Zero)));
        assert_eq!(KeepAlive::from_json(&json!("0")), Ok(Some(KeepAlive::Zero)));
        assert_eq!(
            KeepAlive::from_json(&json!(-1)),
            Ok(Some(KeepAlive::Forever))
        );
        assert_eq!(
            KeepAlive::from_json(&json!("-5m")),
            Ok(Some(KeepAlive::Forever))
        );
        assert_eq!(
            KeepAlive::from_json(&json!(90)),
            Ok(Some(KeepAlive::For(Duration::from_secs(90))))
        );
        assert_eq!(
            KeepAlive::from_json(&json!("1s")),
            Ok(Some(KeepAlive::For(Duration::from_secs(1))))
        );
        assert!(KeepAlive::from_json(&json!("-1")).is_err());
        assert!(KeepAlive::from_json(&json!(true)).is_err());
    }

    #[test]
    fn cli_form_accepts_bare_seconds() {
        assert_eq!(KeepAlive::parse_cli("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse_cli("0"), Ok(KeepAlive::Zero));
        assert_eq!(
            KeepAlive::parse_cli("10m"),
            Ok(KeepAlive::For(Duration::from_secs(600)))
        );
    }
}
