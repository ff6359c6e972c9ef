//! `rigmind top`'s screen as a pure function of a [`Snapshot`] and the [`Ui`]
//! state: [`draw`] reads nothing and writes nothing but the frame, so tests draw
//! it on ratatui's `TestBackend`. Laid out to stay readable in 80×24: one title
//! line, the workers (two lines each: the card and the task, then telemetry,
//! classes, heartbeat and gates), queue depths beside the batches, the running
//! and failed tasks, the newest decisions, and one line of keys or the last
//! message.

use chrono::{DateTime, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;
use rigmind_queue::batch::BatchRecord;

use super::snapshot::Snapshot;
use super::ui::{task_rows, Pane, Popup, TaskRow, Ui};
use crate::commands::overview::WorkerStatus;
use crate::commands::status::{span, truncate};

/// The bottom line when there is no message.
const KEYS: &str =
    "Tab/←→ pane  ↑↓ row  l log  r retry  c cancel  d drain  R resume  ? help  q quit";

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, s: &Snapshot, ui: &Ui) {
    let area = frame.area();
    let [title, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(title_line(s)), title);
    let h = heights(body.height, s);
    let [workers, middle, tasks, decisions] =
        Layout::vertical(h.map(Constraint::Length)).areas(body);
    let [queue, batches] =
        Layout::horizontal([Constraint::Length(30), Constraint::Min(0)]).areas(middle);
    draw_workers(frame, workers, s, ui);
    draw_queue(frame, queue, s);
    draw_batches(frame, batches, s, ui);
    draw_tasks(frame, tasks, s, ui);
    draw_decisions(frame, decisions, s, ui);
    let bottom_text = ui.message.as_deref().unwrap_or(KEYS);
    let style = match ui.message {
        Some(_) => Style::new().fg(Color::Yellow),
        None => Style::new().fg(Color::DarkGray),
    };
    frame.render_widget(Paragraph::new(Span::styled(bottom_text, style)), bottom);
    if let Some(p) = &ui.popup {
        draw_popup(frame, area, p);
    }
}

/// The heights of the four stacked parts (workers, queue and batches, tasks,
/// decisions) in `h` lines: each gets what it needs, the decisions the rest;
/// when that is too much, tasks, then the middle, then the workers give up
/// lines, down to a border and one row each.
fn heights(h: u16, s: &Snapshot) -> [u16; 4] {
    let o = &s.overview;
    let workers = 2 + 2 * (o.workers.len().max(1) as u16);
    let queue_lines = 2 + o.queued_by_priority.len().max(1);
    let middle = 2 + queue_lines.max(o.batches.len()).clamp(1, 6) as u16;
    let tasks = 2 + task_rows(s).len().clamp(1, 4) as u16;
    let mut want = [workers, middle, tasks];
    let least = [4, 3, 3];
    let decisions_min = 3;
    for i in [2, 1, 0] {
        let total: u16 = want.iter().sum::<u16>() + decisions_min;
        if total > h {
            want[i] = want[i].saturating_sub(total - h).max(least[i]);
        }
    }
    let used: u16 = want.iter().sum();
    [want[0], want[1], want[2], h.saturating_sub(used)]
}

fn title_line(s: &Snapshot) -> Line<'static> {
    let brain = match &s.overview.brain {
        Some(b) if b.alive => Span::styled(
            format!("brain pid {}", b.pid.unwrap_or(0)),
            Style::new().fg(Color::Green),
        ),
        _ => Span::styled("brain not running", Style::new().fg(Color::Red)),
    };
    let clock = s.taken_at.with_timezone(&chrono::Local).format("%H:%M:%S");
    Line::from(vec![
        Span::styled("rigmind top ", Style::new().add_modifier(Modifier::BOLD)),
        brain,
        Span::raw(format!("  {clock}  {}", truncate(&s.overview.root, 40))),
    ])
}

fn pane_block(title: &str, pane: Pane, ui: &Ui) -> Block<'static> {
    let style = if ui.focus == pane {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::bordered()
        .border_style(style)
        .title(Span::styled(title.to_string(), style))
}

/// A list whose selected row is highlighted while its pane has the focus.
fn render_list(
    frame: &mut Frame<'_>,
    area: Rect,
    items: Vec<ListItem<'static>>,
    block: Block<'static>,
    sel: Option<usize>,
) {
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(sel);
    frame.render_stateful_widget(list, area, &mut state);
}

