//! The brain's metrics in Prometheus' text exposition format (version 0.0.4):
//! what [`Metrics`] counts between renders, and how a [`Snapshot`] of the rig is
//! written out.
//!
//! Gauges are read from the state and the workers' files at each render; the
//! counters and the duration histogram count since this brain started (Prometheus
//! takes a counter that starts again from its first value for a restart).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rigmind_types::TaskClass;

use crate::state::{BrainState, JobStatus};
use crate::worker_view::WorkerView;

/// Upper bounds of the task duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 9] =
    [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

/// The label of a class (`none` for a task file without one).
fn class_word(c: Option<TaskClass>) -> &'static str {
    c.map_or("none", TaskClass::as_str)
}

/// The label of a job's place.
fn state_word(s: JobStatus) -> &'static str {
    s.as_str()
}

/// One histogram: cumulative counts per bucket, the sum and the count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// One batch's jobs by (class, place), and its counts when that was taken.
#[derive(Debug, Default)]
struct BatchSeen {
    counts: [usize; 5],
    table: BTreeMap<(&'static str, &'static str), usize>,
}

/// The counts kept between renders.
#[derive(Debug, Default)]
pub struct Metrics {
    batches: HashMap<String, BatchSeen>,
    /// Ends of tasks by (class, outcome), since this brain started.
    finished: BTreeMap<(&'static str, &'static str), u64>,
    /// Run times of results that arrived, by class.
    durations: BTreeMap<&'static str, Histogram>,
    /// Notify commands run, by event and whether they exited 0.
    pub notify_runs: BTreeMap<(String, bool), u64>,
}

impl Metrics {
    /// Brings the counts up to date with the state: each end of a job (complete,
    /// or failed: a retry that fails again counts again) noted since the last
    /// look ([`crate::state::Batch::ended`]), the results that arrived (for the
    /// histogram), and each batch's table of jobs by class and place, walked
    /// again only when its counts changed.
    pub fn follow(&mut self, state: &mut BrainState) {
        for a in state.arrived.drain(..) {
            if let Some(secs) = a.elapsed_secs {
                self.durations
                    .entry(class_word(a.class))
                    .or_default()
                    .observe(secs);
            }
        }
        for (id, b) in state.batches.iter_mut() {
            for (i, outcome) in b.ended.drain(..) {
                let class = class_word(b.jobs.get(i).and_then(|j| j.work.class));
                *self.finished.entry((class, outcome)).or_default() += 1;
            }
            let c = &b.record.counts;
            let counts = [c.pending, c.queued, c.processing, c.complete, c.failed];
            let seen = self.batches.entry(id.clone()).or_default();
            if seen.counts == counts && !seen.table.is_empty() {
                continue;
            }
            seen.counts = counts;
            seen.table.clear();
            for j in &b.jobs {
                let key = (class_word(j.work.class), state_word(j.status));
                *seen.table.entry(key).or_default() += 1;
            }
        }
    }

    /// Tasks by (class, place), over every batch the brain knows.
    pub fn tasks(&self) -> BTreeMap<(&'static str, &'static str), usize> {
        let mut out = BTreeMap::new();
        for b in self.batches.values() {
            for (k, n) in &b.table {
                *out.entry(*k).or_default() += n;
            }
        }
        out
    }
}

/// Everything one render needs besides the counts.
pub struct Snapshot<'a> {
    pub state: &'a BrainState,
    pub workers: &'a [WorkerView],
    pub alerts: &'a crate::alerting::Alerting,
    pub brain_started_unix: f64,
}

/// Writes families and samples.
#[derive(Default)]
struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.0, " {}", number(v));
    }
}

/// A label value escaped as the format asks (`\\`, `\"`, `\n`).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The whole exposition.
pub fn render(m: &Metrics, s: &Snapshot<'_>) -> String {
    let mut p = Prom::default();
    p.family("rigmind_brain_up", "gauge", "1 while the brain runs.");
    p.sample("rigmind_brain_up", &[], 1.0);
    p.family(
        "rigmind_brain_start_time_seconds",
        "gauge",
        "When this brain started, Unix seconds.",
    );
    p.sample(
        "rigmind_brain_start_time_seconds",
        &[],
        s.brain_started_unix,
    );
    render_tasks(&mut p, m, s.state);
    render_workers(&mut p, s.workers);
    render_cards(&mut p, s.workers);
    p.family(
        "rigmind_alerts",
        "gauge",
        "Alerts raised and not cleared, by kind.",
    );
    for kind in rigmind_decide::alerts::AlertKind::ALL {
        let n = s.alerts.active().filter(|a| a.kind == kind).count();
        p.sample("rigmind_alerts", &[("kind", kind.as_str())], n as f64);
    }
    p.family(
        "rigmind_notify_runs_total",
        "counter",
        "Notify commands run, by event and result.",
    );
    for ((event, ok), n) in &m.notify_runs {
        let result = if *ok { "ok" } else { "failed" };
        p.sample(
            "rigmind_notify_runs_total",
            &[("event", event), ("result", result)],
            *n as f64,
        );
    }
    p.0
}

