//! `rigmind status`: queue depths per directory and class (requests to the brain
//! apart: they are not tasks), workers, batches. One call reads the listings, the
//! workers' state files, the batch records and one task file per plan task and
//! directory (`dir_counts`), never every task file: it stays fast on 100,000 tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::Utc;
use rigmind_queue::batch::BatchRecord;
use rigmind_queue::Layout;

use super::overview::{self, Overview};
use crate::args::StatusArgs;

/// `rigmind status [--json] [--watch [SECS]]`
pub fn status(a: StatusArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    if !overview::is_root(&layout, "status") {
        return Ok(2);
    }
    match a.watch {
        None => print_once(&layout, a.json),
        Some(every) => watch(&layout, a.json, every),
    }
}

/// Prints the status once, as tables or JSON.
fn print_once(layout: &Layout, json: bool) -> Result<i32> {
    let s = overview::gather(layout)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_tables(&s);
    }
    Ok(0)
}

/// The shortest `--watch` period: a smaller one would be a busy loop.
const WATCH_MIN_SECS: f64 = 0.1;

/// `--watch SECS`: the plain status again every `every` seconds, each print
/// headed by a line with the time, until interrupted (Ctrl-C, or the reader of
/// a pipe going away). `rigmind top` runs this when stdout is not a terminal.
pub(super) fn watch(layout: &Layout, json: bool, every: f64) -> Result<i32> {
    if !every.is_finite() || every < WATCH_MIN_SECS {
        bail!("--watch {every}: give a number of seconds, at least {WATCH_MIN_SECS}");
    }
    let period = Duration::from_secs_f64(every);
    loop {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        println!("=== rigmind status at {now} (every {every}s; Ctrl-C stops) ===");
        print_once(layout, json)?;
        println!();
        std::thread::sleep(period);
    }
}

/// The plain status: the brain and the host, the queue's directories, the
/// workers (and the rate limits holding endpoints), the batches.
fn print_tables(s: &Overview) {
    print_head(s);
    println!();
    print_queues(s);
    println!();
    print_workers(s);
    print_rate_holds(s);
    println!();
    print_batches(s);
}

/// The root, whether the brain runs, the CPU temperature and the live gates.
fn print_head(s: &Overview) {
    println!("root: {}", s.root);
    match &s.brain {
        Some(b) if b.alive => println!("brain: running (pid {})", b.pid.unwrap_or(0)),
        _ => println!("brain: not running"),
    }
    println!("{}", cpu_line(s.cpu_temp.as_ref(), s.max_cpu_temp_c));
    for g in &s.gates {
        println!("{}", gate_line(g));
    }
}

/// Tasks per directory and class, the requests waiting for the brain, the files
/// moved aside and the tasks held by dead workers.
fn print_queues(s: &Overview) {
    println!("{:<12} {:>7}  by class", "directory", "tasks");
    for (dir, classes) in &s.queues {
        let total: usize = classes.values().sum();
        let detail: Vec<String> = classes.iter().map(|(c, n)| format!("{c}={n}")).collect();
        println!("{dir:<12} {total:>7}  {}", detail.join(" "));
    }
    if s.requests > 0 {
        println!(
            "{:<12} {:>7}  submissions or cancellations waiting for the brain",
            "requests", s.requests
        );
    }
    if s.rejected > 0 {
        println!(
            "{:<12} {:>7}  files that were not valid tasks, moved aside (see brain_decisions.log)",
            "rejected", s.rejected
        );
    }
    for l in &s.lost {
        println!(
            "lost: {} (batch {}) is held by dead worker {}; the brain requeues it",
            l.task, l.batch, l.worker
        );
    }
}

/// One line per worker (and one per gate it runs), or `workers: none`.
fn print_workers(s: &Overview) {
    if s.workers.is_empty() {
        println!("workers: none");
    } else {
        println!(
            "{:<14} {:<9} {:<5} {:<14} {:<16} {:>13} {:>5} {:>9} {:>6} {:>6}  current task",
            "worker",
            "state",
            "gpu",
            "gpu state",
            "model",
            "vram MB",
            "temp",
            "heartbeat",
            "done",
            "failed"
        );
        for w in &s.workers {
            println!(
                "{:<14} {:<9} {:<5} {:<14} {:<16} {:>13} {:>5} {:>9} {:>6} {:>6}  {}",
                w.worker_id,
                w.state,
                w.gpu.as_deref().unwrap_or("-"),
                w.gpu_state.as_deref().unwrap_or("-"),
                w.model.as_deref().unwrap_or("-"),
                match (w.vram_used_mb, w.vram_total_mb) {
                    (Some(u), Some(t)) => format!("{u}/{t}"),
                    _ => "-".into(),
                },
                w.temperature_c.map_or("-".into(), |t| format!("{t}C")),
                w.heartbeat_age_seconds
                    .map_or("-".into(), |a| format!("{a:.0}s ago")),
                w.tasks_done,
                w.tasks_failed,
                w.current_task.as_deref().unwrap_or("-")
            );
            for g in &w.gates {
                println!("{:<14} gate: {g}", "");
            }
        }
    }
}

/// One line per endpoint that `requests_per_minute` holds now.
fn print_rate_holds(s: &Overview) {
    for h in &s.rate_holds {
        println!(
            "endpoint {}: held by requests_per_minute = {} ({} starts in the last minute; next at {})",
            h.endpoint,
            h.limit,
            h.starts,
            rigmind_queue::time::to_rfc3339(h.until)
        );
    }
}

