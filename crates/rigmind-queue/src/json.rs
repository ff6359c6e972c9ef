//! The queue's JSON files as bytes: how every one is written ([`to_bytes`]: pretty,
//! so that `cat` reads well, and a final newline) and read ([`from_slice`], with an
//! error that names the file and, when a value is wrong (an unknown state, a bad
//! time), the field).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A file's bytes as written to disk: pretty JSON and a newline.
pub fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("the queue's file types always serialise");
    bytes.push(b'\n');
    bytes
}

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

/// serde's message, and for a wrong word or time the field that holds it. serde
/// does not say which field failed (and with the flattened unknown fields of a task
/// file, its line and column can point past it), so the fields whose value is the
/// word it quotes are named.
pub fn reason(bytes: &[u8], e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let fields = quoted_word(&msg)
        .map(|word| fields_holding(bytes, word))
        .unwrap_or_default();
    if fields.is_empty() {
        return msg;
    }
    let names: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
    format!("field {}: {msg}", names.join(" or "))
}

/// The value a serde message quotes: an unknown enum word, or a time that is not
/// one (`crate::time`'s message).
fn quoted_word(msg: &str) -> Option<&str> {
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        return rest.split_once('`').map(|(w, _)| w);
    }
    let rest = msg.strip_prefix('\'')?;
    rest.split_once("' is not an RFC 3339 time").map(|(w, _)| w)
}

/// The top-level fields of a JSON object whose value is `word`, or a list with it.
fn fields_holding(bytes: &[u8], word: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(bytes) else {
        return Vec::new();
    };
    let holds = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s == word,
        serde_json::Value::Array(a) => a.iter().any(|x| x.as_str() == Some(word)),
        _ => false,
    };
    map.iter()
        .filter(|(_, v)| holds(v))
        .map(|(k, _)| k.clone())
        .collect()
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
        state: State,
    }

    /// A state word, as the queue's files hold them (a local one: the task
    /// file's own sits above this module).
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Queued,
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
