//! `rigmind top`'s own state (which pane has the focus, the selected rows, an
//! open pop-up, the last message) and what a key does to it. Pure: a key
//! changes this state and may ask for an [`Action`]; carrying it out on the
//! root is `act`'s.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::snapshot::Snapshot;

/// The panes that take the focus, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Workers,
    Batches,
    Tasks,
    Decisions,
}

impl Pane {
    const ALL: [Pane; 4] = [Pane::Workers, Pane::Batches, Pane::Tasks, Pane::Decisions];

    fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Pane {
        let n = Self::ALL.len() as isize;
        Self::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// A row of the tasks pane: the running tasks, then the newest failed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRow {
    /// Index into `overview.running`.
    Running(usize),
    /// Index into `failed`.
    Failed(usize),
}

/// The rows of the tasks pane, in the order they are drawn.
pub fn task_rows(s: &Snapshot) -> Vec<TaskRow> {
    let running = (0..s.overview.running.len()).map(TaskRow::Running);
    running
        .chain((0..s.failed.len()).map(TaskRow::Failed))
        .collect()
}

/// A window over the rest of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popup {
    Help,
    /// `c` asks before it cancels this batch.
    ConfirmCancel {
        batch: String,
        name: String,
    },
    /// A task's log: its last lines, scrolled up by `scroll` lines.
    Log {
        title: String,
        task: String,
        lines: Vec<String>,
        scroll: usize,
    },
}

/// What a key asks to be done on the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Open the log of a task (its id), titled with its name.
    Log {
        task: String,
        title: String,
    },
    Retry(String),
    Cancel(String),
    Drain(String),
    Resume(String),
}

/// Everything about the screen that is not the root's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ui {
    pub focus: Pane,
    /// The selected row of each pane (by `Pane::ALL` index).
    pub selected: [usize; 4],
    pub popup: Option<Popup>,
    /// The outcome of the last action, shown in the bottom line.
    pub message: Option<String>,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            focus: Pane::Workers,
            selected: [0; 4],
            popup: None,
            message: None,
        }
    }
}

impl Ui {
    /// The selected row of `pane`, kept within the rows `s` has.
    pub fn row(&self, pane: Pane, s: &Snapshot) -> usize {
        let n = rows_in(pane, s);
        self.selected[pane.index()].min(n.saturating_sub(1))
    }

