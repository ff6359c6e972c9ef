//! A Gantt chart of a [`Comparison`], hand-written SVG: one chart per policy, all on
//! one time scale, one row per GPU worker; tasks coloured by class, loads and unloads
//! hatched dark, task names as tooltips.

use std::fmt::Write as _;

use rigmind_types::TaskClass;

use crate::compare::{human_secs, Comparison, PolicyRun};
use crate::engine::{Segment, SegmentKind, SimError};

const WIDTH: f64 = 1100.0;
const LABEL_W: f64 = 130.0;
const RIGHT: f64 = 40.0;
const ROW_H: f64 = 24.0;
const ROW_GAP: f64 = 6.0;
const TITLE_H: f64 = 34.0;
const AXIS_H: f64 = 34.0;
const CHART_GAP: f64 = 18.0;
const LEGEND_H: f64 = 34.0;

fn class_colour(c: TaskClass) -> &'static str {
    match c {
        TaskClass::Script => "#4e79a7",
        TaskClass::Llm => "#f28e2b",
        TaskClass::Cpu => "#59a14f",
        TaskClass::Resource => "#555555",
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A tick spacing giving at most about ten ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 22] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
        1200.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0, 43200.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10.0)
        .unwrap_or_else(|| (span / 10.0 / 86400.0).ceil() * 86400.0)
}

fn tick_label(t: f64) -> String {
    if t.fract().abs() > 1e-9 {
        return format!("{t:.1}s");
    }
    let s = t.round() as i64;
    match s {
        0 => "0".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn segment_title(worker: &str, s: &Segment) -> String {
    let span = format!("{:.1}–{:.1} s", s.start, s.end);
    match &s.kind {
        SegmentKind::Task { name, class } => format!("{name} ({class}) on {worker}, {span}"),
        SegmentKind::Load => format!("load_llm on {worker}, {span}"),
        SegmentKind::Unload => format!("unload_llm on {worker}, {span}"),
    }
}

/// The Gantt chart of every run of `c`, stacked, as one SVG document.
pub fn svg(c: &Comparison) -> String {
    let plot_w = WIDTH - LABEL_W - RIGHT;
    let horizon = c
        .runs
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|r| r.makespan_s))
        .fold(c.lower_bound_s, f64::max)
        .max(1e-6);
    let scale = plot_w / horizon;
    let x = |t: f64| LABEL_W + t * scale;
    let rows_of = |run: &PolicyRun| -> usize {
        match &run.outcome {
            Ok(r) => r.gpus.len() + usize::from(!r.brain_segments.is_empty()),
            Err(_) => 1,
        }
    };
    let heights: Vec<f64> = c
        .runs
        .iter()
        .map(|r| TITLE_H + rows_of(r) as f64 * (ROW_H + ROW_GAP) + AXIS_H)
        .collect();
    let total_h = LEGEND_H + heights.iter().map(|h| h + CHART_GAP).sum::<f64>() + 10.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" viewBox="0 0 {WIDTH} {total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, "<title>rigmind simulate: {}</title>", esc(&c.plan));
    o.push_str(concat!(
        "<defs>\n",
        r##"<pattern id="hatch-load" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#1f1f1f"/><line x1="0" y1="0" x2="0" y2="6" stroke="#9a9a9a" stroke-width="2"/></pattern>"##,
        "\n",
        r##"<pattern id="hatch-unload" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(-45)"><rect width="6" height="6" fill="#5a5a5a"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d0d0d0" stroke-width="2"/></pattern>"##,
        "\n</defs>\n"
    ));
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);

    // Legend.
    let mut lx = LABEL_W;
    let items: [(&str, String); 5] = [
        ("script", class_colour(TaskClass::Script).into()),
        ("llm", class_colour(TaskClass::Llm).into()),
        ("cpu", class_colour(TaskClass::Cpu).into()),
        ("load", "url(#hatch-load)".into()),
        ("unload", "url(#hatch-unload)".into()),
    ];
    let _ = writeln!(o, r#"<g class="legend">"#);
    for (name, fill) in &items {
        let _ = writeln!(
            o,
            r##"<rect x="{lx}" y="10" width="16" height="12" fill="{fill}" stroke="#333" stroke-width="0.5"/><text x="{}" y="20">{name}</text>"##,
            lx + 21.0
        );
        lx += 90.0;
    }
    let _ = writeln!(
        o,
        r##"<line x1="{lx}" y1="16" x2="{}" y2="16" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{}" y="20">lower bound</text>"##,
        lx + 16.0,
        lx + 21.0
    );
    let _ = writeln!(o, "</g>");

    let mut y0 = LEGEND_H;
    for (run, h) in c.runs.iter().zip(&heights) {
        chart(&mut o, c, run, y0, &x, horizon);
        y0 += h + CHART_GAP;
    }
    o.push_str("</svg>\n");
    o
}

