//! Run times seen of one plan task ([`Learned`]): kept in the brain's state
//! ([`crate::state::BrainState::learned`]), read by the estimates
//! ([`crate::estimate`]).

use serde::{Deserialize, Serialize};

/// At most this many run times are kept per plan task. Past it, the shortest and
/// the longest are dropped together, which leaves the median of what is kept where
/// it was (later runs outside the kept range move it a little: an approximation
/// that keeps a 100,000-item plan task's memory and insertion cheap).
const KEEP: usize = 255;

/// Run times seen of one plan task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// The run times kept, shortest first.
    sorted: Vec<f64>,
    /// How many runs were seen (kept or not).
    runs: u32,
}

impl Learned {
    /// Notes one run of `secs` (a negative or non-finite time is ignored).
    pub fn add(&mut self, secs: f64) {
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        let at = self.sorted.partition_point(|s| *s < secs);
        self.sorted.insert(at, secs);
        self.runs += 1;
        if self.sorted.len() > KEEP {
            self.sorted.pop();
            self.sorted.remove(0);
        }
    }

    /// How many runs were seen.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// The median run time (`None` before the first run).
    pub fn median(&self) -> Option<f64> {
        median_of(&self.sorted)
    }

    /// The median of the run times seen that went on past `secs` (`None`: none
    /// did). What a job that has run `secs` is likely to run in all: with
    /// heavy-tailed run times, one that has run long is likely to run on long.
    pub fn median_past(&self, secs: f64) -> Option<f64> {
        median_of(&self.sorted[self.sorted.partition_point(|s| *s <= secs)..])
    }
}

/// The median of `sorted` (shortest first).
fn median_of(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_past_a_time_is_that_of_the_runs_that_went_on() {
        let mut l = Learned::default();
        for s in [10.0, 11.0, 12.0, 40.0, 80.0] {
            l.add(s);
        }
        assert_eq!(l.median(), Some(12.0));
        assert_eq!(
            l.median_past(0.0),
            Some(12.0),
            "from the start: all of them"
        );
        assert_eq!(
            l.median_past(12.0),
            Some(60.0),
            "past 12 s: 40 and 80 went on"
        );
        assert_eq!(l.median_past(80.0), None, "none went on past the longest");
    }
}
