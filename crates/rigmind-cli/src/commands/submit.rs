//! `rigmind submit` and `rigmind wait`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rigmind_brain::submit::{load_plan, new_batch_id};
use rigmind_config::RigConfig;
use rigmind_queue::batch::{BatchRecord, BatchState};
use rigmind_queue::requests::write_execute_plan;
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::{fsio, Layout, TaskDir};

use crate::args::{CancelArgs, SubmitArgs, WaitArgs};

/// Validates a plan here (so errors show at once, with their lines), then writes the
/// `execute_plan` task that the brain turns into the batch. Returns the batch id.
pub fn submit_plan_file(layout: &Layout, plan: &Path) -> Result<String> {
    check_readable(plan)?;
    layout.ensure()?;
    let config = RigConfig::load(&layout.rig_toml())?;
    let expanded = load_plan(plan, &config).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &expanded.warnings {
        eprintln!("{w}");
    }
    // Only a warning: a worker with an LLM server may be started later, by hand.
    let llm = rigmind_decide::tasks::card_llm_jobs(&expanded, &config);
    if llm > 0 && !config.gpus.iter().any(|g| g.llm_server().is_some()) {
        eprintln!(
            "warning: {}: {llm} llm task(s) that no [[endpoint]] serves, and no [[gpu]] in {} has an LLM server (`ollama` or `llama_server`); they wait in the queue until a worker with one runs",
            plan.display(),
            layout.rig_toml().display()
        );
    }
    let batch = new_batch_id(layout);
    write_execute_plan(layout, plan, &batch)
        .with_context(|| format!("submitting {}", plan.display()))?;
    Ok(batch)
}

/// A plan that cannot be read at all is one error about the file, said as
/// `cannot read PLAN: reason`, before anything else is looked at.
pub fn check_readable(plan: &Path) -> Result<()> {
    match std::fs::File::open(plan).and_then(|f| f.metadata()) {
        Ok(m) if m.is_dir() => anyhow::bail!("cannot read {}: it is a directory", plan.display()),
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", plan.display()),
    }
}

/// `rigmind submit PLAN`
pub fn submit(a: SubmitArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    let batch = match submit_plan_file(&layout, &a.plan) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(1);
        }
    };
    if rigmind_queue::LifeLock::is_held(&layout.brain_lock()) != Some(true) {
        eprintln!(
            "note: no brain is running on {}; the plan waits in tasks/queue/ until one starts (brain --root {})",
            layout.root().display(),
            layout.root().display()
        );
    }
    println!("{batch}");
    Ok(0)
}

/// How a wait ended.
// One value per wait, moved once: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WaitOutcome {
    Done(BatchRecord),
    /// The brain refused the plan; the text is its errors.
    Rejected(String),
    TimedOut,
    /// `tick` asked to stop waiting.
    Stopped,
}

