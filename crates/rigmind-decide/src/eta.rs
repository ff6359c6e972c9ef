//! Expected finish times of the live batches: the projection the resource
//! manager's policy follows ([`projection_of`]), turned into one time per batch
//! ([`finish_times`]) and noted in the batch records ([`note`]) without rewriting
//! them for nothing.
//!
//! The projection is the one the round already made where there is one
//! (`adaptive`'s chosen plan, or its best way of standing still); the other
//! policies are projected once under the strategy that mirrors them
//! ([`strategy_of`]). So an ETA costs `adaptive` nothing and the others one
//! projection per resource-manager round.

use chrono::{DateTime, Duration, Utc};

use crate::state::BrainState;

/// A record's ETA is rewritten when the new one is more than this many seconds
/// from it...
pub const SLACK_SECS: f64 = 5.0;
/// ...or when it was computed at least this long ago.
pub const REFRESH_SECS: f64 = 60.0;
/// An ETA that moves by more than this (and by more than a tenth of the time it
/// had left) is worth a decision line.
pub const MOVED_A_LOT_SECS: f64 = 60.0;

// The projection a policy follows belongs to the projection, which the policies
// call; its paths here keep working.
pub use crate::projection::{projection_of, strategy_of};

/// Each active batch (in `state.batches` order, the order of
/// [`Work::batch`](crate::resources::Work::batch)) with its expected finish time:
/// `now` plus its projected end, `None` when the projection never ends it. A
/// batch with no work in the projection ends now.
pub fn finish_times(
    state: &BrainState,
    batch_ends: &[f64],
    now: DateTime<Utc>,
) -> Vec<(String, Option<DateTime<Utc>>)> {
    state
        .batches
        .values()
        .filter(|b| b.active())
        .enumerate()
        .map(|(i, b)| {
            let secs = batch_ends.get(i).copied().unwrap_or(0.0);
            (b.record.batch_id.clone(), at(now, secs))
        })
        .collect()
}

/// `now` + `secs`, to the millisecond the records hold (`None`: never, or past
/// what a time can say).
fn at(now: DateTime<Utc>, secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() || secs > 1e12 {
        return None;
    }
    let later = now.checked_add_signed(Duration::milliseconds((secs.max(0.0) * 1000.0) as i64))?;
    Some(rigmind_queue::time::millis(later))
}

/// A batch whose ETA moved a lot ([`MOVED_A_LOT_SECS`]), or appeared or vanished.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub batch: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Notes each active batch's ETA from `batch_ends` in its record, marking the
/// record for writing only when [`due`] says so; returns the batches whose ETA
/// moved a lot, for the decisions log.
pub fn note(state: &mut BrainState, batch_ends: &[f64], now: DateTime<Utc>) -> Vec<Moved> {
    let mut moved = Vec::new();
    for (id, eta) in finish_times(state, batch_ends, now) {
        let Some(b) = state.batches.get_mut(&id) else {
            continue;
        };
        if !due(b.record.eta, b.record.eta_computed_at, eta, now) {
            continue;
        }
        let from = b.record.eta;
        if moved_a_lot(from, eta, now) {
            moved.push(Moved {
                batch: id.clone(),
                from,
                to: eta,
            });
        }
        b.record.eta = eta;
        b.record.eta_computed_at = Some(rigmind_queue::time::millis(now));
        b.dirty = true;
    }
    moved
}

/// Whether a record holding `old` (computed at `computed`) is rewritten with
/// `new`: never computed, appeared or vanished, moved by more than
/// [`SLACK_SECS`], or [`REFRESH_SECS`] old.
pub fn due(
    old: Option<DateTime<Utc>>,
    computed: Option<DateTime<Utc>>,
    new: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(computed) = computed else {
        return true;
    };
    let stale = secs_between(computed, now) >= REFRESH_SECS;
    match (old, new) {
        (Some(o), Some(n)) => stale || secs_between(o, n).abs() > SLACK_SECS,
        (None, None) => stale,
        _ => true,
    }
}

/// Whether an ETA moving from `from` to `to` is worth a line: it appeared or
/// vanished, or moved by more than [`MOVED_A_LOT_SECS`] and a tenth of the time
/// `from` had left.
fn moved_a_lot(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match (from, to) {
        (Some(f), Some(t)) => {
            let by = secs_between(f, t).abs();
            by > MOVED_A_LOT_SECS && by > 0.1 * secs_between(now, f).max(0.0)
        }
        (None, None) => false,
        _ => true,
    }
}

