//! `rigmind top`: a live full-screen view of the rig (ratatui on crossterm),
//! redrawn from the root's files as they change.
//!
//! - `snapshot`: what one frame shows, read from the root (`status`'s overview,
//!   the decisions log's tail, the newest failed tasks);
//! - `view`: the screen as a pure function of a snapshot and the UI state;
//! - `ui`: that state and what each key does to it;
//! - `act`: carrying out a key's action through the commands' own functions.
//!
//! No busy loop: the loop sleeps on one channel fed by a thread reading keys and
//! by the directory watcher (`rigmind_queue::watch`, inotify); a change re-reads
//! the root at most every [`MIN_GAP`] (or [`READ_SHARE`] of its time, on a root
//! so big that a read is slow), and with no change the snapshot is read
//! again every `--every` seconds (the cards' telemetry, the clocks). When stdout
//! is not a terminal it is `rigmind status --watch`.

mod act;
pub mod snapshot;
pub mod ui;
pub mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use rigmind_queue::watch::Change;
use rigmind_queue::{Layout, TaskDir};

pub use snapshot::Snapshot;
pub use ui::Ui;
pub use view::draw;

use crate::args::TopArgs;

/// The least time between two reads of the root while files keep changing: a
/// batch completing thousands of tasks a second must not make `top` list the
/// directories thousands of times a second.
const MIN_GAP: Duration = Duration::from_millis(300);

/// How long the watcher's thread lets a burst of events gather.
const BURST: Duration = Duration::from_millis(50);

/// At most this share of the time goes to reading the root while files keep
/// changing: after a read that took `t`, the next waits `t / READ_SHARE`.
const READ_SHARE: u32 = 5;

/// What wakes the loop.
enum Wake {
    Key(event::KeyEvent),
    /// The terminal changed size.
    Resize,
    /// Something under the root changed.
    Files,
}

/// `rigmind top [--every SECS]`
pub fn top(a: TopArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    if !super::overview::is_root(&layout, "top") {
        return Ok(2);
    }
    if !std::io::stdout().is_terminal() {
        return super::status::watch(&layout, false, a.every);
    }
    if !a.every.is_finite() || a.every < 0.1 {
        bail!(
            "--every {}: give a number of seconds, at least 0.1",
            a.every
        );
    }
    run(&a.root.root, Duration::from_secs_f64(a.every))
}

/// Puts the terminal back however `run` ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn run(root: &Path, every: Duration) -> Result<i32> {
    let (tx, rx) = mpsc::channel();
    // Set while a file wake is on its way; cleared before each read of the
    // root, so that a change after the read wakes the loop again.
    let pending = Arc::new(AtomicBool::new(false));
    let _watcher = watch(root, tx.clone(), pending.clone())?;
    let mut snap = Snapshot::read(root)?;
    let mut terminal = ratatui::try_init().context("rigmind top: setting up the terminal")?;
    let _restore = Restore;
    read_keys(tx);
    let mut ui = Ui::default();
    let (mut last, mut dirty, mut redraw) = (Instant::now(), false, true);
    let mut gap = MIN_GAP;
    loop {
        // Drawn only when the screen may differ: a file event alone waits for
        // the next read of the root (a busy batch raises thousands a second).
        if std::mem::take(&mut redraw) {
            terminal.draw(|f| draw(f, &snap, &ui))?;
        }
        let wait = if dirty {
            gap.saturating_sub(last.elapsed())
        } else {
            every
        };
        match rx.recv_timeout(wait) {
            Ok(Wake::Key(k)) if k.kind != KeyEventKind::Release => {
                redraw = true;
                match ui.on_key(k, &snap) {
                    Some(ui::Action::Quit) => return Ok(0),
                    Some(action) => {
                        act::perform(root, action, &mut ui);
                        dirty = true;
                    }
                    None => {}
                }
            }
            Ok(Wake::Key(_)) => {}
            Ok(Wake::Files) => dirty = true,
            Ok(Wake::Resize) => redraw = true,
            Err(mpsc::RecvTimeoutError::Timeout) => dirty = true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(0),
        }
        if dirty && last.elapsed() >= gap {
            pending.store(false, Ordering::SeqCst);
            let took = Instant::now();
            refresh(root, &mut snap, &mut ui);
            gap = MIN_GAP.max(took.elapsed() * READ_SHARE);
            (last, dirty, redraw) = (Instant::now(), false, true);
        }
    }
}

/// Reads the root again; a failed read keeps the last snapshot and says why.
fn refresh(root: &Path, snap: &mut Snapshot, ui: &mut Ui) {
    match Snapshot::read(root) {
        Ok(s) => *snap = s,
        Err(e) => ui.message = Some(format!("reading {}: {e:#}", root.display())),
    }
    act::refresh_log(root, ui);
}

/// Watches the directories whose changes show on screen (those that exist);
/// changes wake the loop. Not `complete/`: a task that completes leaves
/// `processing/` (watched) at the same moment, and its files would double the
/// events of a busy batch. Dropping the watcher stops it.
fn watch(
    root: &Path,
    tx: mpsc::Sender<Wake>,
    pending: Arc<AtomicBool>,
) -> Result<rigmind_queue::watch::DirWatcher> {
    let layout = Layout::new(root);
    let mut dirs: Vec<PathBuf> = [TaskDir::Queue, TaskDir::Processing, TaskDir::Failed]
        .iter()
        .map(|d| layout.dir(*d))
        .collect();
    dirs.extend([
        layout.rejected_dir(),
        layout.workers_dir(),
        layout.batches_dir(),
        layout.logs_dir(),
    ]);
    dirs.retain(|d| d.is_dir());
    let (watcher, mut changes) = rigmind_queue::watch::watch_dirs(&dirs)?;
    std::thread::spawn(move || {
        while let Some(change) = changes.blocking_recv() {
            // A burst (a batch completing hundreds of tasks a second) is taken
            // whole after a short wait: one wake-up of this thread for many
            // events, not one each.
            let mut wake = !only_locks(&change);
            std::thread::sleep(BURST);
            while let Ok(c) = changes.try_recv() {
                wake |= !only_locks(&c);
            }
            // One wake of the loop stands for every change until its next read.
            if !wake || pending.swap(true, Ordering::SeqCst) {
                continue;
            }
            if tx.send(Wake::Files).is_err() {
                break;
            }
        }
    });
    Ok(watcher)
}

/// Whether a change touched life-lock files only: probing a worker's lock
/// (`LifeLock::is_held`, on every read of the root) opens it for writing, and its
/// close is an event; waking on those, `top` would wake itself forever.
fn only_locks(change: &Change) -> bool {
    match change {
        Change::Paths(paths) => paths
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock")),
        Change::Rescan => false,
    }
}

/// A thread that blocks on the terminal's input and passes keys and resizes on.
fn read_keys(tx: mpsc::Sender<Wake>) {
    std::thread::spawn(move || loop {
        let wake = match event::read() {
            Ok(Event::Key(k)) => Wake::Key(k),
            Ok(Event::Resize(..)) => Wake::Resize,
            Ok(_) => continue,
            Err(_) => break,
        };
        if tx.send(wake).is_err() {
            break;
        }
    });
}
