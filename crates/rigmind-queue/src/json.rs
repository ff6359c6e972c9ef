//! Reading the queue's JSON files into their types, with an error that names the
//! file and, when a value is wrong (an unknown state, a bad time), the field.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::QueueError;

/// Parses `bytes` (the contents of `path`, a `what`) into `T`.
pub fn from_slice<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Invalid {
        path: path.to_path_buf(),
        what,
        reason: reason(bytes, &e),
    })
}

/// serde's message, and for a wrong value the field it is in: serde points at the
/// line and column of the value but does not say which field holds it. (A missing
/// field is named by serde itself, at the object's end, after some other key.)
pub fn reason(bytes: &[u8], e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let wrong_value =
        e.classify() == serde_json::error::Category::Data && !msg.starts_with("missing field");
    let field = wrong_value
        .then(|| field_at(bytes, e.line(), e.column()))
        .flatten();
    match field {
        Some(f) => format!("field '{f}': {msg}"),
        None => msg,
    }
}

/// The last object key that starts before `line`:`column` (1-based) on that line.
fn field_at(bytes: &[u8], line: usize, column: usize) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let line = text.lines().nth(line.checked_sub(1)?)?;
    let upto = line.get(..column.min(line.len()))?;
    let mut key = None;
    let mut chars = upto.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        // A string: find its end, then see whether a ':' follows (a key).
        let mut end = None;
        while let Some((j, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        if upto[end + 1..].trim_start().starts_with(':') {
            key = Some(upto[i + 1..end].to_string());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Rec {
        name: String,
        #[serde(with = "crate::time::rfc3339")]
        at: chrono::DateTime<chrono::Utc>,
        state: crate::task::TaskStatus,
    }

    #[test]
    fn a_wrong_value_names_its_field() {
        let p = Path::new("workers/w.json");
        let pretty = b"{\n  \"name\": \"a:b\",\n  \"at\": \"soon\",\n  \"state\": \"queued\"\n}";
        let e = from_slice::<Rec>(p, "record", pretty)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "workers/w.json: not a valid record: field 'at': 'soon' is not an RFC 3339 time"
            ),
            "{e}"
        );
        let one_line = br#"{"name":"x","at":"2026-01-01T00:00:00Z","state":"asleep"}"#;
        let e = from_slice::<Rec>(p, "record", one_line)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field 'state': unknown variant `asleep`"), "{e}");
        let e = from_slice::<Rec>(p, "record", b"{")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("field"), "{e}");
        let e = from_slice::<Rec>(p, "record", br#"{"name":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid record: missing field `at`"), "{e}");
    }
}
