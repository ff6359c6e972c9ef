//! Training samples: one JSON line per llm task run (prompt and response), appended
//! to `training_samples.jsonl` by concurrent workers without interleaving.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One prompt/response pair, as a line of `training_samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSample {
    /// When the response was complete (RFC 3339).
    pub ts: String,
    pub task_id: String,
    pub batch_id: String,
    pub task_name: String,
    pub model: String,
    pub system: Option<String>,
    /// The full prompt sent (the fenced prompt).
    pub prompt: String,
    pub response: String,
    pub eval_count: Option<u64>,
    pub tokens_per_second: Option<f64>,
}

/// Now, as RFC 3339 UTC with milliseconds (for [`TrainingSample::ts`]).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Appends `sample` to `path` as one JSON line, creating the parent directory and
/// the file as needed.
///
/// The line goes out in a single `write` on a file opened with `O_APPEND`, so lines
/// from concurrent writers (threads or processes) never interleave.
pub fn append_sample(path: &Path, sample: &TrainingSample) -> io::Result<()> {
    let mut line = serde_json::to_vec(sample).map_err(io::Error::other)?;
    line.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let n = f.write(&line)?;
    if n < line.len() {
        // Only a full disk or a signal makes a regular-file write short; finish the
        // line rather than leave half of it.
        f.write_all(&line[n..])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sample(i: usize, t: usize) -> TrainingSample {
        TrainingSample {
            ts: now_rfc3339(),
            task_id: format!("t{t}-{i}"),
            batch_id: "b1".into(),
            task_name: "summarise".into(),
            model: "qwen2.5:7b".into(),
            system: (i & 1 == 0).then(|| "be brief".into()),
            // Big lines make interleaving likely if writes were not atomic.
            prompt: format!("prompt {i} \"quoted\"\n{}", "x".repeat(20_000 + i)),
            response: format!("response {i}"),
            eval_count: Some(i as u64),
            tokens_per_second: Some(12.5),
        }
    }

    #[test]
    fn concurrent_appends_give_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("nested/dir/training_samples.jsonl"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = Arc::clone(&path);
                std::thread::spawn(move || {
                    for i in 0..40 {
                        append_sample(&path, &sample(i, t)).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let text = fs::read_to_string(&*path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 * 40);
        for l in lines {
            let s: TrainingSample = serde_json::from_str(l).expect("a whole JSON line");
            assert!(s.prompt.starts_with("prompt "));
            assert!(chrono::DateTime::parse_from_rfc3339(&s.ts).is_ok());
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let s = sample(3, 0);
        append_sample(&path, &s).unwrap();
        let back: TrainingSample =
            serde_json::from_str(fs::read_to_string(&path).unwrap().trim_end()).unwrap();
        assert_eq!(back, s);
    }
}
