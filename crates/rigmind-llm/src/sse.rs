//! Server-sent events, as the OpenAI and Anthropic APIs stream them: lines of
//! `event: NAME` and `data: TEXT`, an event ending at a blank line, `:` lines
//! being comments (keep-alive pings).
//!
//! Both APIs put the event's kind inside the JSON data too, so only the data is
//! handed on; several `data:` lines of one event are joined with newlines, as the
//! SSE specification says.

/// Collects the lines of one event at a time.
#[derive(Default)]
pub(crate) struct SseParser {
    data: Option<String>,
}

impl SseParser {
    /// Takes one line (with or without its line ending); returns an event's data
    /// when the line ends one.
    pub(crate) fn line(&mut self, line: &[u8]) -> Option<String> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return self.data.take();
        }
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => self.data = Some(rest.to_string()),
            }
        }
        // `event:`, `id:`, `retry:` and comments carry nothing we use.
        None
    }

    /// The data of an event the stream ended without a blank line after.
    pub(crate) fn finish(&mut self) -> Option<String> {
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_blank_lines() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for l in [
            ": ping\n",
            "event: message_start\n",
            "data: {\"a\":1}\r\n",
            "\n",
            "data: x\n",
            "data: y\n",
            "\n",
            "data: [DONE]",
        ] {
            out.extend(p.line(l.as_bytes()));
        }
        out.extend(p.finish());
        assert_eq!(out, ["{\"a\":1}", "x\ny", "[DONE]"]);
    }
}