fn selection(ui: &Ui, pane: Pane, s: &Snapshot) -> Option<usize> {
    (ui.focus == pane).then(|| ui.row(pane, s))
}

fn draw_workers(frame: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let width = area.width.saturating_sub(2) as usize;
    let items: Vec<ListItem<'static>> = if s.overview.workers.is_empty() {
        vec![ListItem::new("no worker has run under this root yet")]
    } else {
        s.overview
            .workers
            .iter()
            .map(|w| {
                ListItem::new(vec![
                    worker_line(w, s.taken_at, width),
                    telemetry_line(w, width),
                ])
            })
            .collect()
    };
    let title = format!("Workers ({})", s.overview.workers.len());
    render_list(
        frame,
        area,
        items,
        pane_block(&title, Pane::Workers, ui),
        selection(ui, Pane::Workers, s),
    );
}

/// `gpu0  busy  script_busy  qwen2.5:7b  transcribe[ep1] 1m02s`
fn worker_line(w: &WorkerStatus, now: DateTime<Utc>, width: usize) -> Line<'static> {
    let state = if w.draining && w.state.starts_with("busy") {
        "draining"
    } else {
        &w.state
    };
    let color = match state {
        "busy" => Color::Green,
        "idle" => Color::Gray,
        "dead" => Color::Red,
        _ => Color::Yellow,
    };
    let card = w.gpu_state.clone().unwrap_or_else(|| match &w.gpu {
        Some(g) => format!("gpu {g}"),
        None => "cpu".into(),
    });
    let head = format!("{:<10} ", truncate(&w.worker_id, 10));
    let mid = format!(
        " {:<14} {:<12} ",
        truncate(&card, 14),
        truncate(w.model.as_deref().unwrap_or("-"), 12)
    );
    let task = match (&w.current_task, w.task_started_at) {
        (Some(t), Some(at)) => format!("{t} {}", span((now - at).num_seconds().max(0))),
        (Some(t), None) => t.clone(),
        (None, _) => "-".into(),
    };
    let used = head.chars().count() + 8 + mid.chars().count();
    Line::from(vec![
        Span::styled(head, Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(format!("{:<8}", truncate(state, 8)), Style::new().fg(color)),
        Span::raw(mid),
        Span::raw(truncate(&task, width.saturating_sub(used).max(1))),
    ])
}

/// `  vram 12.3/24.0G util 87% 71C 250W  hb 1s  script,llm,cpu  gates: -`
fn telemetry_line(w: &WorkerStatus, width: usize) -> Line<'static> {
    let gib = |mb: u64| mb as f64 / 1024.0;
    let mut parts = Vec::new();
    if let (Some(u), Some(t)) = (w.vram_used_mb, w.vram_total_mb) {
        parts.push(format!("vram {:.1}/{:.1}G", gib(u), gib(t)));
    }
    if let Some(u) = w.utilization_percent {
        parts.push(format!("util {u}%"));
    }
    if let Some(t) = w.temperature_c {
        parts.push(format!("{t}C"));
    }
    if let Some(p) = w.power_watts {
        parts.push(format!("{p:.0}W"));
    }
    let hb = w
        .heartbeat_age_seconds
        .map_or("-".into(), |a| span(a.max(0.0) as i64));
    parts.push(format!("hb {hb}"));
    parts.push(w.classes.join(","));
    let text = format!("  {}  ", parts.join(" "));
    let gates = if w.gates.is_empty() {
        "gates: -".to_string()
    } else {
        format!("gates: {}", w.gates.join(", "))
    };
    let room = width.saturating_sub(text.chars().count()).max(1);
    let gate_style = if w.gates.is_empty() {
        Style::new().fg(Color::DarkGray)
    } else {
        Style::new().fg(Color::Red)
    };
    Line::from(vec![
        Span::styled(text, Style::new().fg(Color::Gray)),
        Span::styled(truncate(&gates, room), gate_style),
    ])
}