/// One line per batch (with its cost and ETA lines), or `batches: none`.
fn print_batches(s: &Overview) {
    if s.batches.is_empty() {
        println!("batches: none");
    } else {
        // `run` is what runs now; a task claimed or being filed is in processing/
        // without running, and one waiting out its back-off is `retrying`.
        println!(
            "{:<8} {:<20} {:<9} {:>6} {:>7} {:>6} {:>8} {:>5} {:>7} {:>6}",
            "batch",
            "plan",
            "state",
            "total",
            "pending",
            "queued",
            "retrying",
            "run",
            "done",
            "failed"
        );
        for b in &s.batches {
            let c = b.counts;
            println!(
                "{:<8} {:<20} {:<9} {:>6} {:>7} {:>6} {:>8} {:>5} {:>7} {:>6}",
                b.batch_id,
                truncate(&b.name, 20),
                b.state.as_str(),
                c.total,
                c.pending,
                c.queued.saturating_sub(c.retrying),
                c.retrying,
                c.running.min(c.processing),
                c.complete,
                c.failed
            );
            if !b.cost_usd.is_empty() {
                println!("{:<8} cost: {}", "", cost_line(&b.cost_usd));
            }
            if let Some(line) = eta_line(b, Utc::now()) {
                println!("{:<8} {line}", "");
            }
        }
    }
}

/// `eta 14:05:31 (in 3m12s)` for a live batch with an ETA (in local time, with the
/// date when not today); `computed 5m ago` is added when the brain has not
/// brought it up to date for over two minutes (it rewrites it each minute).
pub(super) fn eta_line(b: &BatchRecord, now: chrono::DateTime<Utc>) -> Option<String> {
    let eta = b.eta.filter(|_| !b.state.is_done())?;
    let (shown, when) = (clock(eta, now), from_now(eta, now));
    let age = b.eta_computed_at.map_or(0, |c| (now - c).num_seconds());
    let stale = if age > 120 {
        format!(", computed {} ago", span(age))
    } else {
        String::new()
    };
    Some(format!("eta {shown} ({when}{stale})"))
}

/// `14:05:31` in local time, with the date when not today.
pub(crate) fn clock(t: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> String {
    let local = t.with_timezone(&chrono::Local);
    if now.with_timezone(&chrono::Local).date_naive() == local.date_naive() {
        local.format("%H:%M:%S").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

/// `in 3m12s`, or `due 12s ago` for a time passed.
pub(crate) fn from_now(t: chrono::DateTime<Utc>, now: chrono::DateTime<Utc>) -> String {
    let left = (t - now).num_seconds();
    if left >= 0 {
        format!("in {}", span(left))
    } else {
        format!("due {} ago", span(-left))
    }
}

/// `3m12s`, `2h05m`, `45s`.
pub(crate) fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `CPU temperature: 97 C (coretemp Package id 0) > max_cpu_temp_c 90: heavy work
/// held`, `... 62 C (k10temp Tdie), limit 90`, or `CPU temperature: no sensor`.
fn cpu_line(t: Option<&rigmind_gpu::CpuTemp>, max: Option<f64>) -> String {
    let Some(t) = t else {
        return "CPU temperature: no sensor".into();
    };
    let head = format!("CPU temperature: {} C ({})", t.celsius, t.sensor);
    match max {
        Some(m) if t.celsius > m => format!("{head} > max_cpu_temp_c {m}: heavy work held"),
        Some(m) => format!("{head}, limit {m}"),
        None => head,
    }
}

/// `gate pid 1234 (group whisper_large, 9000 MB, since 14:02:11): whisper ...`
fn gate_line(g: &rigmind_queue::gates::GateRecord) -> String {
    let mut what = Vec::new();
    what.extend(g.group.as_ref().map(|x| format!("group {x}")));
    what.extend(g.mem_mb.map(|m| format!("{m} MB")));
    what.push(format!("since {}", clock(g.started_at, Utc::now())));
    format!(
        "gate pid {} ({}): {}",
        g.pid,
        what.join(", "),
        truncate(&g.command.join(" "), 60)
    )
}

/// `name $0.0123, other $1.5000 (total $1.5123)`: a batch's cost by endpoint.
pub(super) fn cost_line(cost: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = cost.iter().map(|(e, c)| format!("{e} ${c:.4}")).collect();
    let total: f64 = cost.values().sum();
    format!("{} (total ${total:.4})", parts.join(", "))
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_queue::batch::BatchState;

    #[test]
    fn a_live_batch_shows_its_eta_and_how_far_off_it_is() {
        let now = Utc::now();
        let mut b = BatchRecord::submitted("aaaaaa", "p", "p.md".into(), ".".into(), now, 3, 1);
        assert_eq!(eta_line(&b, now), None);
        b.eta = Some(now + chrono::Duration::seconds(192));
        b.eta_computed_at = Some(now);
        let line = eta_line(&b, now).unwrap();
        assert!(
            line.starts_with("eta ") && line.ends_with("(in 3m12s)"),
            "{line}"
        );
        b.eta_computed_at = Some(now - chrono::Duration::seconds(300));
        let line = eta_line(&b, now).unwrap();
        assert!(line.ends_with("(in 3m12s, computed 5m00s ago)"), "{line}");
        b.state = BatchState::Complete;
        assert_eq!(eta_line(&b, now), None);
        assert_eq!(span(7500), "2h05m");
    }
}