/// Seconds from `a` to `b`.
pub fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{Projection, Strategy};
    use crate::view::{testkit, Card, CardMode, Dep, RigView, RmConfig, RmPolicy, Work};
    use rigmind_queue::batch::BatchRecord;
    use rigmind_types::TaskClass;

    fn t0() -> DateTime<Utc> {
        rigmind_queue::time::parse_rfc3339("2026-01-01T10:00:00Z").unwrap()
    }

    fn card(i: usize, mode: CardMode) -> Card {
        Card {
            model: Some("m".into()),
            in_mode_secs: 1e9,
            load_secs: 100.0,
            ..testkit::card(&format!("w{i}"), mode)
        }
    }

    fn w(class: TaskClass, secs: f64, deps: Vec<usize>, batch: usize) -> Work {
        Work {
            model: (class == TaskClass::Llm).then(|| "m".to_string()),
            deps: deps.into_iter().map(Dep::all).collect(),
            batch,
            ..Work::one(class, secs)
        }
    }

    fn view(policy: RmPolicy, cards: Vec<Card>, work: Vec<Work>) -> RigView {
        RigView {
            config: RmConfig {
                load_secs: 100.0,
                ..testkit::cfg(policy)
            },
            cards,
            work,
            estimates: Default::default(),
            estimate_error: 0.0,
        }
    }

    /// Batch 0: two 100 s scripts then one 50 s llm task; batch 1: one 30 s script.
    fn two_batches() -> Vec<Work> {
        vec![
            w(TaskClass::Script, 100.0, vec![], 0),
            w(TaskClass::Script, 100.0, vec![], 0),
            w(TaskClass::Llm, 50.0, vec![0, 1], 0),
            w(TaskClass::Script, 30.0, vec![], 1),
        ]
    }

    #[test]
    fn each_batch_ends_with_its_last_task() {
        // Two script cards under static-1: card 0 loads (100 s) while card 1 runs
        // the scripts one by one (0-100, 100-200, then batch 1's 200-230); the llm
        // task runs on card 0 at 200-250.
        let cards = vec![card(0, CardMode::Script), card(1, CardMode::Script)];
        let v = view(RmPolicy::Static { llm_cards: 1 }, cards, two_batches());
        let p = projection_of(&v, None);
        assert_eq!(strategy_of(&v), Strategy::Fixed(1));
        assert_eq!(p.batch_ends, vec![250.0, 230.0]);
        assert_eq!(p.makespan, 250.0);
    }

    #[test]
    fn a_batch_the_projection_never_ends_has_no_eta() {
        // static-0: no card ever holds the model; the llm batch never ends, the
        // script batch does.
        let cards = vec![card(0, CardMode::Script)];
        let v = view(RmPolicy::Static { llm_cards: 0 }, cards, two_batches());
        let p = projection_of(&v, None);
        assert!(p.batch_ends[0].is_infinite());
        assert_eq!(p.batch_ends[1], 230.0, "{p:?}");
    }

    #[test]
    fn adaptive_reuses_the_projection_it_followed() {
        let cards = vec![card(0, CardMode::Script), card(1, CardMode::Script)];
        let v = view(RmPolicy::Adaptive, cards, two_batches());
        let d = crate::resources::decide_round(&v);
        // Whatever it chose, the ETA is its own projection's: a plan it follows
        // ends every batch, no later than the slowest sensible plan.
        assert_eq!(d.projection.batch_ends.len(), 2);
        assert!(d.projection.batch_ends.iter().all(|e| *e <= 350.0), "{d:?}");
        assert_eq!(
            d.projection.makespan,
            d.projection.batch_ends.iter().copied().fold(0.0, f64::max)
        );
        // A followed projection is taken as it is.
        let mine = Projection {
            makespan: 1.0,
            now: Vec::new(),
            batch_ends: vec![1.0, 0.5],
        };
        assert_eq!(projection_of(&v, Some(mine.clone())), mine);
    }

    fn state_with(ids: &[&str]) -> BrainState {
        let mut s = BrainState::default();
        for (k, id) in ids.iter().enumerate() {
            let mut r =
                BatchRecord::submitted(id, "p", "p.md".into(), ".".into(), t0(), 1, k as u64);
            r.counts.pending = 1;
            let mut b = crate::state::Batch::new(r, Vec::new());
            b.record.counts.pending = 1;
            b.dirty = false;
            s.batches.insert(id.to_string(), b);
        }
        s
    }

    #[test]
    fn records_get_their_eta_without_a_write_storm() {
        let mut s = state_with(&["aaaaaa", "bbbbbb"]);
        let moved = note(&mut s, &[200.0, f64::INFINITY], t0());
        let a = &s.batches["aaaaaa"];
        assert_eq!(a.record.eta, Some(t0() + Duration::seconds(200)));
        assert_eq!(a.record.eta_computed_at, Some(t0()));
        assert!(a.dirty);
        // The projection never ends the second: no ETA, but computed.
        let b = &s.batches["bbbbbb"];
        assert_eq!(b.record.eta, None);
        assert!(b.record.eta_computed_at.is_some());
        assert_eq!(moved.len(), 1, "the first ETA appears: {moved:?}");
        for b in s.batches.values_mut() {
            b.dirty = false;
        }
        // A second later, 3 s later than before: nothing is rewritten.
        let t1 = t0() + Duration::seconds(1);
        assert!(note(&mut s, &[202.0, f64::INFINITY], t1).is_empty());
        assert!(s.batches.values().all(|b| !b.dirty));
        assert_eq!(s.batches["aaaaaa"].record.eta_computed_at, Some(t0()));
        // 10 s later than before: rewritten, but not a move worth a line.
        assert!(note(&mut s, &[209.0, f64::INFINITY], t1).is_empty());
        assert!(s.batches["aaaaaa"].dirty && !s.batches["bbbbbb"].dirty);
        // A minute on, the same ETA is rewritten (its computation time).
        let t2 = t1 + Duration::seconds(61);
        note(&mut s, &[148.0, f64::INFINITY], t2);
        assert!(s.batches["bbbbbb"].dirty);
        // Ten minutes later than planned: a move worth a line.
        let moved = note(&mut s, &[748.0, f64::INFINITY], t2);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].batch, "aaaaaa");
    }

    #[test]
    fn due_is_slack_or_age() {
        let n = t0();
        let s = |x: i64| Some(n + Duration::seconds(x));
        assert!(due(None, None, None, n));
        assert!(!due(s(100), Some(n), s(104), n));
        assert!(due(s(100), Some(n), s(106), n));
        assert!(due(s(100), Some(n), None, n));
        assert!(!due(None, Some(n), None, n + Duration::seconds(59)));
        assert!(due(s(100), Some(n), s(100), n + Duration::seconds(60)));
    }
}