/// Waits until the batch is done, the brain rejects its plan, or the timeout passes;
/// `tick` is called with the record (once there is one) each time it is read, and
/// stops the wait by returning false.
pub fn wait_for_batch(
    layout: &Layout,
    batch: &str,
    timeout: Option<Duration>,
    mut tick: impl FnMut(Option<&BatchRecord>) -> bool,
) -> Result<WaitOutcome> {
    let start = Instant::now();
    loop {
        let record = BatchRecord::read(&layout.batch_file(batch));
        if !tick(record.as_ref().ok()) {
            return Ok(WaitOutcome::Stopped);
        }
        match record {
            // A task sent back by hand (`mv`, `retry`) reopens a batch before the
            // brain has rewritten its record: the files have the last word.
            Ok(r) => {
                if r.state.is_done() && !brain_behind(layout, &r) {
                    return Ok(WaitOutcome::Done(r));
                }
            }
            Err(e) if e.is_not_found() => {
                if let Some(errors) = rejection(layout, batch) {
                    return Ok(WaitOutcome::Rejected(errors));
                }
            }
            Err(e) => tracing::debug!("{e}"),
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Ok(WaitOutcome::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when the files say more than a done batch record does: a task of the batch
/// sits in `queue/` or `processing/`, or one of its files was moved after the record
/// was written (a rename sets the change time, also for a hand `mv`).
///
/// "After" is judged against the record file's own modification time, not its
/// `finished_at`: that is the brain's turn time, taken before the turn's own moves
/// (a cancel or a cascade settles the batch in the same turn) and cut to the
/// millisecond, so files the brain itself moved would look later than the record
/// for ever and `wait` would never return.
///
/// A file changed after the record counts only while the change is recent
/// ([`BRAIN_CATCH_UP`]): a change that is no move for the brain (a task that failed
/// again before the brain looked, so failed → failed; a `chmod`; a backup tool's
/// hard link) is never answered by a new record, and must not keep `wait` waiting.
fn brain_behind(layout: &Layout, r: &BatchRecord) -> bool {
    brain_behind_at(layout, r, std::time::SystemTime::now())
}

/// How long `wait` gives the brain to rewrite a record that files moved after.
const BRAIN_CATCH_UP: Duration = Duration::from_secs(10);

fn brain_behind_at(layout: &Layout, r: &BatchRecord, now: std::time::SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let finished = std::fs::metadata(layout.batch_file(&r.batch_id))
        .map_or(i64::MAX, |m| m.mtime() * 1_000_000_000 + m.mtime_nsec());
    let recent = now
        .checked_sub(BRAIN_CATCH_UP)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let changed_at = |p: &Path| {
        std::fs::metadata(p).map_or(i64::MAX, |m| m.ctime() * 1_000_000_000 + m.ctime_nsec())
    };
    TaskDir::ALL.iter().any(|d| {
        let dir = layout.dir(*d);
        // Every move into or out of a directory changes it: when it has not changed
        // since the record, none of its files has moved since either, and its
        // files need no look (a batch of 100,000 tasks is not stat'ed file by file).
        let moved_since = changed_at(&dir) > finished;
        fsio::list_names(&dir).unwrap_or_default().iter().any(|n| {
            if TaskName::parse(n).is_none_or(|t| {
                t.batch != r.batch_id || rigmind_queue::requests::is_request(&t.name)
            }) {
                return false;
            }
            if matches!(d, TaskDir::Queue | TaskDir::Processing) {
                return true;
            }
            moved_since && {
                let changed = changed_at(&dir.join(n));
                changed != i64::MAX && changed > finished && changed > recent
            }
        })
    })
}

/// The errors of a batch's `execute_plan` task that the brain filed as failed.
fn rejection(layout: &Layout, batch: &str) -> Option<String> {
    let dir = layout.dir(TaskDir::Failed);
    fsio::list_names(&dir).ok()?.into_iter().find_map(|n| {
        let tn = TaskName::parse(&n)?;
        if tn.batch != batch || !tn.name.ends_with(rigmind_queue::requests::EXECUTE_PLAN) {
            return None;
        }
        let t = TaskFile::read(&dir.join(&n)).ok()?;
        Some(t.error.unwrap_or_else(|| "rejected".into()))
    })
}

/// Whether `batch` is known under the root: it has a record, or its submission
/// (`@execute_plan`) or one of its tasks is in a task directory (a submission
/// waits in `queue/` until a brain takes it). The directories are read in the
/// order a submission moves through them, and the record once more at the end,
/// so that a submission moving on meanwhile is still seen somewhere.
fn batch_known(layout: &Layout, batch: &str) -> bool {
    let has_record = || layout.batch_file(batch).exists();
    let of_batch = |n: &String| {
        TaskName::parse(n).is_some_and(|t| {
            t.batch == batch
                && (!rigmind_queue::requests::is_request(&t.name)
                    || t.name.ends_with(rigmind_queue::requests::EXECUTE_PLAN))
        })
    };
    has_record()
        || [
            TaskDir::Queue,
            TaskDir::Processing,
            TaskDir::Complete,
            TaskDir::Failed,
        ]
        .iter()
        .any(|d| {
            fsio::list_names(&layout.dir(*d))
                .unwrap_or_default()
                .iter()
                .any(of_batch)
        })
        || has_record()
}

/// The error for a batch id nobody submitted: names the id and the root, and the
/// known ids when there are few enough to read.
fn unknown_batch(layout: &Layout, batch: &str) -> String {
    const LIST_AT_MOST: usize = 10;
    // Batches with a record, and submissions still waiting for a brain.
    let mut known: std::collections::BTreeSet<String> = BatchRecord::read_all(layout)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|r| r.batch_id)
        .collect();
    for d in [TaskDir::Queue, TaskDir::Processing] {
        known.extend(
            fsio::list_names(&layout.dir(d))
                .unwrap_or_default()
                .iter()
                .filter_map(|n| TaskName::parse(n))
                .filter(|t| t.name.ends_with(rigmind_queue::requests::EXECUTE_PLAN))
                .map(|t| t.batch),
        );
    }
    let known: Vec<String> = known.into_iter().collect();
    let which = match known.len() {
        0 => "no batch has been submitted there".to_string(),
        n if n <= LIST_AT_MOST => format!("known batches: {}", known.join(", ")),
        n => format!("{n} batches are known (rigmind status lists them)"),
    };
    format!(
        "no batch {batch} under {}: {which}",
        layout.root().display()
    )
}

/// `rigmind wait BATCH`: exit 2 at once for an id that is not known.
pub fn wait(a: WaitArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    if !batch_known(&layout, &a.batch) {
        eprintln!("{}", unknown_batch(&layout, &a.batch));
        return Ok(2);
    }
    let timeout = a.timeout.map(Duration::from_secs_f64);
    let mut progress = super::progress::Progress::for_wait();
    let outcome = wait_for_batch(&layout, &a.batch, timeout, |r| {
        if let Some(r) = r {
            progress.update(r);
        }
        true
    })?;
    progress.finish();
    match outcome {
        WaitOutcome::Done(r) => {
            println!(
                "batch {} ({}): {} — {} complete, {} failed of {}",
                r.batch_id,
                r.name,
                r.state.as_str(),
                r.counts.complete,
                r.counts.failed,
                r.counts.total
            );
            Ok(if r.state == BatchState::Complete {
                0
            } else {
                1
            })
        }
        WaitOutcome::Rejected(errors) => {
            eprintln!("{errors}");
            println!("batch {}: plan rejected by the brain", a.batch);
            Ok(1)
        }
        WaitOutcome::Stopped => Ok(2),
        WaitOutcome::TimedOut => {
            println!(
                "batch {}: still running after {:?}",
                a.batch,
                a.timeout.unwrap_or(0.0)
            );
            Ok(2)
        }
    }
}

/// `rigmind cancel BATCH`: writes the batch's cancellation marker (which is the
/// acceptance: no task of the batch starts after it), then waits for the brain to
/// settle the batch. Exit 0 once cancelled (or already done), 2 for an unknown
/// batch, or when the brain has not finished (or does not run).
pub fn cancel(a: CancelArgs) -> Result<i32> {
    let layout = Layout::new(&a.root.root);
    match request_cancel(&layout, &a.batch)? {
        CancelAsked::AlreadyDone(state) => {
            println!("batch {} is already {state}", a.batch);
            return Ok(0);
        }
        CancelAsked::Unknown(why) => {
            eprintln!("{why}");
            return Ok(2);
        }
        CancelAsked::Accepted { at, brain: true } => println!(
            "batch {}: cancellation accepted at {at}; no task of it starts from now on",
            a.batch
        ),
        CancelAsked::Accepted { at, brain: false } => {
            println!(
                "batch {}: cancellation accepted at {at}; no task of it starts from now on",
                a.batch
            );
            eprintln!(
                "note: no brain is running on {}; no task of batch {} starts (workers honour {}), and a brain files its tasks as cancelled when it starts",
                layout.root().display(),
                a.batch,
                layout.cancel_marker(&a.batch).display()
            );
            return Ok(2);
        }
    }
    let timeout = Some(Duration::from_secs_f64(a.timeout.max(0.0)));
    match wait_for_batch(&layout, &a.batch, timeout, |_| true)? {
        WaitOutcome::Done(r) => {
            let c = r.counts;
            let counts = format!(
                "{} complete, {} failed or cancelled of {}",
                c.complete, c.failed, c.total
            );
            println!("{}", ended_line(&r, &format!("({})", r.name), &counts));
            Ok(0)
        }
        WaitOutcome::Rejected(why) => {
            println!("batch {}: {why}", a.batch);
            Ok(0)
        }
        _ => {
            println!(
                "batch {}: cancellation accepted, the brain has not finished filing its tasks yet",
                a.batch
            );
            Ok(2)
        }
    }
}

/// What asking to cancel a batch did.
pub(super) enum CancelAsked {
    /// The batch had ended already (its state's word): nothing was written.
    AlreadyDone(&'static str),
    /// No such batch (the message says where it looked): nothing was written.
    Unknown(String),
    /// The marker is written (at this time): no task of the batch starts from
    /// now on; `brain` says whether a brain runs to file its tasks.
    Accepted { at: String, brain: bool },
}

/// Writes the cancellation marker of `batch` if it names a live batch (or a
/// submission the brain has not read yet), without waiting for the brain.
/// `rigmind cancel` and `rigmind top`'s `c` both start here.
pub(super) fn request_cancel(layout: &Layout, batch: &str) -> Result<CancelAsked> {
    match BatchRecord::read(&layout.batch_file(batch)) {
        Ok(r) if r.state.is_done() => return Ok(CancelAsked::AlreadyDone(r.state.as_str())),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            if !rigmind_queue::cancel::valid_batch_name(batch) || !submission_pending(layout, batch)
            {
                return Ok(CancelAsked::Unknown(format!(
                    "no batch {batch} under {} (nothing in {} and no pending submission of it)",
                    layout.root().display(),
                    layout.batches_dir().display()
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    layout.ensure()?;
    rigmind_queue::cancel::write_marker(layout, batch, &user_name())
        .with_context(|| format!("cancelling batch {batch}"))?;
    Ok(CancelAsked::Accepted {
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        brain: rigmind_queue::LifeLock::is_held(&layout.brain_lock()) == Some(true),
    })
}

/// Whether an `@execute_plan` request of `batch` waits in `queue/` or runs in
/// `processing/` (submitted, not yet turned into a batch by the brain).
fn submission_pending(layout: &Layout, batch: &str) -> bool {
    [TaskDir::Queue, TaskDir::Processing].iter().any(|d| {
        fsio::list_names(&layout.dir(*d))
            .unwrap_or_default()
            .iter()
            .filter_map(|n| TaskName::parse(n))
            .any(|t| t.batch == batch && t.name.ends_with(rigmind_queue::requests::EXECUTE_PLAN))
    })
}

/// Who runs this command, for the brain's decision line.
fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            // SAFETY: getuid cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// The line that says how a batch ended: `batch ID NAME: STATE — COUNTS`, with the
/// name and the counts as each command words them (`wait` and `run` differ).
pub(crate) fn ended_line(r: &BatchRecord, name: &str, counts: &str) -> String {
    format!(
        "batch {} {name}: {} — {counts}",
        r.batch_id,
        r.state.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigmind_queue::batch::BatchState;
    use rigmind_queue::task::{TaskFile, TaskStatus};
    use rigmind_types::TaskClass;

    #[test]
    fn a_file_the_brain_moved_in_its_settling_turn_does_not_keep_wait_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("root"));
        layout.ensure().unwrap();
        let mut record = BatchRecord::submitted(
            "abc123",
            "p",
            dir.path().join("p.md"),
            dir.path().to_path_buf(),
            rigmind_queue::time::now(),
            1,
            1,
        );
        // The turn's time, before the turn's own moves (a cancel, a cascade).
        record.finished_at = Some(rigmind_queue::time::millis(
            chrono::Utc::now() - chrono::Duration::seconds(10),
        ));
        record.state = BatchState::Cancelled;
        let mut t = TaskFile::new("abc123", "nap", TaskClass::Cpu);
        t.status = TaskStatus::Failed;
        let failed = t
            .write_to(&layout.dir(TaskDir::Failed), fsio::Sync::None)
            .unwrap();
        record.write(&layout).unwrap();
        assert!(
            !brain_behind(&layout, &record),
            "the record was written after the move"
        );
        // A hand `mv` after the record reopens the batch until the brain rewrites it
        // (the pause only puts the rename on a later tick of the file-system clock).
        std::thread::sleep(Duration::from_millis(20));
        let back = layout.dir(TaskDir::Queue).join(failed.file_name().unwrap());
        std::fs::rename(&failed, &back).unwrap();
        std::fs::rename(&back, &failed).unwrap();
        assert!(brain_behind(&layout, &record), "a move after the record");
        // A change the brain never answers with a new record (failed → failed)
        // stops counting once it is no longer recent.
        let later = std::time::SystemTime::now() + BRAIN_CATCH_UP + Duration::from_secs(1);
        assert!(!brain_behind_at(&layout, &record, later), "waits for ever");
    }
}
