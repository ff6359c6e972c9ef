//! `rigmind report BATCH [--svg FILE] [--html FILE]`: what really happened to a batch, read from
//! its batch record and task files (and the `load_llm` / `unload_llm` tasks that ran
//! while it was live): per worker its task, swap and idle time; loads and unloads;
//! failures and retries; per plan task the count, mean and 95th percentile of run
//! times and tokens/s; the slowest tasks. `--svg` writes the Gantt chart of the run,
//! drawn exactly as `rigmind simulate --svg` draws a prediction; `--html` one
//! self-contained page with the chart inline and the tables.

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
    let rep = report_of(&batch, &tasks, &run);
    let chart = rigmind_sim::svg(&run);
    if let Some(path) = &a.svg {
        std::fs::write(path, &chart).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, html(&rep, &chart))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", text(&rep));
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

/// A report: a headline, a few lines, and tables; printed as text or as HTML.
struct Report {
    title: String,
    lines: Vec<String>,
    tables: Vec<Table>,
}

struct Table {
    caption: String,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

fn report_of(batch: &BatchRecord, tasks: &[TaskFile], run: &Comparison) -> Report {
    let mut rep = Report {
        title: format!("batch {} ({})", batch.batch_id, batch.name),
        lines: Vec::new(),
        tables: Vec::new(),
    };
    let Some(Ok(r)) = run.runs.first().map(|p| &p.outcome) else {
        return rep;
    };
    let own: Vec<&TaskFile> = tasks
        .iter()
        .filter(|t| t.batch_id == batch.batch_id)
        .collect();
    let failed = own
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .count();
    let retried: u32 = own.iter().map(|t| t.retry_count).sum();
    rep.lines = vec![
        format!(
            "{}, {} tasks, makespan {} ({:.2}× the bound from observed times, {})",
            batch.state.as_str(),
            batch.counts.total,
            human_secs(r.makespan_s),
            r.makespan_s / run.lower_bound_s.max(1e-9),
            human_secs(run.lower_bound_s),
        ),
        format!(
            "loads {}, unloads {}, workers busy {:.0}% of the makespan",
            r.loads,
            r.unloads,
            100.0 * r.gpu_busy_fraction
        ),
        format!("failures {failed}, retries {retried}"),
    ];
    rep.tables = vec![workers_table(r), per_task_table(&own), slowest(&own, 5)];
    rep
}

fn text(rep: &Report) -> String {
    let mut o = format!("{}: {}\n", rep.title, rep.lines.join("\n"));
    for t in &rep.tables {
        let cols = t.header.len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                t.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([t.header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| -> String {
            let mut l = String::new();
            for (c, cell) in cells.iter().enumerate() {
                // The first column is a name: left-aligned; numbers right-aligned.
                if c == 0 {
                    l += &format!("{cell:<w$}", w = width[c]);
                } else {
                    l += &format!("  {cell:>w$}", w = width[c]);
                }
            }
            l.trim_end().to_string() + "\n"
        };
        o += &format!("{}:\n", t.caption);
        o += &line(t.header.clone());
        for r in &t.rows {
            o += &line(r.iter().map(String::as_str).collect());
        }
    }
    o
}

/// One self-contained page: the report's tables and the run's Gantt chart inline.
fn html(rep: &Report, svg: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut o = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rigmind report: {t}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}caption{{text-align:left;font-weight:bold}}</style></head><body>\n<h1>rigmind report: {t}</h1>\n",
        t = esc(&rep.title)
    );
    for l in &rep.lines {
        o += &format!("<p>{}</p>\n", esc(l));
    }
    o += svg;
    for t in &rep.tables {
        o += &format!("<table><caption>{}</caption>\n<tr>", esc(&t.caption));
        for h in &t.header {
            o += &format!("<th>{}</th>", esc(h));
        }
        o += "</tr>\n";
        for r in &t.rows {
            o += "<tr>";
            for c in r {
                o += &format!("<td>{}</td>", esc(c));
            }
            o += "</tr>\n";
        }
        o += "</table>\n";
    }
    o + "</body></html>\n"
}

fn workers_table(r: &SimResult) -> Table {
    let rows = r
        .gpus
        .iter()
        .map(|g| {
            let runs = g
                .segments
                .iter()
                .filter(|s| matches!(s.kind, rigmind_sim::SegmentKind::Task { .. }))
                .count();
            vec![
                g.worker.clone(),
                human_secs(g.busy_s),
                human_secs(g.loading_s),
                human_secs(g.idle_s),
                runs.to_string(),
            ]
        })
        .collect();
    Table {
        caption: "per worker".into(),
        header: vec!["worker", "tasks", "swaps", "idle", "runs"],
        rows,
    }
}

/// What the runs of one plan task came to.
#[derive(Default)]
struct PlanTaskRuns {
    secs: Vec<f64>,
    tokens_per_second: Vec<f64>,
    /// The most RAM and GPU memory one run held (MB), where the results say.
    peak_rss_mb: Option<u64>,
    peak_vram_mb: Option<u64>,
}

/// Count, mean and p95 of the run time, mean tokens/s, and the largest peak RAM
/// and VRAM of a run, per plan task: what to set `mem_mb` from (docs/safety.md).
fn per_task_table(own: &[&TaskFile]) -> Table {
    let mut by: BTreeMap<&str, PlanTaskRuns> = BTreeMap::new();
    for t in own {
        let Some(e) = t.elapsed_seconds else { continue };
        // The brain's own tasks (`@execute_plan`) have no plan task: their name stands.
        let key = if t.plan_task_id.is_empty() {
            &t.name
        } else {
            &t.plan_task_id
        };
        let runs = by.entry(key.as_str()).or_default();
        runs.secs.push(e);
        runs.tokens_per_second.extend(t.tokens_per_second);
        runs.peak_rss_mb = runs.peak_rss_mb.max(t.peak_rss_mb);
        runs.peak_vram_mb = runs.peak_vram_mb.max(t.peak_vram_mb);
    }
    let mb = |v: Option<u64>| v.map_or("-".to_string(), |m| m.to_string());
    let rows = by
        .into_iter()
        .map(|(name, mut r)| {
            r.secs.sort_by(f64::total_cmp);
            let secs = &r.secs;
            let mean = secs.iter().sum::<f64>() / secs.len() as f64;
            // Nearest rank: the smallest value with at least 95 % of the runs at or below it.
            let p95 = secs[((0.95 * secs.len() as f64).ceil() as usize).clamp(1, secs.len()) - 1];
            let tps = &r.tokens_per_second;
            let tok = if tps.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", tps.iter().sum::<f64>() / tps.len() as f64)
            };
            vec![
                name.to_string(),
                secs.len().to_string(),
                format!("{mean:.2}s"),
                format!("{p95:.2}s"),
                tok,
                mb(r.peak_rss_mb),
                mb(r.peak_vram_mb),
            ]
        })
        .collect();
    Table {
        caption: "per plan task".into(),
        header: vec![
            "plan task",
            "count",
            "mean",
            "p95",
            "tok/s",
            "peak RSS MB",
            "peak VRAM MB",
        ],
        rows,
    }
}

fn slowest(own: &[&TaskFile], n: usize) -> Table {
    let mut done: Vec<&&TaskFile> = own.iter().filter(|t| t.elapsed_seconds.is_some()).collect();
    done.sort_by(|a, b| {
        b.elapsed_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.elapsed_seconds.unwrap_or(0.0))
    });
    let rows = done
        .into_iter()
        .take(n)
        .map(|t| {
            vec![
                t.name.clone(),
                format!("{:.2}s", t.elapsed_seconds.unwrap_or(0.0)),
                t.worker_id.as_deref().unwrap_or("brain").to_string(),
            ]
        })
        .collect();
    Table {
        caption: "slowest".into(),
        header: vec!["task", "took", "on"],
        rows,
    }
}