/// One policy's chart at height `y0`: title, grid and time axis, a row per worker
/// (or why the run was infeasible), and the lower bound.
fn chart(
    o: &mut String,
    c: &Comparison,
    run: &PolicyRun,
    y0: f64,
    x: &dyn Fn(f64) -> f64,
    horizon: f64,
) {
    let _ = writeln!(o, r#"<g class="chart" data-policy="{}">"#, esc(&run.policy));
    let _ = writeln!(
        o,
        r#"<text x="10" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        y0 + 20.0,
        esc(&chart_title(c, run))
    );
    let rows_top = y0 + TITLE_H;
    let rows = chart_rows(run);
    let n_rows = rows.len().max(1);
    let rows_bottom = rows_top + n_rows as f64 * (ROW_H + ROW_GAP) - ROW_GAP;
    let axis_y = rows_bottom + 6.0;
    grid_and_axis(o, x, horizon, rows_top, rows_bottom, axis_y);

    match &run.outcome {
        Ok(r) => {
            for (i, (worker, segs)) in rows.iter().enumerate() {
                let ry = rows_top + i as f64 * (ROW_H + ROW_GAP);
                worker_row(o, x, worker, segs, ry, r.makespan_s);
            }
        }
        Err(e) => infeasible(o, e, rows_top),
    }
    // The lower bound.
    let lb = x(c.lower_bound_s);
    let _ = writeln!(
        o,
        r##"<line x1="{lb:.2}" y1="{}" x2="{lb:.2}" y2="{axis_y}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="4 3"><title>lower bound {}</title></line>"##,
        rows_top - 4.0,
        human_secs(c.lower_bound_s)
    );
    let _ = writeln!(o, "</g>");
}

/// The heading of one policy's chart: the policy, and its makespan against the
/// lower bound (or that it is infeasible).
fn chart_title(c: &Comparison, run: &PolicyRun) -> String {
    let label = match run.static_llm_cards {
        Some(k) => format!(
            "{} ({k} LLM card{})",
            run.policy,
            if k == 1 { "" } else { "s" }
        ),
        None => run.policy.clone(),
    };
    match &run.outcome {
        Ok(r) => format!(
            "{label}: makespan {}, {:.3}× lower bound ({:.1} s); {} load(s), {} unload(s)",
            human_secs(r.makespan_s),
            if c.lower_bound_s > 0.0 {
                r.makespan_s / c.lower_bound_s
            } else {
                1.0
            },
            c.lower_bound_s,
            r.loads,
            r.unloads
        ),
        Err(_) => format!(
            "{label}: infeasible; lower bound {}",
            human_secs(c.lower_bound_s)
        ),
    }
}

/// The rows of a run's chart: one per GPU worker, then the brain's if it ran
/// anything; none for an infeasible run.
fn chart_rows(run: &PolicyRun) -> Vec<(String, &[Segment])> {
    match &run.outcome {
        Ok(r) => {
            let mut rows: Vec<(String, &[Segment])> = r
                .gpus
                .iter()
                .map(|g| (g.worker.clone(), g.segments.as_slice()))
                .collect();
            if !r.brain_segments.is_empty() {
                rows.push(("brain".into(), r.brain_segments.as_slice()));
            }
            rows
        }
        Err(_) => Vec::new(),
    }
}

/// The time axis at `axis_y` with a tick and a grid line (over the rows) per step.
fn grid_and_axis(
    o: &mut String,
    x: &dyn Fn(f64) -> f64,
    horizon: f64,
    rows_top: f64,
    rows_bottom: f64,
    axis_y: f64,
) {
    let step = tick_step(horizon);
    let mut t = 0.0;
    let _ = writeln!(
        o,
        r##"<line x1="{}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        x(0.0),
        x(horizon)
    );
    while t <= horizon + 1e-9 {
        let tx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{tx:.2}" y1="{rows_top}" x2="{tx:.2}" y2="{rows_bottom}" stroke="#e4e4e4"/><line x1="{tx:.2}" y1="{axis_y}" x2="{tx:.2}" y2="{}" stroke="#333"/><text x="{tx:.2}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
            axis_y + 4.0,
            axis_y + 16.0,
            tick_label(t)
        );
        t += step;
    }
}

