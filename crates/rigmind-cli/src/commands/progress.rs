//! How `run` and `wait` show a batch's progress: a bar (indicatif) when stderr is
//! a terminal, otherwise what they always printed — `run` a line per change
//! (`[   1.2s] batch ...`), `wait` nothing until the end — so that scripts and
//! tests reading the output see no difference.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rigmind_queue::batch::BatchRecord;

/// The counts of a batch in words (the progress line without its batch name).
pub fn counts_line(r: &BatchRecord) -> String {
    let c = r.counts;
    format!(
        "{}/{} complete, {} running, {} queued, {} retrying, {} waiting, {} failed",
        c.complete,
        c.total,
        c.running.min(c.processing),
        c.queued.saturating_sub(c.retrying),
        c.retrying,
        c.pending,
        c.failed
    )
}

/// The progress line `run` prints when stderr is not a terminal.
pub fn progress_line(r: &BatchRecord) -> String {
    format!("batch {} '{}': {}", r.batch_id, r.name, counts_line(r))
}

/// A batch's progress as it is shown.
pub enum Progress {
    /// On a terminal: a bar of finished tasks with the counts beside it.
    Bar(ProgressBar),
    /// Not on a terminal, for `run`: a line each time the counts change.
    Lines { last: String, t0: Instant },
    /// Not on a terminal, for `wait`: nothing.
    Quiet,
}

impl Progress {
    /// For `run`: a bar on a terminal, else lines timed from `t0`.
    pub fn for_run(t0: Instant) -> Self {
        Self::bar_or(Self::Lines {
            last: String::new(),
            t0,
        })
    }

    /// For `wait`: a bar on a terminal, else nothing.
    pub fn for_wait() -> Self {
        Self::bar_or(Self::Quiet)
    }

    fn bar_or(plain: Self) -> Self {
        if !std::io::stderr().is_terminal() {
            return plain;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{elapsed:>6} [{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self::Bar(bar)
    }

    /// Shows the batch as its record now says.
    pub fn update(&mut self, r: &BatchRecord) {
        match self {
            Self::Bar(bar) => {
                let c = r.counts;
                bar.set_length(c.total as u64);
                bar.set_position((c.complete + c.failed) as u64);
                bar.set_message(format!("{} '{}': {}", r.batch_id, r.name, counts_line(r)));
            }
            Self::Lines { last, t0 } => {
                let line = progress_line(r);
                if line != *last {
                    eprintln!("[{:>7.1}s] {line}", t0.elapsed().as_secs_f64());
                    *last = line;
                }
            }
            Self::Quiet => {}
        }
    }

    /// Takes the bar off the screen before the summary is printed.
    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
