//! Carrying out what a key of `rigmind top` asked for, through the same
//! functions as the commands it stands for: `retry`, `cancel`, `drain` and
//! `resume`, and `logs` for a task's log. Each returns the line the bottom of
//! the screen shows, or opens the log pop-up.

use std::path::Path;

use rigmind_queue::Layout;

use super::ui::{Action, Popup, Ui};
use crate::commands::submit::{request_cancel, CancelAsked};
use crate::commands::{drain, logs, retry};

/// How much of the end of a task's log the pop-up shows.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Carries out `action` on the root (not `Quit`, which the loop handles).
pub fn perform(root: &Path, action: Action, ui: &mut Ui) {
    let layout = Layout::new(root);
    let said = match action {
        Action::Quit => return,
        Action::Log { task, title } => {
            ui.popup = Some(Popup::Log {
                title,
                task,
                lines: Vec::new(),
                scroll: 0,
            });
            refresh_log(root, ui);
            return;
        }
        Action::Retry(task) => retry::retry_task(&layout, &task),
        Action::Cancel(batch) => cancel(&layout, &batch),
        Action::Drain(w) => drain::set_drain(&layout, &w, false, "rigmind top"),
        Action::Resume(w) => drain::set_drain(&layout, &w, true, "rigmind top"),
    };
    ui.message = Some(match said {
        Ok(line) => line,
        Err(e) => format!("{e:#}").replace('\n', " "),
    });
}

/// Writes the batch's cancellation marker (no waiting: the screen shows the
/// brain filing its tasks).
fn cancel(layout: &Layout, batch: &str) -> anyhow::Result<String> {
    Ok(match request_cancel(layout, batch)? {
        CancelAsked::AlreadyDone(state) => format!("batch {batch} is already {state}"),
        CancelAsked::Unknown(why) => why,
        CancelAsked::Accepted { brain: true, .. } => {
            format!("batch {batch}: cancellation accepted; no task of it starts from now on")
        }
        CancelAsked::Accepted { brain: false, .. } => {
            format!("batch {batch}: cancellation accepted; no brain runs to file its tasks yet")
        }
    })
}

/// Reads the end of the open log pop-up's log again (it grows while the task
/// runs).
pub fn refresh_log(root: &Path, ui: &mut Ui) {
    let Some(Popup::Log { task, lines, .. }) = &mut ui.popup else {
        return;
    };
    let layout = Layout::new(root);
    let read = logs::log_file(&layout, task).and_then(|p| {
        let bytes = logs::log_tail(&p, LOG_TAIL_BYTES)?;
        Ok((p, bytes))
    });
    *lines = match read {
        Ok((p, bytes)) if bytes.is_empty() => {
            vec![format!("{} is empty or not written yet", p.display())]
        }
        Ok((_, bytes)) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.replace('\t', "    "))
            .collect(),
        Err(e) => vec![format!("{e:#}")],
    };
}
