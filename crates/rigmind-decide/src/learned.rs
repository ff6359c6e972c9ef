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
        let n = self.sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(self.sorted[n / 2]),
            _ => Some((self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0),
        }
    }
}
