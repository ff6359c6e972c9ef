//! Aging: a waiting task's effective priority rises with its age, so that a stream
//! of high-priority work cannot hold a low-priority task back for ever.
//!
//! A task gains one priority level per `[scheduling] aging_seconds_per_level` (rig.toml;
//! 0 turns aging off) since it was created (`created_at`, its submission), up to
//! priority 9: resource tasks (priority 10) always come first, and a task written
//! with priority 10 keeps it. Among tasks of equal effective priority the older
//! (lower submission sequence) comes first. So a priority-`p` task waits behind
//! fresh priority-`q` work for at most `(q - p + 1) × aging_seconds_per_level` after
//! it is queued. Running tasks are never preempted: aging only orders claims.
//!
//! A claim ([`crate::claim::QueueIndex::best`]) stays cheap on a long queue: it
//! looks at the first claimable task of each written priority (a later sequence
//! is taken as no older) and at no priority that aging cannot lift to the best
//! found; while no task has waited a whole level it is the written order's scan.
//!
//! File names keep the written priority (`pRR`, see queue-layout.md): `ls` shows
//! the claim order as written, and a task that has aged may be claimed before
//! tasks listed above it.

use chrono::{DateTime, Utc};

/// The priority aging never goes past (resource tasks have 10).
const TOP: u8 = 9;

/// How priorities age (rig.toml `[scheduling] aging_seconds_per_level`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Aging {
    /// Seconds of waiting per priority level gained; 0 (or less): no aging.
    pub secs_per_level: f64,
}

impl Aging {
    /// No aging: the written priority alone.
    pub const OFF: Aging = Aging {
        secs_per_level: 0.0,
    };

    pub fn new(secs_per_level: f64) -> Self {
        Self { secs_per_level }
    }

    /// Whether priorities age at all.
    pub fn on(&self) -> bool {
        self.secs_per_level > 0.0 && self.secs_per_level.is_finite()
    }

    /// Levels gained by a task created at `created` by `now` (0 without a time).
    pub fn levels(&self, created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u8 {
        let Some(created) = created.filter(|_| self.on()) else {
            return 0;
        };
        let waited = (now - created).num_milliseconds().max(0) as f64 / 1000.0;
        (waited / self.secs_per_level).floor().min(f64::from(TOP)) as u8
    }

    /// The effective rank (`10 - priority`, as in file names: lower is claimed
    /// first) of a task of written rank `rank` created at `created`, at `now`.
    pub fn rank(&self, rank: u8, created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u8 {
        let floor = rank.min(10 - TOP);
        rank.saturating_sub(self.levels(created, now)).max(floor)
    }

    /// The most levels any task created at or after `oldest` can have gained by
    /// `now`: how far past its written rank a claim must look.
    pub fn reach(&self, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u8 {
        self.levels(oldest, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_task_gains_a_level_per_period_up_to_priority_nine() {
        let a = Aging::new(300.0);
        // Priority 1 (rank 9), created at 0.
        assert_eq!(a.rank(9, Some(t(0)), t(299)), 9);
        assert_eq!(a.rank(9, Some(t(0)), t(300)), 8);
        assert_eq!(a.rank(9, Some(t(0)), t(1800)), 3);
        // Never past priority 9 (rank 1): resource tasks (rank 0) stay first.
        assert_eq!(a.rank(9, Some(t(0)), t(100_000)), 1);
        assert_eq!(a.rank(0, Some(t(0)), t(100_000)), 0);
        // Off, or no creation time: the written rank.
        assert_eq!(Aging::OFF.rank(9, Some(t(0)), t(100_000)), 9);
        assert_eq!(a.rank(9, None, t(100_000)), 9);
    }
}