fn render_tasks(p: &mut Prom, m: &Metrics, state: &BrainState) {
    p.family(
        "rigmind_tasks",
        "gauge",
        "Tasks of the batches the brain knows, by class and place.",
    );
    for ((class, st), n) in m.tasks() {
        p.sample(
            "rigmind_tasks",
            &[("class", class), ("state", st)],
            n as f64,
        );
    }
    p.family("rigmind_batches", "gauge", "Batches by state.");
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for b in state.batches.values() {
        *by_state.entry(b.record.state.as_str()).or_default() += 1;
    }
    for (st, n) in by_state {
        p.sample("rigmind_batches", &[("state", st)], n as f64);
    }
    p.family(
        "rigmind_tasks_finished_total",
        "counter",
        "Tasks that reached complete or failed since the brain started, by class and outcome (complete or the failure kind).",
    );
    for ((class, outcome), n) in &m.finished {
        p.sample(
            "rigmind_tasks_finished_total",
            &[("class", class), ("outcome", outcome)],
            *n as f64,
        );
    }
    let name = "rigmind_task_duration_seconds";
    p.family(
        name,
        "histogram",
        "Run time of the results that arrived since the brain started, by class.",
    );
    for (class, h) in &m.durations {
        for (le, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
            p.sample(
                &format!("{name}_bucket"),
                &[("class", class), ("le", &number(*le))],
                n as f64,
            );
        }
        p.sample(
            &format!("{name}_bucket"),
            &[("class", class), ("le", "+Inf")],
            h.count as f64,
        );
        p.sample(&format!("{name}_sum"), &[("class", class)], h.sum);
        p.sample(
            &format!("{name}_count"),
            &[("class", class)],
            h.count as f64,
        );
    }
}

fn render_workers(p: &mut Prom, workers: &[WorkerView]) {
    type Read = fn(&WorkerView) -> f64;
    let gauges: [(&str, &str, Read); 5] = [
        (
            "rigmind_worker_up",
            "1 while the worker is alive (its life lock held).",
            |w| f64::from(u8::from(w.alive)),
        ),
        (
            "rigmind_worker_heartbeat_age_seconds",
            "Seconds since the worker's last heartbeat.",
            |w| w.heartbeat_age_secs,
        ),
        (
            "rigmind_worker_busy",
            "1 while the worker runs a task.",
            |w| f64::from(u8::from(w.alive && w.state.current_task.is_some())),
        ),
        (
            "rigmind_worker_draining",
            "1 while the worker is drained.",
            |w| f64::from(u8::from(w.state.draining)),
        ),
        (
            "rigmind_worker_gates_holding",
            "Safety gates holding the worker now.",
            |w| w.state.gates.len() as f64,
        ),
    ];
    for (name, help, read) in gauges {
        p.family(name, "gauge", help);
        for w in workers {
            p.sample(name, &[("worker", &w.state.worker_id)], read(w));
        }
    }
}

fn render_cards(p: &mut Prom, workers: &[WorkerView]) {
    let cards: Vec<(&WorkerView, &rigmind_types::GpuInfo)> = workers
        .iter()
        .filter(|w| w.alive)
        .filter_map(|w| Some((w, w.state.telemetry.as_ref()?)))
        .collect();
    const MB: f64 = 1024.0 * 1024.0;
    type Read = fn(&rigmind_types::GpuInfo) -> Option<f64>;
    let gauges: [(&str, &str, Read); 5] = [
        (
            "rigmind_gpu_memory_used_bytes",
            "Memory in use on the card.",
            |g| Some(g.memory_used_mb as f64 * MB),
        ),
        (
            "rigmind_gpu_memory_total_bytes",
            "The card's memory.",
            |g| Some(g.memory_total_mb as f64 * MB),
        ),
        (
            "rigmind_gpu_utilization_ratio",
            "GPU utilisation over the driver's last sample, 0 to 1.",
            |g| g.utilization_percent.map(|u| f64::from(u) / 100.0),
        ),
        (
            "rigmind_gpu_temperature_celsius",
            "The card's core temperature.",
            |g| g.temperature_c.map(f64::from),
        ),
        ("rigmind_gpu_power_watts", "The card's power draw.", |g| {
            g.power_watts
        }),
    ];
    for (name, help, read) in gauges {
        p.family(name, "gauge", help);
        for (w, g) in &cards {
            if let Some(v) = read(g) {
                let index = g.index.to_string();
                p.sample(name, &[("worker", &w.state.worker_id), ("gpu", &index)], v);
            }
        }
    }
    p.family(
        "rigmind_gpu_state",
        "gauge",
        "1 for the state each card is in (idle, llm_ready, script_busy, ...).",
    );
    for (w, g) in &cards {
        if let Some(st) = w.state.gpu_state {
            let index = g.index.to_string();
            p.sample(
                "rigmind_gpu_state",
                &[
                    ("worker", &w.state.worker_id),
                    ("gpu", &index),
                    ("state", st.as_str()),
                ],
                1.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_labels_are_written_as_the_format_asks() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_histogram_is_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.5);
        h.observe(10.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[2], 2);
        assert_eq!(h.buckets[8], 2);
        assert_eq!(h.count, 2);
    }
}