    /// What `key` does: the new state, and maybe an action to carry out.
    pub fn on_key(&mut self, key: KeyEvent, s: &Snapshot) -> Option<Action> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Action::Quit);
        }
        match self.popup.take() {
            Some(p) => self.on_popup_key(p, key.code),
            None => self.on_pane_key(key.code, s),
        }
    }

    fn on_popup_key(&mut self, popup: Popup, code: KeyCode) -> Option<Action> {
        match (popup, code) {
            (Popup::ConfirmCancel { batch, .. }, KeyCode::Char('y' | 'Y')) => {
                return Some(Action::Cancel(batch));
            }
            (Popup::ConfirmCancel { batch, .. }, _) => {
                self.message = Some(format!("batch {batch}: not cancelled"));
            }
            (Popup::Log { .. }, KeyCode::Esc | KeyCode::Char('q' | 'l')) => {}
            (
                Popup::Log {
                    title,
                    task,
                    lines,
                    scroll,
                },
                code,
            ) => {
                let scroll = match code {
                    KeyCode::Up | KeyCode::Char('k') => scroll + 1,
                    KeyCode::PageUp => scroll + 10,
                    KeyCode::Down | KeyCode::Char('j') => scroll.saturating_sub(1),
                    KeyCode::PageDown => scroll.saturating_sub(10),
                    KeyCode::End => 0,
                    _ => scroll,
                };
                let scroll = scroll.min(lines.len());
                self.popup = Some(Popup::Log {
                    title,
                    task,
                    lines,
                    scroll,
                });
            }
            // Any key closes the help.
            (Popup::Help, _) => {}
        }
        None
    }

    fn on_pane_key(&mut self, code: KeyCode, s: &Snapshot) -> Option<Action> {
        self.message = None;
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Char('?') | KeyCode::Char('h') => self.popup = Some(Popup::Help),
            KeyCode::Tab | KeyCode::Right => self.focus = self.focus.step(1),
            KeyCode::BackTab | KeyCode::Left => self.focus = self.focus.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_row(1, s),
            KeyCode::Up | KeyCode::Char('k') => self.move_row(-1, s),
            KeyCode::Char('l') | KeyCode::Enter => return self.log_action(s),
            KeyCode::Char('r') => return self.retry_action(s),
            KeyCode::Char('c') => self.ask_cancel(s),
            KeyCode::Char('d') => return self.worker_action(s, Action::Drain),
            KeyCode::Char('R') => return self.worker_action(s, Action::Resume),
            _ => {}
        }
        None
    }

    fn move_row(&mut self, by: isize, s: &Snapshot) {
        let n = rows_in(self.focus, s);
        let at = self.row(self.focus, s) as isize + by;
        self.selected[self.focus.index()] = at.clamp(0, n.saturating_sub(1) as isize) as usize;
    }

    fn say(&mut self, what: &str) -> Option<Action> {
        self.message = Some(what.to_string());
        None
    }

    /// `l`: the selected task's log (tasks pane), or the selected worker's
    /// running task's (workers pane).
    fn log_action(&mut self, s: &Snapshot) -> Option<Action> {
        let picked = match self.focus {
            Pane::Tasks => self.selected_task(s).map(|(id, name, _)| (id, name)),
            Pane::Workers => s
                .overview
                .workers
                .get(self.row(Pane::Workers, s))
                .and_then(|w| Some((w.current_task_id.clone()?, w.current_task.clone()?))),
            _ => None,
        };
        match picked {
            Some((task, title)) => Some(Action::Log { task, title }),
            None => self.say("l: select a task (Tasks pane) or a busy worker (Workers pane)"),
        }
    }

    /// `r`: retry the selected failed task.
    fn retry_action(&mut self, s: &Snapshot) -> Option<Action> {
        match self.selected_task(s).filter(|_| self.focus == Pane::Tasks) {
            Some((id, _, true)) => Some(Action::Retry(id)),
            _ => self.say("r: select a failed task in the Tasks pane"),
        }
    }

    /// `c`: ask before cancelling the selected live batch.
    fn ask_cancel(&mut self, s: &Snapshot) {
        let b = s.overview.batches.get(self.row(Pane::Batches, s));
        match b.filter(|_| self.focus == Pane::Batches) {
            Some(b) if !b.state.is_done() => {
                self.popup = Some(Popup::ConfirmCancel {
                    batch: b.batch_id.clone(),
                    name: b.name.clone(),
                });
            }
            Some(b) => {
                self.message = Some(format!(
                    "batch {} is already {}",
                    b.batch_id,
                    b.state.as_str()
                ))
            }
            None => self.message = Some("c: select a batch in the Batches pane".into()),
        }
    }

    /// `d` / `R`: drain or resume the selected worker.
    fn worker_action(&mut self, s: &Snapshot, act: fn(String) -> Action) -> Option<Action> {
        let w = s.overview.workers.get(self.row(Pane::Workers, s));
        match w.filter(|_| self.focus == Pane::Workers) {
            Some(w) => Some(act(w.worker_id.clone())),
            None => self.say("d/R: select a worker in the Workers pane"),
        }
    }

    /// The selected row of the tasks pane: (task id, name, failed).
    fn selected_task(&self, s: &Snapshot) -> Option<(String, String, bool)> {
        match task_rows(s).get(self.row(Pane::Tasks, s))? {
            TaskRow::Running(i) => {
                let t = &s.overview.running[*i];
                Some((t.task_id.clone(), t.task.clone(), false))
            }
            TaskRow::Failed(i) => {
                let t = &s.failed[*i];
                Some((t.task_id.clone(), t.name.clone(), true))
            }
        }
    }
}

/// How many rows `pane` has in `s`.
fn rows_in(pane: Pane, s: &Snapshot) -> usize {
    match pane {
        Pane::Workers => s.overview.workers.len(),
        Pane::Batches => s.overview.batches.len(),
        Pane::Tasks => task_rows(s).len(),
        Pane::Decisions => s.decisions.len(),
    }
}