fn draw_queue(frame: &mut Frame<'_>, area: Rect, s: &Snapshot) {
    let o = &s.overview;
    let total = |dir: &str| o.queues.get(dir).map_or(0, |c| c.values().sum::<usize>());
    let mut lines = vec![
        Line::from(format!(
            "queued {:<6} running {}",
            total("queue"),
            total("processing")
        )),
        Line::from(format!(
            "failed {:<6} done {}",
            total("failed"),
            total("complete")
        )),
    ];
    let warn = Style::new().fg(Color::Yellow);
    if o.rejected > 0 {
        lines.push(Line::styled(
            format!("rejected {} (see decisions)", o.rejected),
            warn,
        ));
    }
    if !o.lost.is_empty() {
        lines.push(Line::styled(
            format!("lost {} (dead worker)", o.lost.len()),
            warn,
        ));
    }
    if o.queued_by_priority.is_empty() {
        lines.push(Line::styled(
            "queue empty",
            Style::new().fg(Color::DarkGray),
        ));
    }
    for (class, by_priority) in &o.queued_by_priority {
        let n: usize = by_priority.values().sum();
        let prios: Vec<String> = by_priority
            .iter()
            .rev()
            .map(|(p, k)| format!("p{p}:{k}"))
            .collect();
        lines.push(Line::from(format!("{class:<8}{n:>5} {}", prios.join(" "))));
    }
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::DarkGray))
        .title("Queue");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_batches(frame: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let width = area.width.saturating_sub(2) as usize;
    let items: Vec<ListItem<'static>> = if s.overview.batches.is_empty() {
        vec![ListItem::new("no batch submitted")]
    } else {
        s.overview
            .batches
            .iter()
            .map(|b| ListItem::new(batch_line(b, s.taken_at, width)))
            .collect()
    };
    render_list(
        frame,
        area,
        items,
        pane_block("Batches", Pane::Batches, ui),
        selection(ui, Pane::Batches, s),
    );
}

/// `abc123 plan [█████░░░░░] 45/100 f1 eta 3m12s`
fn batch_line(b: &BatchRecord, now: DateTime<Utc>, width: usize) -> Line<'static> {
    let c = b.counts;
    let done = c.complete + c.failed;
    let bar = progress_bar(done, c.total, 10);
    let tail = if b.state.is_done() {
        b.state.as_str().to_string()
    } else {
        match b.eta {
            Some(eta) => format!("eta {}", span((eta - now).num_seconds().max(0))),
            None => format!("run {}", c.running.min(c.processing)),
        }
    };
    let failed = if c.failed > 0 {
        format!(" f{}", c.failed)
    } else {
        String::new()
    };
    let text = format!(
        "{} {:<8} {bar} {done}/{}{failed} {tail}",
        b.batch_id,
        truncate(&b.name, 8),
        c.total
    );
    let color = match b.state.as_str() {
        "running" => Color::White,
        "complete" => Color::Green,
        _ => Color::Red,
    };
    Line::styled(truncate(&text, width.max(1)), Style::new().fg(color))
}

/// `[█████░░░░░]`: `done` of `total` in `cells` cells.
fn progress_bar(done: usize, total: usize, cells: usize) -> String {
    let full = (done * cells).checked_div(total).unwrap_or(0).min(cells);
    format!("[{}{}]", "█".repeat(full), "░".repeat(cells - full))
}

fn draw_tasks(frame: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let rows = task_rows(s);
    let items: Vec<ListItem<'static>> = if rows.is_empty() {
        vec![ListItem::new("nothing running, nothing failed")]
    } else {
        rows.iter()
            .map(|r| ListItem::new(task_line(r, s)))
            .collect()
    };
    let title = format!(
        "Tasks ({} running, {} failed shown)",
        s.overview.running.len(),
        s.failed.len()
    );
    render_list(
        frame,
        area,
        items,
        pane_block(&title, Pane::Tasks, ui),
        selection(ui, Pane::Tasks, s),
    );
}

fn task_line(r: &TaskRow, s: &Snapshot) -> Line<'static> {
    match r {
        TaskRow::Running(i) => {
            let t = &s.overview.running[*i];
            let took = t.started_at.map_or("claimed".into(), |at| {
                span((s.taken_at - at).num_seconds().max(0))
            });
            Line::from(vec![
                Span::styled("run  ", Style::new().fg(Color::Green)),
                Span::raw(format!(
                    "{} {:<8} {took:>6}  {}",
                    t.batch,
                    t.worker.as_deref().unwrap_or("-"),
                    t.task
                )),
            ])
        }
        TaskRow::Failed(i) => {
            let t = &s.failed[*i];
            Line::from(vec![
                Span::styled("FAIL ", Style::new().fg(Color::Red)),
                Span::raw(format!(
                    "{} {:<15} {}",
                    t.batch,
                    truncate(t.kind.as_deref().unwrap_or("-"), 15),
                    t.name
                )),
            ])
        }
    }
}

