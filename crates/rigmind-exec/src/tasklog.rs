//! A task's log file while its command runs: output capped (head and tail kept,
//! in bounded memory, with a line saying what was cut), and the lines rigmind adds
//! about a run (why it was killed).

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The default cap on a run's output in its log (rig.toml `[logs] max_task_log_mb`).
pub const DEFAULT_MAX_TASK_LOG_MB: u64 = 64;

/// Where one run's output goes: straight to the file up to half the cap, then into
/// a ring of the other half (the tail), written out at [`LogSink::finish`] after a
/// line that says how much was cut.
pub(crate) struct LogSink {
    file: File,
    /// Bytes of output the log keeps; `None`: everything.
    cap: Option<u64>,
    head_left: u64,
    tail: Ring,
    /// The last byte written to the file, to start rigmind's lines on a new line.
    last: u8,
}

impl LogSink {
    pub(crate) fn new(file: File, cap: Option<u64>) -> Self {
        let head = cap.map_or(u64::MAX, |c| c - c / 2);
        let tail = cap.map_or(0, |c| c / 2) as usize;
        Self {
            file,
            cap,
            head_left: head,
            tail: Ring::new(tail),
            last: b'\n',
        }
    }

    /// Writes a line of rigmind's own (it is not output and not capped).
    pub(crate) fn note(&mut self, line: &str) {
        let sep = if self.last == b'\n' { "" } else { "\n" };
        let _ = writeln!(self.file, "{sep}{line}");
        self.last = b'\n';
    }

    /// Appends output.
    pub(crate) fn write(&mut self, chunk: &[u8]) {
        let n = (chunk.len() as u64).min(self.head_left) as usize;
        if n > 0 {
            let _ = self.file.write_all(&chunk[..n]);
            self.head_left -= n as u64;
            self.last = chunk[n - 1];
        }
        if n < chunk.len() {
            self.tail.push(&chunk[n..]);
        }
    }

    /// Writes what the tail kept, after a line saying how much was cut.
    pub(crate) fn finish(&mut self) {
        let cut = self.tail.dropped();
        if cut > 0 {
            let mb = self.cap.unwrap_or(0) as f64 / (1024.0 * 1024.0);
            let mb = if mb.fract() == 0.0 {
                format!("{mb:.0}")
            } else {
                format!("{mb:.2}")
            };
            self.note(&format!(
                "--- rigmind: {cut} bytes cut here (log cap {mb} MB) ---"
            ));
        }
        let (a, b) = self.tail.contents();
        for part in [a, b] {
            if let Some(&l) = part.last() {
                let _ = self.file.write_all(part);
                self.last = l;
            }
        }
        self.tail = Ring::new(0);
    }
}

/// The last `cap` bytes pushed.
struct Ring {
    buf: Vec<u8>,
    cap: usize,
    /// Where the oldest byte is once the ring is full.
    start: usize,
    pushed: u64,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            start: 0,
            pushed: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.pushed += data.len() as u64;
        if self.cap == 0 {
            return;
        }
        let data = &data[data.len().saturating_sub(self.cap)..];
        let free = self.cap - self.buf.len();
        let (fill, mut rest) = data.split_at(free.min(data.len()));
        self.buf.extend_from_slice(fill);
        while !rest.is_empty() {
            let n = (self.cap - self.start).min(rest.len());
            self.buf[self.start..self.start + n].copy_from_slice(&rest[..n]);
            self.start = (self.start + n) % self.cap;
            rest = &rest[n..];
        }
    }

    /// Bytes pushed and not kept.
    fn dropped(&self) -> u64 {
        self.pushed - self.buf.len() as u64
    }

    /// What it keeps, oldest first, in two pieces.
    fn contents(&self) -> (&[u8], &[u8]) {
        (&self.buf[self.start..], &self.buf[..self.start])
    }
}

/// Appends a line of rigmind's own to a task's log (for a kill decided outside the
/// runner, e.g. a cancel by the brain). Errors are logged, not returned: the log
/// is for people, and the kill stands either way.
pub fn append_note(log_path: &Path, line: &str) {
    // Non-blocking open: a FIFO under the log's name must not hang the brain.
    let r = rigmind_queue::fsio::open_regular(
        log_path,
        std::fs::OpenOptions::new().create(true).append(true),
        "task log",
    )
    .map_err(|e| e.to_string())
    .and_then(|mut f| writeln!(f, "\n{line}").map_err(|e| e.to_string()));
    if let Err(e) = r {
        tracing::warn!(log = %log_path.display(), "cannot add to the task's log: {e}");
    }
}

/// The line that says a run was killed, when and why.
pub fn kill_line(at: &str, why: &str) -> String {
    format!("--- rigmind: killed at {at}: {why} ---")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_output(cap: Option<u64>, chunks: &[&[u8]]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut s = LogSink::new(File::create(&p).unwrap(), cap);
        for c in chunks {
            s.write(c);
        }
        s.finish();
        std::fs::read_to_string(&p).unwrap()
    }

    #[test]
    fn under_the_cap_everything_is_kept() {
        assert_eq!(sink_output(Some(100), &[b"abc\n", b"def"]), "abc\ndef");
        assert_eq!(sink_output(None, &[b"abc\n", b"def"]), "abc\ndef");
    }

    #[test]
    fn over_the_cap_head_and_tail_are_kept_with_a_line_between() {
        let out = sink_output(Some(10), &[b"0123456", b"789abcdefghij", b"klmnopqrst"]);
        assert_eq!(
            out,
            "01234\n--- rigmind: 20 bytes cut here (log cap 0.00 MB) ---\npqrst"
        );
        // A single chunk bigger than the whole ring.
        let big = vec![b'x'; 1000];
        let out = sink_output(Some(10), &[b"head-", &big, b"12345"]);
        assert!(
            out.starts_with("head-\n--- rigmind: 1000 bytes cut here"),
            "{out}"
        );
        assert!(out.ends_with("---\n12345"), "{out}");
    }

    #[test]
    fn the_ring_keeps_the_last_bytes_in_order() {
        let mut r = Ring::new(4);
        for c in [&b"ab"[..], b"cde", b"f", b"ghijkl", b"m"] {
            r.push(c);
        }
        let (a, b) = r.contents();
        assert_eq!([a, b].concat(), b"jklm");
        assert_eq!(r.dropped(), 9);
    }
}
