//! `rigmind drain [WORKER|--all]` and `rigmind resume [WORKER|--all]`: a drained
//! worker finishes what it runs and claims nothing new (`rigmind_queue::drain`: a
//! marker file per worker, `workers/<id>.drain`).

use anyhow::{bail, Result};
use rigmind_queue::workers::WorkerState;
use rigmind_queue::{drain, Layout};

use crate::args::DrainArgs;

/// `rigmind drain` (`resume`: false) or `rigmind resume` (true).
pub fn drain(a: DrainArgs, resume: bool) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let known = known_workers(&layout)?;
    let which: Vec<String> = match (&a.worker, a.all) {
        (Some(w), false) => {
            // A worker not started yet may be drained ahead; say that it is unknown.
            if !known.contains(w) {
                eprintln!(
                    "note: no worker '{w}' has run under {} yet (known: {}); the marker holds for it when it starts",
                    layout.root().display(),
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            }
            vec![w.clone()]
        }
        (None, true) => known,
        _ => bail!("give a worker id, or --all"),
    };
    for w in &which {
        println!("{}", set_drain(&layout, w, resume, "rigmind drain")?);
    }
    if which.is_empty() {
        println!("no worker has run under {} yet", layout.root().display());
    }
    Ok(0)
}

/// Drains worker `w` (`resume`: false) or resumes it (true), as `by` asks; the
/// line saying what happened. `rigmind drain`/`resume` and `rigmind top`'s
/// `d`/`R` both call it.
pub(super) fn set_drain(layout: &Layout, w: &str, resume: bool, by: &str) -> Result<String> {
    let what = if resume {
        if drain::lift(layout, w)? {
            "resumed"
        } else {
            "was not drained"
        }
    } else if drain::request(layout, w, by)? {
        "drained: it finishes what it runs and claims nothing new (rigmind resume to undo)"
    } else {
        "already drained"
    };
    Ok(format!("{w}: {what}"))
}

/// The workers that have a state file under the root.
fn known_workers(layout: &Layout) -> Result<Vec<String>> {
    Ok(WorkerState::read_all(layout)?
        .into_iter()
        .flatten()
        .map(|w| w.worker_id)
        .collect())
}
