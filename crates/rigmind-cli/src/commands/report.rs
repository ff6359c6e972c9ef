//! `rigmind report BATCH [--svg FILE]`: what really happened to a batch, read from
//! its batch record and task files (and the `load_llm` / `unload_llm` tasks that ran
//! while it was live): per worker its task, swap and idle time; loads and unloads;
//! failures and retries; per plan task the count, mean and 95th percentile of run
//! times and tokens/s; the slowest tasks. `--svg` writes the Gantt chart of the run,
//! drawn exactly as `rigmind simulate --svg` draws a prediction.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::Utc;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::task::{TaskFile, TaskName, TaskStatus, RESOURCE_BATCH};
use rigmind_queue::{fsio, Layout, TaskDir};
use rigmind_sim::compare::human_secs;
use rigmind_sim::{Comparison, SimResult};

use crate::args::ReportArgs;

/// `rigmind report`: exit 0 once printed (and the SVG written), 2 for an unknown batch.
pub fn report(a: ReportArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let path = layout.batch_file(&a.batch);
    if !path.exists() {
        eprintln!("no batch {} in {}", a.batch, layout.batches_dir().display());
        return Ok(2);
    }
    let batch = BatchRecord::read(&path)?;
    let tasks = tasks_of(&layout, &batch.batch_id)?;
    let run = rigmind_sim::observed(&batch, &tasks, Utc::now());
    if let Some(svg) = &a.svg {
        std::fs::write(svg, rigmind_sim::svg(&run))
            .with_context(|| format!("cannot write {}", svg.display()))?;
    }
    print!("{}", text(&batch, &tasks, &run));
    Ok(0)
}

/// The batch's task files and every resource task, wherever they are now.
fn tasks_of(layout: &Layout, batch: &str) -> Result<Vec<TaskFile>> {
    let mut out = Vec::new();
    for d in TaskDir::ALL {
        let dir = layout.dir(d);
        for name in fsio::list_names(&dir)? {
            let ours = TaskName::parse(&name)
                .is_some_and(|n| n.batch == batch || n.batch == RESOURCE_BATCH);
            if !ours {
                continue;
            }
            // A file moved on between the listing and the read is read in its next
            // directory by the next report; one that is not a task is skipped.
            if let Ok(t) = TaskFile::read(&dir.join(&name)) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

fn text(batch: &BatchRecord, tasks: &[TaskFile], run: &Comparison) -> String {
    let mut o = String::new();
    let Some(Ok(r)) = run.runs.first().map(|p| &p.outcome) else {
        return o;
    };
    o += &format!(
        "batch {} ({}): {}, {} tasks, makespan {} ({:.2}× the bound from observed times, {})\n",
        batch.batch_id,
        batch.name,
        batch.state.as_str(),
        batch.counts.total,
        human_secs(r.makespan_s),
        r.makespan_s / run.lower_bound_s.max(1e-9),
        human_secs(run.lower_bound_s),
    );
    o += &workers_table(r);
    let own: Vec<&TaskFile> = tasks
        .iter()
        .filter(|t| t.batch_id == batch.batch_id)
        .collect();
    let failed = own
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .count();
    let retried: u32 = own.iter().map(|t| t.retry_count).sum();
    o += &format!("failures {failed}, retries {retried}\n");
    o += &per_task_table(&own);
    o += &slowest(&own, 5);
    o
}

fn workers_table(r: &SimResult) -> String {
    let mut o = format!(
        "loads {}, unloads {}, workers busy {:.0}% of the makespan\n{:<14} {:>10} {:>10} {:>10} {:>6}\n",
        r.loads,
        r.unloads,
        100.0 * r.gpu_busy_fraction,
        "worker",
        "tasks",
        "swaps",
        "idle",
        "runs"
    );
    for g in &r.gpus {
        let runs = g
            .segments
            .iter()
            .filter(|s| matches!(s.kind, rigmind_sim::SegmentKind::Task { .. }))
            .count();
        o += &format!(
            "{:<14} {:>10} {:>10} {:>10} {:>6}\n",
            g.worker,
            human_secs(g.busy_s),
            human_secs(g.loading_s),
            human_secs(g.idle_s),
            runs
        );
    }
    o
}

/// Count, mean and p95 of the run time, and mean tokens/s, per plan task.
fn per_task_table(own: &[&TaskFile]) -> String {
    let mut by: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for t in own {
        let Some(e) = t.elapsed_seconds else { continue };
        // The brain's own tasks (`@execute_plan`) have no plan task: their name stands.
        let key = if t.plan_task_id.is_empty() {
            &t.name
        } else {
            &t.plan_task_id
        };
        let entry = by.entry(key.as_str()).or_default();
        entry.0.push(e);
        entry.1.extend(t.tokens_per_second);
    }
    let mut o = format!(
        "{:<24} {:>6} {:>10} {:>10} {:>10}\n",
        "plan task", "count", "mean", "p95", "tok/s"
    );
    for (name, (mut secs, tps)) in by {
        secs.sort_by(f64::total_cmp);
        let mean = secs.iter().sum::<f64>() / secs.len() as f64;
        // Nearest rank: the smallest value with at least 95 % of the runs at or below it.
        let p95 = secs[((0.95 * secs.len() as f64).ceil() as usize).clamp(1, secs.len()) - 1];
        let tok = if tps.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", tps.iter().sum::<f64>() / tps.len() as f64)
        };
        o += &format!(
            "{:<24} {:>6} {:>10} {:>10} {:>10}\n",
            name,
            secs.len(),
            format!("{mean:.2}s"),
            format!("{p95:.2}s"),
            tok
        );
    }
    o
}

fn slowest(own: &[&TaskFile], n: usize) -> String {
    let mut done: Vec<&&TaskFile> = own.iter().filter(|t| t.elapsed_seconds.is_some()).collect();
    done.sort_by(|a, b| {
        b.elapsed_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.elapsed_seconds.unwrap_or(0.0))
    });
    let mut o = String::from("slowest:\n");
    for t in done.into_iter().take(n) {
        o += &format!(
            "  {} {:.2}s on {}\n",
            t.name,
            t.elapsed_seconds.unwrap_or(0.0),
            t.worker_id.as_deref().unwrap_or("?")
        );
    }
    o
}