/// One worker's row at height `ry`: its label, a background up to the makespan,
/// and its segments.
fn worker_row(
    o: &mut String,
    x: &dyn Fn(f64) -> f64,
    worker: &str,
    segs: &[Segment],
    ry: f64,
    makespan_s: f64,
) {
    let _ = writeln!(
        o,
        r##"<g class="gpu-row" data-worker="{w}"><text x="{}" y="{}" text-anchor="end">{w}</text><rect x="{}" y="{ry}" width="{:.2}" height="{ROW_H}" fill="#f2f2f2"/>"##,
        LABEL_W - 8.0,
        ry + ROW_H / 2.0 + 4.0,
        x(0.0),
        x(makespan_s) - x(0.0),
        w = esc(worker)
    );
    for s in segs {
        segment(o, x, worker, s, ry);
    }
    let _ = writeln!(o, "</g>");
}

/// One segment of a row: a rectangle with its tooltip, and the task's name when it fits.
fn segment(o: &mut String, x: &dyn Fn(f64) -> f64, worker: &str, s: &Segment, ry: f64) {
    let (fill, class) = match &s.kind {
        SegmentKind::Task { class, .. } => {
            (class_colour(*class).to_string(), format!("task {class}"))
        }
        SegmentKind::Load => ("url(#hatch-load)".into(), "load".into()),
        SegmentKind::Unload => ("url(#hatch-unload)".into(), "unload".into()),
    };
    let sx = x(s.start);
    // Loads and unloads stay visible however short; tasks too
    // narrow for a border get none (it would wash out the colour).
    let min_w = match s.kind {
        SegmentKind::Task { .. } => 0.5,
        _ => 3.0,
    };
    let w = (x(s.end) - sx).max(min_w);
    let stroke = if w >= 4.0 {
        r##" stroke="#ffffff" stroke-width="0.5""##
    } else {
        ""
    };
    let _ = write!(
        o,
        r##"<rect class="{class}" x="{sx:.2}" y="{ry}" width="{w:.2}" height="{ROW_H}" fill="{fill}"{stroke}><title>{}</title></rect>"##,
        esc(&segment_title(worker, s))
    );
    if let SegmentKind::Task { name, .. } = &s.kind {
        if w > 7.0 * name.chars().count() as f64 + 8.0 {
            let _ = write!(
                o,
                r##"<text x="{:.2}" y="{}" fill="#ffffff" font-size="11" pointer-events="none">{}</text>"##,
                sx + 4.0,
                ry + ROW_H / 2.0 + 4.0,
                esc(name)
            );
        }
    }
    o.push('\n');
}

/// Why a run is infeasible, in place of its rows (shortened; the whole as tooltip).
fn infeasible(o: &mut String, e: &SimError, rows_top: f64) {
    let mut msg = e.reason();
    if msg.chars().count() > 150 {
        msg = msg.chars().take(147).collect::<String>() + "...";
    }
    let _ = writeln!(
        o,
        r##"<text x="{}" y="{}" fill="#c0392b">{}<title>{}</title></text>"##,
        LABEL_W,
        rows_top + ROW_H / 2.0 + 4.0,
        esc(&msg),
        esc(&e.to_string())
    );
}