fn draw_decisions(frame: &mut Frame<'_>, area: Rect, s: &Snapshot, ui: &Ui) {
    let rows = area.height.saturating_sub(2) as usize;
    // The newest at the bottom, as `tail -f` shows them; the selection moves
    // from the newest up.
    let skip = s.decisions.len().saturating_sub(rows.max(1));
    let items: Vec<ListItem<'static>> = s.decisions[skip..]
        .iter()
        .map(|d| ListItem::new(decision_line(d)))
        .collect();
    let sel = selection(ui, Pane::Decisions, s).and_then(|i| i.checked_sub(skip));
    render_list(
        frame,
        area,
        items,
        pane_block("Decisions", Pane::Decisions, ui),
        sel,
    );
}

/// `12:00:03 release task=...`: a decision line with its time in local
/// `HH:MM:SS` and without the `decision=` key.
fn decision_line(line: &str) -> Line<'static> {
    let (time, rest) = line.split_once(' ').unwrap_or(("", line));
    let clock = DateTime::parse_from_rfc3339(time)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| time.to_string());
    let rest = rest.strip_prefix("decision=").unwrap_or(rest);
    let (kind, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    let color = match kind {
        "fail" | "cascade" | "quarantine" | "lost" | "cancel_batch" => Color::Red,
        "complete" => Color::Green,
        _ => Color::Cyan,
    };
    Line::from(vec![
        Span::styled(format!("{clock} "), Style::new().fg(Color::DarkGray)),
        Span::styled(kind.to_string(), Style::new().fg(color)),
        Span::raw(format!(" {detail}")),
    ])
}

fn draw_popup(frame: &mut Frame<'_>, area: Rect, p: &Popup) {
    let (title, lines, rect) = match p {
        Popup::Help => (
            "Keys (any key closes)".to_string(),
            help_lines(),
            centered(area, 60, 16),
        ),
        Popup::ConfirmCancel { batch, name } => (
            "Cancel batch".to_string(),
            vec![
                Line::from(format!("Cancel batch {batch} ({name})?")),
                Line::from("Nothing more of it starts; running tasks are killed."),
                Line::styled(
                    "y: cancel it    any other key: keep it",
                    Style::new().add_modifier(Modifier::BOLD),
                ),
            ],
            centered(area, 60, 5),
        ),
        Popup::Log {
            title,
            lines,
            scroll,
            ..
        } => {
            let rect = centered(
                area,
                area.width.saturating_sub(2),
                area.height.saturating_sub(2),
            );
            let rows = rect.height.saturating_sub(2) as usize;
            let end = lines.len().saturating_sub(*scroll);
            let start = end.saturating_sub(rows);
            let shown = lines[start..end]
                .iter()
                .map(|l| Line::from(l.clone()))
                .collect();
            (format!("log: {title} (↑↓ scroll, Esc closes)"), shown, rect)
        }
    };
    frame.render_widget(Clear, rect);
    let block = Block::bordered()
        .border_style(Style::new().fg(Color::Yellow))
        .title(title);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        rect,
    );
}

fn help_lines() -> Vec<Line<'static>> {
    [
        "Tab, → / Shift-Tab, ←   next / previous pane",
        "↑ ↓ (k j)               move in the pane",
        "l (Enter)               log of the selected task, or",
        "                        of the selected worker's task",
        "r                       retry the selected failed task",
        "c                       cancel the selected batch (y/n)",
        "d / R                   drain / resume the selected worker",
        "?                       this help",
        "q, Esc, Ctrl-C          quit",
        "",
        "Redrawn when the root's files change, and every",
        "--every seconds for the cards' telemetry.",
    ]
    .into_iter()
    .map(Line::from)
    .collect()
}

/// A `w`×`h` rectangle in the middle of `area` (smaller when `area` is).
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (w.min(area.width), h.min(area.height));
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_fills_by_what_is_done_and_an_empty_batch_draws_empty() {
        assert_eq!(progress_bar(1, 8, 10), "[█░░░░░░░░░]");
        assert_eq!(progress_bar(8, 8, 4), "[████]");
        assert_eq!(progress_bar(0, 0, 3), "[░░░]");
    }

    #[test]
    fn a_decision_line_loses_its_key_and_keeps_its_kind_and_fields() {
        let line = decision_line("not-a-time decision=release task=a batch=b");
        let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
        assert_eq!(text, "not-a-time release task=a batch=b");
        assert_eq!(line.spans[1].style.fg, Some(Color::Cyan));
    }
}
