//! Per-endpoint request rates: an `[[endpoint]]` with `requests_per_minute = N`
//! gets at most N task starts in any 60 s window, across all workers.
//!
//! Each such endpoint has a small file `tasks/rate/<endpoint>.json` listing the
//! times of its starts in the last minute. The claim lock ([`crate::claim`])
//! reads it before choosing a task and adds to it after claiming one of the
//! endpoint's tasks, so counting and claiming are one step for the whole rig, as
//! for concurrency groups. A start is the claim: the request follows at once, and
//! a claimed task that fails before its request still counts (the safe side).
//! The file is rewritten whole (atomically) and not flushed: a power cut forgets
//! at most a minute of starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::QueueError;
use crate::fsio;
use crate::layout::Layout;

/// The window `requests_per_minute` counts over.
pub fn window() -> TimeDelta {
    TimeDelta::seconds(60)
}

/// `tasks/rate/<endpoint>.json`: one endpoint's recent starts, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartLog {
    pub endpoint: String,
    /// Its `requests_per_minute` at the last start (for `rigmind status`).
    pub limit: u32,
    pub starts: Vec<DateTime<Utc>>,
}

/// How many of `starts` fall in the `window` that ends at `now`.
pub fn starts_within(starts: &[DateTime<Utc>], now: DateTime<Utc>, window: TimeDelta) -> usize {
    starts
        .iter()
        .filter(|s| in_window(**s, now, window))
        .count()
}

/// Whether a start at `s` counts in the `window` that ends at `now`.
fn in_window(s: DateTime<Utc>, now: DateTime<Utc>, window: TimeDelta) -> bool {
    s > now - window && s <= now
}

/// When the next start is allowed under `limit` starts per `window`: `None` when
/// one is allowed at `now`, else the moment the oldest start that keeps the
/// count at the limit leaves the window.
pub fn next_start(
    starts: &[DateTime<Utc>],
    now: DateTime<Utc>,
    window: TimeDelta,
    limit: u32,
) -> Option<DateTime<Utc>> {
    let mut recent: Vec<DateTime<Utc>> = starts
        .iter()
        .copied()
        .filter(|s| in_window(*s, now, window))
        .collect();
    let limit = limit as usize;
    if limit == 0 || recent.len() < limit {
        return None;
    }
    recent.sort();
    Some(recent[recent.len() - limit] + window)
}

/// The file of `endpoint`'s starts.
pub fn path(layout: &Layout, endpoint: &str) -> PathBuf {
    let safe = crate::task::encode_name(endpoint, usize::MAX).0;
    layout.rate_dir().join(format!("{safe}.json"))
}

/// `endpoint`'s recent starts; none when the file is missing or unreadable (a
/// damaged file would otherwise hold the endpoint's tasks forever).
pub fn read(layout: &Layout, endpoint: &str) -> Vec<DateTime<Utc>> {
    read_log(&path(layout, endpoint)).map_or_else(Vec::new, |l| l.starts)
}

fn read_log(path: &Path) -> Option<StartLog> {
    let bytes = fsio::read_regular(path, "rate file").ok()?;
    crate::json::from_slice::<StartLog>(path, "rate file", &bytes).ok()
}

/// Adds a start at `now` to `endpoint`'s file (limit `limit`), dropping those
/// out of the window. Called under the claim lock.
pub fn record_start(
    layout: &Layout,
    endpoint: &str,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let mut starts = read(layout, endpoint);
    starts.retain(|s| in_window(*s, now, window()));
    starts.push(now);
    let dir = layout.rate_dir();
    std::fs::create_dir_all(&dir).map_err(|e| QueueError::io("create directory", &dir, e))?;
    let log = StartLog {
        endpoint: endpoint.to_string(),
        limit,
        starts,
    };
    fsio::write_atomic(
        &path(layout, endpoint),
        &crate::json::to_bytes(&log),
        fsio::Sync::None,
    )
}

/// An endpoint whose tasks wait for its `requests_per_minute`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateHold {
    pub endpoint: String,
    /// Starts in the last minute.
    pub starts: usize,
    pub limit: u32,
    /// When the next start is allowed.
    pub until: DateTime<Utc>,
}

/// The endpoints of `rates` (name → `requests_per_minute`) at their limit now.
pub fn holds(layout: &Layout, rates: &BTreeMap<String, u32>, now: DateTime<Utc>) -> Vec<RateHold> {
    rates
        .iter()
        .filter_map(|(endpoint, &limit)| hold(endpoint, &read(layout, endpoint), limit, now))
        .collect()
}

/// The endpoints at their limit now by the files alone (each with the limit it
/// was last claimed under): what `rigmind status` shows.
pub fn holds_recorded(layout: &Layout, now: DateTime<Utc>) -> Vec<RateHold> {
    let dir = layout.rate_dir();
    let names = fsio::list_names(&dir).unwrap_or_default();
    names
        .iter()
        .filter_map(|n| read_log(&dir.join(n)))
        .filter_map(|l| hold(&l.endpoint, &l.starts, l.limit, now))
        .collect()
}

fn hold(
    endpoint: &str,
    starts: &[DateTime<Utc>],
    limit: u32,
    now: DateTime<Utc>,
) -> Option<RateHold> {
    let until = next_start(starts, now, window(), limit)?;
    Some(RateHold {
        endpoint: endpoint.to_string(),
        starts: starts_within(starts, now, window()),
        limit,
        until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn no_window_ever_holds_more_starts_than_the_limit() {
        // A 10 s window, limit 3: start whenever allowed, from 0 to 60 s.
        let window = TimeDelta::seconds(10);
        let mut starts = Vec::new();
        for t in 0..60 {
            if next_start(&starts, at(t), window, 3).is_none() {
                starts.push(at(t));
            }
        }
        assert_eq!(&starts[..4], &[at(0), at(1), at(2), at(10)]);
        for t in 0..70 {
            assert!(starts_within(&starts, at(t), window) <= 3, "at {t}");
        }
    }

    #[test]
    fn the_next_start_comes_when_the_oldest_counted_start_leaves_the_window() {
        let window = TimeDelta::seconds(60);
        let starts = [at(0), at(5), at(20)];
        assert_eq!(next_start(&starts, at(30), window, 4), None);
        assert_eq!(next_start(&starts, at(30), window, 3), Some(at(60)));
        assert_eq!(next_start(&starts, at(30), window, 2), Some(at(65)));
        assert_eq!(next_start(&starts, at(61), window, 3), None);
        assert_eq!(starts_within(&starts, at(61), window), 2);
    }

    #[test]
    fn starts_are_recorded_and_read_back_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        record_start(&layout, "a/b", 1, at(0)).unwrap();
        record_start(&layout, "a/b", 1, at(70)).unwrap();
        assert_eq!(
            read(&layout, "a/b"),
            vec![at(70)],
            "the old start is dropped"
        );
        assert!(read(&layout, "other").is_empty());
        let rates = BTreeMap::from([("a/b".to_string(), 1), ("other".to_string(), 1)]);
        let holds = holds(&layout, &rates, at(80));
        assert_eq!(holds.len(), 1);
        assert_eq!((holds[0].starts, holds[0].until), (1, at(130)));
        assert_eq!(holds_recorded(&layout, at(80)), holds);
        assert!(holds_recorded(&layout, at(130)).is_empty());
    }
}
