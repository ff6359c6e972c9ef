//! What really ran, in the simulator's shapes: a batch's task files, and the
//! `load_llm` / `unload_llm` tasks that ran while it was live, turned into a
//! [`Comparison`] of one run. `rigmind report --svg` draws a live run with the same
//! [`crate::svg`] as `simulate --svg` draws a prediction, so the two can be laid side
//! by side.
//!
//! Times are seconds from the batch's submission. A task still running ends "now".
//! The lower bound is the simulator's terms 1 and 2 over the *observed* durations:
//! the longest chain of the batch's tasks, and their summed time over the workers
//! that ran them (no load counted: the run shows its loads).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rigmind_decide::resources::RmPolicy;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::task::{ResourceAction, TaskFile, RESOURCE_BATCH};
use rigmind_types::{Executor, TaskClass};

use crate::bound::BoundTerms;
use crate::compare::{Comparison, PolicyRun};
use crate::engine::{GpuTimeline, Segment, SegmentKind, SimResult};

/// The run of `batch` as `tasks` record it (the batch's own task files and any
/// resource tasks; others are ignored), at `now`.
pub fn observed(batch: &BatchRecord, tasks: &[TaskFile], now: DateTime<Utc>) -> Comparison {
    let t0 = batch.submitted_at;
    let end = batch.finished_at.unwrap_or(now);
    let makespan = secs_between(t0, end);
    let mut rows: BTreeMap<String, Vec<Segment>> = BTreeMap::new();
    let mut brain = Vec::new();
    let mut own: Vec<&TaskFile> = Vec::new();
    for t in tasks {
        let Some(started) = t.started_at else {
            continue;
        };
        let resource = t.batch_id == RESOURCE_BATCH;
        if !(resource || t.batch_id == batch.batch_id) || started < t0 || started > end {
            continue;
        }
        let seg = Segment {
            start: secs_between(t0, started),
            end: secs_between(t0, t.finished_at.unwrap_or(now).min(end)),
            kind: kind_of(t),
        };
        if !resource {
            own.push(t);
        }
        match (&t.worker_id, t.executor) {
            (_, Executor::Brain) => brain.push(seg),
            (Some(w), _) => rows.entry(w.clone()).or_default().push(seg),
            (None, _) => {}
        }
    }
    let gpus: Vec<GpuTimeline> = rows
        .into_iter()
        .map(|(worker, segs)| timeline(worker, segs, makespan))
        .collect();
    let bound = observed_bound(&own, gpus.len());
    let loaded = tasks
        .iter()
        .filter(|t| t.resource_action() == Some(ResourceAction::LoadLlm))
        .filter_map(|t| {
            let at = t.started_at.filter(|s| *s >= t0 && *s <= end)?;
            Some((
                secs_between(t0, at),
                t.worker_id.clone()?,
                t.model.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let result = SimResult {
        // The report does not know the live policy; the field is for simulations.
        policy: RmPolicy::Adaptive,
        makespan_s: makespan,
        loaded,
        batch_ends: vec![(batch.batch_id.clone(), makespan)],
        loads: count(&gpus, |k| matches!(k, SegmentKind::Load)),
        unloads: count(&gpus, |k| matches!(k, SegmentKind::Unload)),
        gpu_busy_fraction: busy_fraction(&gpus, makespan),
        tasks_completed: own.iter().filter(|t| t.finished_at.is_some()).count(),
        gpus,
        brain_segments: brain,
    };
    Comparison {
        plan: format!("{} ({})", batch.name, batch.batch_id),
        gpus: result.gpus.len(),
        lower_bound_s: bound.max(),
        bound,
        runs: vec![PolicyRun {
            policy: "live run".into(),
            static_llm_cards: None,
            static_tried: Vec::new(),
            outcome: Ok(result),
        }],
        warnings: Vec::new(),
    }
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    ((b - a).num_milliseconds() as f64 / 1000.0).max(0.0)
}

fn kind_of(t: &TaskFile) -> SegmentKind {
    match t.resource_action() {
        Some(ResourceAction::LoadLlm) => SegmentKind::Load,
        Some(ResourceAction::UnloadLlm) => SegmentKind::Unload,
        _ => SegmentKind::Task {
            name: t.name.clone(),
            class: t.task_class.unwrap_or(TaskClass::Cpu),
        },
    }
}

/// A worker's row: its segments in time order with the totals the chart prints.
fn timeline(worker: String, mut segments: Vec<Segment>, makespan: f64) -> GpuTimeline {
    segments.sort_by(|a, b| a.start.total_cmp(&b.start));
    let len = |s: &Segment| (s.end - s.start).max(0.0);
    // Folded from +0.0: an empty f64 sum is -0.0, which prints as "-0.0 s".
    let busy_s = segments
        .iter()
        .filter(|s| matches!(s.kind, SegmentKind::Task { .. }))
        .map(len)
        .fold(0.0, |a, b| a + b);
    let loading_s = segments
        .iter()
        .filter(|s| !matches!(s.kind, SegmentKind::Task { .. }))
        .map(len)
        .fold(0.0, |a, b| a + b);
    GpuTimeline {
        llm_capable: segments
            .iter()
            .any(|s| matches!(s.kind, SegmentKind::Load | SegmentKind::Unload)),
        idle_s: (makespan - busy_s - loading_s).max(0.0),
        worker,
        segments,
        busy_s,
        loading_s,
    }
}

fn count(gpus: &[GpuTimeline], f: impl Fn(&SegmentKind) -> bool) -> usize {
    gpus.iter()
        .flat_map(|g| &g.segments)
        .filter(|s| f(&s.kind))
        .count()
}

fn busy_fraction(gpus: &[GpuTimeline], makespan: f64) -> f64 {
    if gpus.is_empty() || makespan <= 0.0 {
        return 0.0;
    }
    gpus.iter().map(|g| g.busy_s).sum::<f64>() / (makespan * gpus.len() as f64)
}

/// Terms 1 and 2 of [`crate::bound`] over the observed durations of the batch's
/// tasks that finished: the longest dependency chain, and their summed time over
/// `workers`.
fn observed_bound(own: &[&TaskFile], workers: usize) -> BoundTerms {
    let took = |t: &TaskFile| -> f64 {
        match (t.started_at, t.finished_at) {
            (Some(s), Some(f)) => secs_between(s, f),
            _ => 0.0,
        }
    };
    let by_id: HashMap<&str, &TaskFile> = own.iter().map(|t| (t.task_id.as_str(), *t)).collect();
    // Longest chain ending at each task, memoised; the DAG is acyclic (the plan was).
    let mut chain: HashMap<&str, f64> = HashMap::new();
    for t in own {
        let mut stack = vec![(t.task_id.as_str(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if chain.contains_key(id) {
                continue;
            }
            let Some(task) = by_id.get(id) else { continue };
            let deps = task
                .depends_on
                .iter()
                .filter(|d| by_id.contains_key(d.as_str()));
            if !expanded {
                stack.push((id, true));
                stack.extend(deps.map(|d| (d.as_str(), false)));
                continue;
            }
            let before = deps
                .filter_map(|d| chain.get(d.as_str()))
                .fold(0.0f64, |a, b| a.max(*b));
            chain.insert(id, before + took(task));
        }
    }
    let on_workers: f64 = own
        .iter()
        .filter(|t| t.executor == Executor::Worker)
        .map(|t| took(t))
        .fold(0.0, |a, b| a + b);
    BoundTerms {
        critical_path_s: chain.values().fold(0.0, |a, b| a.max(*b)),
        all_gpus_s: if workers > 0 {
            on_workers / workers as f64
        } else {
            0.0
        },
        llm_cards_s: 0.0,
        groups_s: 0.0,
        packed_path_s: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn task(batch: &str, id: &str, worker: &str, from: i64, to: Option<i64>) -> TaskFile {
        let mut t = TaskFile::new(batch, id, TaskClass::Script);
        t.task_id = id.into();
        t.worker_id = Some(worker.into());
        t.started_at = Some(at(from));
        t.finished_at = to.map(at);
        t
    }

    #[test]
    fn a_run_becomes_one_row_per_worker_with_its_loads_and_bound() {
        let mut b = BatchRecord::submitted("b1", "demo", "p.md".into(), ".".into(), at(0), 3, 1);
        b.finished_at = Some(at(20));
        let mut ask = task("b1", "ask", "gpu0", 8, Some(12));
        ask.task_class = Some(TaskClass::Llm);
        ask.depends_on = vec!["prep".into()];
        let mut post = task("b1", "post", "gpu1", 12, Some(20));
        post.depends_on = vec!["ask".into()];
        let mut load = TaskFile::resource(ResourceAction::LoadLlm, "gpu0", "m", 60.0);
        load.worker_id = Some("gpu0".into());
        load.started_at = Some(at(5));
        load.finished_at = Some(at(8));
        let other = task("b2", "elsewhere", "gpu1", 1, Some(2));
        let tasks = vec![
            task("b1", "prep", "gpu0", 0, Some(5)),
            ask,
            post,
            load,
            other,
        ];
        let c = observed(&b, &tasks, at(100));
        let r = c.runs[0].outcome.as_ref().unwrap();
        assert_eq!(r.makespan_s, 20.0);
        assert_eq!((r.loads, r.unloads, r.tasks_completed), (1, 0, 3));
        let names: Vec<&str> = r.gpus.iter().map(|g| g.worker.as_str()).collect();
        assert_eq!(names, ["gpu0", "gpu1"]);
        assert_eq!(r.gpus[0].segments.len(), 3, "prep, load, ask");
        assert!(matches!(r.gpus[0].segments[1].kind, SegmentKind::Load));
        assert_eq!((r.gpus[0].busy_s, r.gpus[0].loading_s), (9.0, 3.0));
        assert_eq!(
            r.gpus[1].segments.len(),
            1,
            "another batch's task is left out"
        );
        // Chain prep (5) -> ask (4) -> post (8); 17 s of work over 2 workers.
        assert_eq!(c.bound.critical_path_s, 17.0);
        assert_eq!(c.bound.all_gpus_s, 8.5);
        assert!(crate::svg(&c).contains("live run: makespan"));
    }

    #[test]
    fn a_running_task_ends_now() {
        let b = BatchRecord::submitted("b1", "demo", "p.md".into(), ".".into(), at(0), 1, 1);
        let c = observed(&b, &[task("b1", "long", "gpu0", 2, None)], at(30));
        let r = c.runs[0].outcome.as_ref().unwrap();
        assert_eq!(r.makespan_s, 30.0);
        assert_eq!(r.gpus[0].segments[0].end, 30.0);
        assert_eq!(r.tasks_completed, 0);
    }
}
