//! `rigmind top` against a real rig: a brain, a GPU worker (fake card) and a
//! CPU worker running a submitted plan. The screen is drawn on ratatui's
//! `TestBackend` from a snapshot of the real root, the keys are checked
//! against it, and the real binary runs once in tmux (80×24) and once with
//! stdout on a pipe (`status --watch`).
//!
//! With `RIGMIND_TOP_SHOTS=DIR` the tests also write what they saw as ANSI text
//! (`testbackend.ans`, `tmux.ans`), which `scripts/top-shots.sh` turns into
//! the pictures of docs/img/.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, skip, text, Rig, RIGMIND};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use rigmind_cli::commands::top::ui::{Action, Pane};
use rigmind_cli::commands::top::{draw, Snapshot, Ui};

const PLAN: &str = "# Plan: topdemo

## Defaults
- retries: 0

## Task: broken
- task_class: cpu
- command: `echo about to fail; exit 3`

## Task: work
- task_class: cpu
- for_each: in/*.txt
- command: `echo working on $RIGMIND_ITEM; sleep 60`

## Task: render
- task_class: script
- command: `echo on the card; sleep 60`
";

/// A rig with a brain, `gpu0` (a fake 24 GB card) and `cpu1`, running PLAN:
/// returns it with the batch id once `render` and one `work` item run, and
/// `broken` has failed, as the files and the batch record say.
fn running_rig() -> (Rig, String) {
    let mut rig = Rig::new();
    rig.env.push(("RIGMIND_FAKE_GPUS".into(), "1x24000".into()));
    rig.start_brain();
    // The card runs `render` only, the CPU worker the rest: who runs what is fixed.
    rig.start_worker("gpu0", &["--gpu", "0", "--classes", "script"]);
    rig.start_worker("cpu1", &[]);
    for item in ["a", "b", "c", "d", "e", "f"] {
        rig.write(&format!("in/{item}.txt"), item);
    }
    let batch = rig.submit(&rig.write("plan.md", PLAN));
    eventually(30, "two tasks running and one failed", || {
        rig.names_in("processing").len() == 2 && rig.names_in("failed").len() == 1
    });
    // Both workers have published the task they run, and the brain has logged
    // the failure.
    eventually(15, "the workers' state files and the decisions", || {
        let s = Snapshot::read(&rig.root()).unwrap();
        let counted = s
            .overview
            .batches
            .first()
            .is_some_and(|b| (b.counts.failed, b.counts.running, b.counts.queued) == (1, 2, 5));
        s.overview.workers.len() == 2
            && s.overview
                .workers
                .iter()
                .all(|w| w.task_started_at.is_some())
            && s.decisions.iter().any(|d| d.contains("decision=fail"))
            && counted
    });
    (rig, batch)
}

/// The buffer's rows as text.
fn rows(b: &Buffer) -> Vec<String> {
    let w = b.area.width as usize;
    let cells: Vec<&str> = b.content.iter().map(|c| c.symbol()).collect();
    cells.chunks(w).map(|r| r.concat()).collect()
}

fn render(s: &Snapshot, ui: &Ui) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| draw(f, s, ui)).unwrap();
    t.backend().buffer().clone()
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::from(c)
}

#[test]
fn the_screen_of_a_running_rig_fits_80x24_and_shows_it_all() {
    let (rig, batch) = running_rig();
    let snap = Snapshot::read(&rig.root()).unwrap();
    let buf = render(&snap, &Ui::default());
    let screen = rows(&buf);
    let all = screen.join("\n");
    println!("{all}");
    assert_eq!(screen.len(), 24);
    let has = |what: &str| assert!(all.contains(what), "no '{what}' on screen:\n{all}");
    // Cards and workers: both workers, the fake card's memory and temperature,
    // the tasks they run, their classes, heartbeat and gates.
    has("gpu0");
    has("cpu1");
    has("script_busy");
    has("vram 0.0/23.4G");
    has("40C");
    has("render");
    has("work[");
    has("hb ");
    has("gates: -");
    // Queue depths per class and priority: 5 work items wait, priority 5.
    has("queued 5");
    has("cpu         5 p5:5");
    // The batch with its bar and counts, the tasks, the decisions.
    has(&format!("{batch} topdemo"));
    has("1/8 f1");
    has("FAIL");
    has("broken");
    has("release");
    has("fail batch=");
    // Every row is drawn within the 80 columns: the bottom line is the keys.
    assert!(screen[23].starts_with("Tab/"), "{}", screen[23]);
    if let Ok(dir) = std::env::var("RIGMIND_TOP_SHOTS") {
        std::fs::write(Path::new(&dir).join("testbackend.ans"), ansi(&buf)).unwrap();
    }
}

#[test]
fn a_root_whose_processes_were_killed_still_draws() {
    let (mut rig, batch) = running_rig();
    rig.kill9("brain");
    rig.kill9("cpu1");
    let snap = Snapshot::read(&rig.root()).unwrap();
    let all = rows(&render(&snap, &Ui::default())).join("\n");
    assert!(all.contains("brain not running"), "{all}");
    assert!(all.contains("cpu1       dead"), "{all}");
    // Its task is still in processing/, held by a dead worker: lost.
    assert!(all.contains("lost 1 (dead worker)"), "{all}");
    assert!(all.contains(&batch), "{all}");
}

#[test]
fn keys_pick_the_failed_task_the_batch_and_the_worker() {
    let (rig, batch) = running_rig();
    let snap = Snapshot::read(&rig.root()).unwrap();
    let mut ui = Ui::default();
    // Workers pane: `d` drains the first worker (by id), `l` opens its task.
    assert_eq!(
        ui.on_key(key(KeyCode::Char('d')), &snap),
        Some(Action::Drain("cpu1".into()))
    );
    let Some(Action::Log { title, .. }) = ui.on_key(key(KeyCode::Char('l')), &snap) else {
        panic!("l on a busy worker opens its task's log");
    };
    assert!(title.starts_with("work["), "{title}");
    // Batches pane: `c` asks first; `y` cancels.
    ui.on_key(key(KeyCode::Tab), &snap);
    assert_eq!(ui.focus, Pane::Batches);
    assert_eq!(ui.on_key(key(KeyCode::Char('c')), &snap), None);
    let screen = rows(&render(&snap, &ui)).join("\n");
    assert!(
        screen.contains(&format!("Cancel batch {batch} (topdemo)?")),
        "{screen}"
    );
    assert_eq!(
        ui.on_key(key(KeyCode::Char('y')), &snap),
        Some(Action::Cancel(batch.clone()))
    );
    // Tasks pane: the two running tasks, then the failed one; `r` retries it.
    ui.on_key(key(KeyCode::Tab), &snap);
    assert_eq!(
        ui.on_key(key(KeyCode::Char('r')), &snap),
        None,
        "a running task is not retried"
    );
    for _ in 0..5 {
        ui.on_key(key(KeyCode::Down), &snap);
    }
    let failed = &snap.failed[0];
    assert_eq!(failed.name, "broken");
    assert_eq!(
        ui.on_key(key(KeyCode::Char('r')), &snap),
        Some(Action::Retry(failed.task_id.clone()))
    );
    assert_eq!(ui.on_key(key(KeyCode::Char('?')), &snap), None);
    let screen = rows(&render(&snap, &ui)).join("\n");
    assert!(screen.contains("Keys (any key closes)"), "{screen}");
    ui.on_key(key(KeyCode::Esc), &snap);
    assert_eq!(
        ui.on_key(key(KeyCode::Char('q')), &snap),
        Some(Action::Quit)
    );
}

/// A tmux server of the test's own (`-L`), killed at the end.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("run tmux")
    }
    fn screen(&self, escapes: bool) -> String {
        let args: &[&str] = if escapes {
            &["capture-pane", "-e", "-p", "-t", "top"]
        } else {
            &["capture-pane", "-p", "-t", "top"]
        };
        text(&self.run(args).stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_runs_in_a_real_terminal_and_q_quits() {
    let test = "top_runs_in_a_real_terminal_and_q_quits";
    if Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        skip(test, "tmux is not installed (apt-get install tmux)");
        return;
    }
    let (rig, batch) = running_rig();
    let tmux = Tmux(format!("rigmind-top-{}", std::process::id()));
    let rc = rig.dir.path().join("top.rc");
    let cmd = format!(
        "{RIGMIND} top --root '{}' --every 0.5; echo $? > '{}'",
        rig.root().display(),
        rc.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        "-s",
        "top",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux: {}", text(&out.stderr));
    eventually(20, "top's screen in tmux", || {
        let s = tmux.screen(false);
        s.contains("Workers (2)") && s.contains(&batch) && s.contains("Decisions")
    });
    let screen = tmux.screen(false);
    println!("{screen}");
    assert!(
        screen.contains("gpu0") && screen.contains("cpu1"),
        "{screen}"
    );
    assert!(screen.lines().count() <= 24 && screen.lines().all(|l| l.chars().count() <= 80));
    // Tab to the batches, `c`: the confirmation shows; any key but y keeps it.
    tmux.run(&["send-keys", "-t", "top", "Tab"]);
    tmux.run(&["send-keys", "-t", "top", "c"]);
    eventually(10, "the cancel confirmation", || {
        tmux.screen(false).contains("Cancel batch")
    });
    tmux.run(&["send-keys", "-t", "top", "n"]);
    eventually(10, "the batch kept", || {
        tmux.screen(false).contains("not cancelled")
    });
    if let Ok(dir) = std::env::var("RIGMIND_TOP_SHOTS") {
        tmux.run(&["send-keys", "-t", "top", "BTab"]);
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(Path::new(&dir).join("tmux.ans"), tmux.screen(true)).unwrap();
    }
    tmux.run(&["send-keys", "-t", "top", "q"]);
    eventually(10, "top to exit 0 on q", || {
        std::fs::read_to_string(&rc).is_ok_and(|s| s.trim() == "0")
    });
    let batch_file = rig.root().join(format!("tasks/cancel/{batch}"));
    assert!(!batch_file.exists(), "n must not cancel the batch");
}

#[test]
fn without_a_terminal_top_prints_status_every_period() {
    let (rig, batch) = running_rig();
    let mut child = Command::new(RIGMIND)
        .args(["top", "--every", "0.3", "--root"])
        .arg(rig.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("=== rigmind status at").count() < 3
        && started.elapsed() < Duration::from_secs(20)
    {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.matches("=== rigmind status at").count() >= 3, "{seen}");
    assert!(seen.contains(&batch) && seen.contains("gpu0"), "{seen}");
    // No escape sequence: a pipe gets plain text.
    assert!(!seen.contains('\u{1b}'), "{seen}");
}

/// The buffer as ANSI text (foreground colours, bold, reverse), for pictures.
fn ansi(b: &Buffer) -> String {
    let mut out = String::new();
    for row in b.content.chunks(b.area.width as usize) {
        for cell in row {
            let mut sgr = vec!["0".to_string()];
            if let Some(c) = sgr_color(cell.fg) {
                sgr.push(c);
            }
            if cell.modifier.contains(Modifier::BOLD) {
                sgr.push("1".into());
            }
            if cell.modifier.contains(Modifier::REVERSED) {
                sgr.push("7".into());
            }
            out.push_str(&format!("\u{1b}[{}m{}", sgr.join(";"), cell.symbol()));
        }
        out.push_str("\u{1b}[0m\n");
    }
    out
}

fn sgr_color(c: Color) -> Option<String> {
    let n = match c {
        Color::Red => 31,
        Color::Green => 32,
        Color::Yellow => 33,
        Color::Blue => 34,
        Color::Magenta => 35,
        Color::Cyan => 36,
        Color::Gray => 37,
        Color::DarkGray => 90,
        Color::White => 97,
        _ => return None,
    };
    Some(n.to_string())
}
