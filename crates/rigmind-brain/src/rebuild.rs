//! A brain starting on an existing root rebuilds every batch from the files alone.

use std::collections::{BTreeMap, HashMap};

use rigmind_config::RigConfig;
use rigmind_queue::batch::{BatchRecord, BatchState};
use rigmind_queue::fsio;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{FailureKind, TaskFile, TaskName, TaskStatus};
use rigmind_queue::{Layout, QueueError, TaskDir};
use std::path::PathBuf;

use crate::observe::{holder_of, status_at, Place};
use crate::state::{Batch, BrainState, Job, JobStatus, JobWork};

/// Whether a rebuild may set the files right as it reads them (a brain's start),
/// or only reads (`rigmind simulate --root`, beside a live brain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Duplicates removed, manifests queued, bad files moved aside, lost tasks
    /// re-created, unbuildable batches failed; each logged.
    Start,
    /// Nothing under the root is written: what a start would fix is taken as it
    /// would be fixed (a lost or unqueued task as one to run again), or the batch
    /// is left out.
    ReadOnly,
}

impl Mode {
    fn writes(self) -> bool {
        self == Mode::Start
    }
}

/// Every public file, grouped by batch: file name -> places.
type Public = HashMap<String, BTreeMap<String, Vec<TaskDir>>>;

/// A job read back from its files, with what is left to do about it.
struct ReadJob {
    job: Job,
    /// Its `depends_on` names, when its file could be read.
    deps: Option<Vec<String>>,
    /// Its only copy is not a valid task: rejected once the batch is in the state.
    invalid: Option<(PathBuf, String)>,
    /// A queued retry's back-off (`not_before`), so status can say `retrying`.
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Some when a private copy sits behind a later public copy (a release whose
    /// flush the last brain may not have finished): whether that public copy still
    /// needs its flush (a result does not: its runner flushed it).
    private_behind: Option<bool>,
}

/// Reads every batch record and task file under the root into a [`BrainState`].
///
/// A task found in two places (a crash between a write and a removal) keeps its
/// latest state and the stale copy is removed, with a decision logged. Dependencies
/// are resolved from the `depends_on` names of pending tasks: a name is a task of the
/// batch, or a plan task whose items it waits for all of. A batch that cannot be
/// rebuilt fails alone (`decision=batch_failed`, its record marked failed): one bad
/// batch never stops a brain from starting.
pub fn rebuild(layout: &Layout, logs: &Logs, config: &RigConfig) -> Result<BrainState, QueueError> {
    Ok(rebuild_as(layout, logs, config, Mode::Start)?.0)
}

/// [`rebuild`] without writing anything under the root: the state a brain
/// starting now would have, for simulating the rest (`rigmind simulate --root`).
/// A task a start would re-create (its file lost) or queue (a submission's
/// manifest) counts as one to run again; a batch a start would fail is left out,
/// named in the lines returned beside the state.
pub fn rebuild_read_only(
    layout: &Layout,
    config: &RigConfig,
) -> Result<(BrainState, Vec<String>), QueueError> {
    rebuild_as(layout, &Logs::new(layout), config, Mode::ReadOnly)
}

/// The rebuild in either mode, with the batches left out (read-only) and why.
fn rebuild_as(
    layout: &Layout,
    logs: &Logs,
    config: &RigConfig,
    mode: Mode,
) -> Result<(BrainState, Vec<String>), QueueError> {
    let mut state = BrainState::default();
    let mut left_out = Vec::new();
    let mut public: Public = HashMap::new();
    for d in TaskDir::ALL {
        for name in fsio::list_names(&layout.dir(d))? {
            if let Some(tn) =
                TaskName::parse(&name).filter(|t| !rigmind_queue::requests::is_request(&t.name))
            {
                public
                    .entry(tn.batch)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .push(d);
            }
        }
    }
    for record in BatchRecord::read_all(layout)? {
        let record = match record {
            Ok(r) => r,
            Err(e) if mode.writes() => {
                logs.decision(&Decision::new("skip_batch").kv("reason", e))?;
                continue;
            }
            Err(e) => {
                left_out.push(e.to_string());
                continue;
            }
        };
        let mine = public.remove(&record.batch_id).unwrap_or_default();
        match rebuild_batch(layout, logs, config, &record, mine, mode) {
            Ok((batch, invalid)) => {
                state.insert(batch);
                // Read-only, the task is a definition error in the state already.
                for (path, reason) in invalid.into_iter().filter(|_| mode.writes()) {
                    crate::observe::reject(layout, logs, &mut state, &path, &reason);
                }
            }
            Err(reason) if mode.writes() => fail_batch(layout, logs, record, &reason)?,
            Err(reason) => left_out.push(format!("batch {}: {reason}", record.batch_id)),
        }
    }
    relearn(layout, &mut state);
    relearn_loads(layout, &mut state);
    Ok((state, left_out))
}

/// At most this many of the latest completed `load_llm` tasks are read back at start.
const RELEARN_LOADS: usize = 64;

/// The load times learned before, from the latest `load_llm` tasks in `complete/`
/// (named by the time they were made, so the last names are the latest).
fn relearn_loads(layout: &Layout, state: &mut BrainState) {
    let dir = layout.dir(TaskDir::Complete);
    let Ok(names) = fsio::list_names(&dir) else {
        return;
    };
    let loads: Vec<&String> = names
        .iter()
        .filter(|n| {
            TaskName::parse(n).is_some_and(|t| {
                t.batch == rigmind_queue::task::RESOURCE_BATCH
                    && t.name == rigmind_queue::task::LOAD_LLM
            })
        })
        .collect();
    for name in loads.iter().rev().take(RELEARN_LOADS) {
        let Ok(t) = TaskFile::read(&dir.join(name)) else {
            continue;
        };
        let (Some(worker), Some(model), Some(secs)) = (t.target_worker, t.model, t.elapsed_seconds)
        else {
            continue;
        };
        let key = rigmind_decide::estimate::load_key(&model, &worker);
        state.learned_loads.entry(key).or_default().add(secs);
    }
}

/// At most this many `complete/` files per plan task are read back at start: the
/// learned median needs a sample, not every file of a 100,000-item batch.
const RELEARN_PER_TASK: usize = 32;

/// What the last brain had learned of run times, rebuilt from the `complete/` files
/// of the live batches (the files are the state): each completed task's
/// `elapsed_seconds`, up to [`RELEARN_PER_TASK`] per plan task, the latest first.
fn relearn(layout: &Layout, state: &mut BrainState) {
    let dir = layout.dir(TaskDir::Complete);
    let mut read: HashMap<String, usize> = HashMap::new();
    for batch in state.batches.values().filter(|b| b.active()) {
        for j in batch.jobs.iter().rev() {
            if j.status != JobStatus::Complete {
                continue;
            }
            let n = read.entry(j.plan_task_id.clone()).or_default();
            if *n >= RELEARN_PER_TASK {
                continue;
            }
            *n += 1;
            let Some(secs) = TaskFile::read(&dir.join(&j.file_name))
                .ok()
                .and_then(|t| t.elapsed_seconds)
            else {
                continue;
            };
            state
                .learned
                .entry(j.plan_task_id.clone())
                .or_default()
                .add(secs);
        }
    }
}

/// Marks a batch that cannot be rebuilt as failed, on disk and in the log, so that
/// `rigmind wait` ends and people see why.
fn fail_batch(
    layout: &Layout,
    logs: &Logs,
    mut record: BatchRecord,
    reason: &str,
) -> Result<(), QueueError> {
    tracing::error!(batch = %record.batch_id, "{reason}");
    if !record.state.is_done() {
        record.state = BatchState::Failed;
        record.finished_at = Some(rigmind_queue::time::now());
        if let Err(e) = record.write(layout) {
            tracing::warn!("{e}");
        }
    }
    logs.decision(
        &Decision::new("batch_failed")
            .kv("batch", &record.batch_id)
            .kv("plan", &record.name)
            .kv("reason", reason),
    )
}

/// Rebuilds one batch from its record, its private tasks and its public files
/// (`mine`). `Err` says why it cannot be.
fn rebuild_batch(
    layout: &Layout,
    logs: &Logs,
    config: &RigConfig,
    record: &BatchRecord,
    mut mine: BTreeMap<String, Vec<TaskDir>>,
    mode: Mode,
) -> Result<(Batch, Vec<(PathBuf, String)>), String> {
    let batch_id = record.batch_id.clone();
    let err = |e: QueueError| e.to_string();
    if mode.writes() {
        // A brain killed while writing a task into queue/ leaves its temporary here.
        fsio::remove_temporaries(&layout.private_dir(&batch_id)).map_err(err)?;
    }
    // A submission that stopped while queueing its ready tasks: finish it (read
    // only, its unqueued tasks are found missing and re-created below).
    let manifest = crate::submit::read_manifest(layout, &batch_id).filter(|_| mode.writes());
    if let Some((ready, written)) = manifest {
        crate::submit::queue_manifest(layout, logs, &batch_id, (&ready, written), |name| {
            mine.contains_key(name)
        })
        .map_err(err)?;
        for t in ready.iter().filter(|_| !written) {
            mine.entry(t.file_name())
                .or_insert_with(|| vec![TaskDir::Queue]);
        }
    }
    let mut files: BTreeMap<String, Vec<Place>> = BTreeMap::new();
    for name in fsio::list_names(&layout.private_dir(&batch_id)).map_err(err)? {
        files.entry(name).or_default().push(Place::Private);
    }
    for (name, dirs) in mine {
        let places = files.entry(name).or_default();
        places.extend(dirs.into_iter().map(Place::Public));
    }
    let mut jobs = Vec::with_capacity(files.len());
    let mut pending_deps: Vec<(usize, Vec<String>)> = Vec::new();
    let mut retry_at = Vec::new();
    let mut invalid: Vec<(PathBuf, String)> = Vec::new();
    let mut behind: Vec<(String, bool)> = Vec::new();
    for (file_name, places) in files {
        let Some(read) = read_job(layout, logs, &batch_id, file_name, places, mode).map_err(err)?
        else {
            continue;
        };
        if let Some(flush) = read.private_behind {
            behind.push((read.job.file_name.clone(), flush));
        }
        // Every job read gets its edges back: pending ones wait on them, failed
        // ones are revived through them, queued ones are held back by them.
        if let Some(deps) = read.deps {
            pending_deps.push((jobs.len(), deps));
        }
        invalid.extend(read.invalid);
        if let Some(at) = read.retry_at {
            retry_at.push((jobs.len(), at));
        }
        jobs.push(read.job);
    }
    finish_release_flushes(layout, logs, &batch_id, behind).map_err(err)?;
    recover_missing(
        layout,
        logs,
        config,
        record,
        (&mut jobs, &mut pending_deps),
        mode,
    )?;
    resolve_dependencies(&mut jobs, pending_deps);
    let mut batch = Batch::new(record.clone(), jobs);
    batch.retry_at.extend(retry_at);
    batch.refresh_counts();
    Ok((batch, invalid))
}

/// Finishes what the last brain's flushing thread may have left undone
/// (crate::flush): the public copies of released tasks are flushed where they are
/// now, then `queue/`'s entries (a result needs neither: its runner flushed it),
/// and only then are their private copies removed, so that a power cut at any
/// moment still finds each task whole in one of its places. `behind`: each such
/// task's file name, and whether its public copy needs the flush.
fn finish_release_flushes(
    layout: &Layout,
    logs: &Logs,
    batch_id: &str,
    behind: Vec<(String, bool)>,
) -> Result<(), QueueError> {
    if behind.is_empty() {
        return Ok(());
    }
    // As the flushing thread does: each where it is now (a copy claimed since it
    // was read is flushed in processing/), then queue/'s entries.
    let due: Vec<crate::flush::ReleasedFile> = behind
        .iter()
        .filter(|(_, flush)| *flush)
        .map(|(name, _)| (batch_id.to_string(), name.clone()))
        .collect();
    if !due.is_empty() {
        crate::flush::flush_released(&crate::flush::Dirs::of(layout), &due)?;
    }
    let private = layout.private_dir(batch_id);
    for (name, _) in &behind {
        fsio::remove_if_exists(&private.join(name))?;
    }
    logs.decision(
        &Decision::new("finish_release_flush")
            .kv("batch", batch_id)
            .kv("tasks", behind.len())
            .kv(
                "reason",
                "released before the last brain stopped; their queue copies are flushed and their private copies removed",
            ),
    )
}

/// Jobs the batch record counts but no directory holds (a file removed while the
/// brain was down): re-created from the plan and filed as lost, so that they are
/// retried and their dependents still wait for them. `Err` when the plan cannot
/// give them: the batch then fails, naming how many are missing, rather than
/// completing smaller.
fn recover_missing(
    layout: &Layout,
    logs: &Logs,
    config: &RigConfig,
    record: &BatchRecord,
    (jobs, pending_deps): (&mut Vec<Job>, &mut Vec<(usize, Vec<String>)>),
    mode: Mode,
) -> Result<(), String> {
    let want = record.counts.total;
    if jobs.len() >= want {
        return Ok(());
    }
    let missing = want - jobs.len();
    let lead = format!("{missing} of its {want} tasks are in no directory");
    let tasks = crate::lost::plan_tasks(record, config).map_err(|e| format!("{lead}, and {e}"))?;
    let known: std::collections::HashSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    let mut gone: Vec<TaskFile> = tasks
        .into_values()
        .filter(|t| !known.contains(t.name.as_str()))
        .collect();
    if gone.len() != missing {
        return Err(format!(
            "{lead}, and its plan {} now gives {} tasks not found",
            record.plan_file.display(),
            gone.len()
        ));
    }
    gone.sort_by_key(|t| t.seq);
    renumber_gone(&mut gone, jobs, record);
    let reason = "file removed (found in no directory at the brain's start)";
    for mut t in gone {
        t.status = TaskStatus::Failed;
        t.failure_kind = Some(FailureKind::LostWorker);
        t.error = Some(reason.to_string());
        t.finished_at = Some(rigmind_queue::time::now());
        if mode.writes() {
            file_lost(layout, logs, record, &t, reason)?;
        }
        pending_deps.push((jobs.len(), t.depends_on.clone()));
        let mut job = crate::submit::job_of(&t, Vec::new());
        job.status = JobStatus::Failed(crate::observe::failure_info(&t));
        jobs.push(job);
    }
    Ok(())
}

/// Gives the re-created tasks `gone` sequence numbers no found job of the batch
/// has: today's numbering of the plan where it is free, else the first free number
/// of the batch's range. (A batch numbered by an earlier build, or whose plan's
/// estimates were edited since, was numbered otherwise: its found jobs keep their
/// own numbers, and two files must never share one.)
fn renumber_gone(gone: &mut [TaskFile], jobs: &[Job], record: &BatchRecord) {
    let mut used: std::collections::HashSet<u64> = jobs
        .iter()
        .filter_map(|j| rigmind_queue::task::TaskName::parse(&j.file_name).map(|n| n.seq))
        .collect();
    let mut next = record.seq_base;
    for t in gone.iter_mut() {
        if used.insert(t.seq) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        t.seq = next;
        used.insert(next);
    }
}

/// Files a task re-created from the plan in `failed/` as lost, and logs it.
fn file_lost(
    layout: &Layout,
    logs: &Logs,
    record: &BatchRecord,
    t: &TaskFile,
    reason: &str,
) -> Result<(), String> {
    let name = t.file_name();
    t.write_named(&layout.dir(TaskDir::Failed), &name, fsio::Sync::Dir)
        .map_err(|e| e.to_string())?;
    logs.decision(
        &Decision::new("lost")
            .kv("batch", &record.batch_id)
            .kv("task", &t.name)
            .kv("plan_task_id", &t.plan_task_id)
            .kv("failure_kind", FailureKind::LostWorker)
            .kv("recreated_from", "plan")
            .kv("reason", reason),
    )
    .map_err(|e| e.to_string())
}

/// Reads one task of a batch from the places its file was listed in: the latest
/// readable copy wins, stale copies are removed, a bad one is judged.
fn read_job(
    layout: &Layout,
    logs: &Logs,
    batch_id: &str,
    file_name: String,
    mut places: Vec<Place>,
    mode: Mode,
) -> Result<Option<ReadJob>, QueueError> {
    let Some(tn) = TaskName::parse(&file_name) else {
        return Ok(None);
    };
    // Latest first; the latest copy that reads as a task wins.
    places.sort_by_key(|p| std::cmp::Reverse(crate::observe::rank(*p)));
    let mut kept: Option<(Place, Option<TaskFile>)> = None;
    let mut bad_copies: Vec<(PathBuf, String)> = Vec::new();
    for place in &places {
        let path = place.dir(layout, batch_id).join(&file_name);
        if kept.is_some() && (!mode.writes() || *place == Place::Private) {
            // A private copy behind a later one is judged below.
            continue;
        }
        if kept.is_some() {
            fsio::remove_if_exists(&path)?;
            logs.decision(
                &Decision::new("resolve_duplicate")
                    .kv("batch", batch_id)
                    .kv("task", &tn.name)
                    .kv("kept", kept.as_ref().map_or("", |k| k.0.name()))
                    .kv("removed", place.name())
                    .kv(
                        "reason",
                        "found in two places after a crash; the later state wins",
                    ),
            )?;
            continue;
        }
        // Completed tasks are known by their name alone (unless the file name
        // holds only the beginning of it).
        if *place == Place::Public(TaskDir::Complete) && tn.cut.is_none() {
            kept = Some((*place, None));
            continue;
        }
        match TaskFile::read(&path) {
            Ok(mut t) => {
                if *place == Place::Public(TaskDir::Queue)
                    && t.released_by.is_none()
                    && mode.writes()
                {
                    // Put there while no brain ran, or by an older rigmind: nobody
                    // can tell which, so it is logged as a hand task and let in.
                    crate::observe::note_hand_task(logs, &path, &mut t);
                    fsio::write_atomic(&path, &t.to_bytes(), fsio::Sync::Data)?;
                }
                kept = Some((*place, Some(t)));
            }
            Err(_) if *place == Place::Public(TaskDir::Complete) => kept = Some((*place, None)),
            // Judged below, once it is known whether a good copy exists.
            Err(QueueError::Invalid { reason, .. }) => bad_copies.push((path, reason)),
            // Moved on since the listing (a worker claimed it): look again. Found
            // in no public place, it is still moving: an earlier place (a private
            // copy a release keeps until its flush) is no way back.
            Err(e) if e.is_not_found() => {
                kept = relocate(layout, batch_id, &file_name);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let private_behind = private_behind(&kept, &places).filter(|_| mode.writes());
    let good_copy = matches!(
        kept,
        Some((_, Some(_))) | Some((Place::Public(TaskDir::Complete), _))
    );
    let mut invalid = None;
    if good_copy {
        // A bad stale copy beside a good one: moved aside, the task goes on.
        for (path, reason) in bad_copies.into_iter().filter(|_| mode.writes()) {
            crate::observe::quarantine(layout, logs, &path, &reason);
        }
    } else if let Some((path, reason)) = bad_copies.first().cloned() {
        // Nothing readable is left: the task fails as a definition error.
        let place = places
            .iter()
            .copied()
            .find(|p| p.dir(layout, batch_id).join(&file_name) == path)
            .unwrap_or(Place::Public(TaskDir::Failed));
        kept = Some((place, None));
        invalid = Some((path, reason));
        for (p, r) in bad_copies.into_iter().skip(1).filter(|_| mode.writes()) {
            crate::observe::quarantine(layout, logs, &p, &r);
        }
    }
    // Still moving: counted as running for now; the first rescan (seconds
    // away, well inside the claim grace) reads it where it has come to rest.
    let (place, task) = kept.unwrap_or((Place::Public(TaskDir::Processing), None));
    let job = job_read(layout, batch_id, &tn, file_name, place, task.as_ref());
    let back_off = task.as_ref().and_then(|t| t.not_before);
    let retry_at = back_off.filter(|_| job.status == JobStatus::Queued);
    Ok(Some(ReadJob {
        job,
        deps: task.map(|t| t.depends_on),
        invalid,
        retry_at,
        private_behind,
    }))
}

/// Whether a private copy sits behind the kept later copy, and if so whether that
/// copy needs its flush (see [`ReadJob::private_behind`]).
fn private_behind(kept: &Option<(Place, Option<TaskFile>)>, places: &[Place]) -> Option<bool> {
    let place = kept
        .as_ref()
        .map(|k| k.0)
        .filter(|p| *p != Place::Private)?;
    let result =
        crate::observe::rank(place) >= crate::observe::rank(Place::Public(TaskDir::Failed));
    places.contains(&Place::Private).then_some(!result)
}

/// The job of a task read at `place` (`task`: its file, when it could be read).
fn job_read(
    layout: &Layout,
    batch_id: &str,
    tn: &TaskName,
    file_name: String,
    place: Place,
    task: Option<&TaskFile>,
) -> Job {
    let status = match (task, place) {
        (Some(t), p) => status_at(p, t),
        (None, Place::Public(TaskDir::Complete)) => JobStatus::Complete,
        (None, Place::Public(TaskDir::Processing)) => JobStatus::Processing,
        // Unreadable: rejected once the batch is in the state, as a definition error.
        (None, _) => JobStatus::Failed(crate::state::FailureInfo {
            kind: rigmind_queue::FailureKind::DefinitionError,
            retry_count: 0,
            retries: 0,
            tier: None,
            tier_failures: 0,
        }),
    };
    let path = place.dir(layout, batch_id).join(&file_name);
    let holder = match (task, status) {
        (Some(t), JobStatus::Processing) => Some(holder_of(t, &path)),
        (None, JobStatus::Processing) => Some(crate::state::Holder {
            worker: None,
            session: None,
            pgid: None,
            since: chrono::Utc::now(),
        }),
        _ => None,
    };
    let name = task.map_or_else(|| tn.name.clone(), |t| t.name.clone());
    Job {
        plan_task_id: task.map_or_else(|| plan_task_of(&name), |t| t.plan_task_id.clone()),
        name,
        task_id: task.map(|t| t.task_id.clone()).unwrap_or_default(),
        file_name,
        status,
        deps: Vec::new(),
        dependents: Vec::new(),
        unmet: 0,
        holder,
        kill_sent: false,
        retry_count: task.map_or(0, |t| t.retry_count),
        work: task.map(JobWork::of).unwrap_or_default(),
    }
}

/// Where a file that vanished during the rebuild has gone, read there.
fn relocate(layout: &Layout, batch: &str, file_name: &str) -> Option<(Place, Option<TaskFile>)> {
    // Listed in a public directory, so past pending: a private copy beside it is a
    // release's, kept until its flush, and the task is still moving.
    let place =
        crate::observe::locate(layout, batch, file_name).filter(|p| *p != Place::Private)?;
    if place == Place::Public(TaskDir::Complete) {
        return Some((place, None));
    }
    let t = TaskFile::read(&place.dir(layout, batch).join(file_name)).ok()?;
    Some((place, Some(t)))
}

/// `transcribe[ep1]` → `transcribe`.
fn plan_task_of(name: &str) -> String {
    name.split('[').next().unwrap_or(name).to_string()
}

fn resolve_dependencies(jobs: &mut [Job], pending: Vec<(usize, Vec<String>)>) {
    let by_name: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut by_plan_task: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        by_plan_task
            .entry(j.plan_task_id.as_str())
            .or_default()
            .push(i);
    }
    let resolved: Vec<(usize, Vec<usize>)> = pending
        .into_iter()
        .map(|(i, names)| {
            let mut deps: Vec<usize> = names
                .iter()
                .flat_map(|n| match by_name.get(n.as_str()) {
                    Some(&d) => vec![d],
                    None => by_plan_task.get(n.as_str()).cloned().unwrap_or_default(),
                })
                .collect();
            deps.sort_unstable();
            deps.dedup();
            (i, deps)
        })
        .collect();
    for (i, deps) in resolved {
        jobs[i].deps = deps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = "ab12cd";
    const FILE: &str = "p05-00000001-ab12cd-work.json";

    fn root() -> (tempfile::TempDir, Layout, Logs) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure().unwrap();
        std::fs::create_dir_all(layout.private_dir(BATCH)).unwrap();
        let logs = Logs::new(&layout);
        (dir, layout, logs)
    }

    /// Reads the job listed at `listed` and beside a private copy, as a starting
    /// brain does, then finishes the flushes that read found due.
    fn read_then_finish(layout: &Layout, logs: &Logs, listed: Place) -> (JobStatus, Option<bool>) {
        let places = vec![Place::Private, listed];
        let read = read_job(layout, logs, BATCH, FILE.into(), places, Mode::Start)
            .unwrap()
            .unwrap();
        let behind = read.private_behind;
        finish_release_flushes(layout, logs, BATCH, due(behind)).unwrap();
        (read.job.status, behind)
    }

    /// What `rebuild_batch` hands on for one job read.
    fn due(behind: Option<bool>) -> Vec<(String, bool)> {
        behind.map(|f| (FILE.to_string(), f)).into_iter().collect()
    }

    #[test]
    fn a_release_that_finished_while_the_rebuild_read_it_loses_its_private_copy() {
        let (_dir, layout, logs) = root();
        // Listed in processing/ (and its private copy, kept until the release's
        // flush), then filed into complete/ before the rebuild read it.
        std::fs::write(layout.dir(TaskDir::Complete).join(FILE), b"{}").unwrap();
        let private = layout.private_dir(BATCH).join(FILE);
        std::fs::write(&private, b"{}").unwrap();
        let (status, stale) = read_then_finish(&layout, &logs, Place::Public(TaskDir::Processing));
        assert_eq!(status, JobStatus::Complete);
        // A result is its runner's to flush: only the private copy goes.
        assert_eq!(stale, Some(false));
        assert!(!private.exists());
    }

    #[test]
    fn a_private_copy_beside_a_queue_copy_goes_once_the_queue_copy_is_flushed() {
        let (_dir, layout, logs) = root();
        let (queued, private) = released(&layout);
        let (status, stale) = read_then_finish(&layout, &logs, Place::Public(TaskDir::Queue));
        assert_eq!(status, JobStatus::Queued);
        assert_eq!(stale, Some(true));
        assert!(!private.exists());
        assert!(queued.exists());
    }

    #[test]
    fn a_release_claimed_between_the_read_and_the_flush_keeps_its_claimed_copy() {
        // (That it is flushed in processing/ cannot be seen from here: this runs
        // the path and checks what is left.)
        let (_dir, layout, logs) = root();
        let (queued, private) = released(&layout);
        let places = vec![Place::Private, Place::Public(TaskDir::Queue)];
        let read = read_job(&layout, &logs, BATCH, FILE.into(), places, Mode::Start)
            .unwrap()
            .unwrap();
        // A worker claims it (a bare rename) before the flush.
        let claimed = layout.dir(TaskDir::Processing).join(FILE);
        std::fs::rename(&queued, &claimed).unwrap();
        finish_release_flushes(&layout, &logs, BATCH, due(read.private_behind)).unwrap();
        assert!(!private.exists());
        assert!(TaskFile::read(&claimed).is_ok());
    }

    /// A released task as the last brain left it: its queue copy (let in) and its
    /// private copy (as submitted); their paths.
    fn released(layout: &Layout) -> (PathBuf, PathBuf) {
        let mut task = TaskFile::new(BATCH, "work", rigmind_types::TaskClass::Cpu);
        let private = layout.private_dir(BATCH).join(FILE);
        std::fs::write(&private, task.to_bytes()).unwrap();
        task.status = rigmind_queue::task::TaskStatus::Queued;
        task.let_in();
        let queued = layout.dir(TaskDir::Queue).join(FILE);
        std::fs::write(&queued, task.to_bytes()).unwrap();
        (queued, private)
    }

    #[test]
    fn read_only_keeps_every_copy() {
        let (_dir, layout, logs) = root();
        std::fs::write(layout.dir(TaskDir::Complete).join(FILE), b"{}").unwrap();
        std::fs::write(layout.private_dir(BATCH).join(FILE), b"{}").unwrap();
        let places = vec![Place::Private, Place::Public(TaskDir::Complete)];
        let read = read_job(&layout, &logs, BATCH, FILE.into(), places, Mode::ReadOnly)
            .unwrap()
            .unwrap();
        assert_eq!(read.private_behind, None);
        assert!(layout.private_dir(BATCH).join(FILE).exists());
    }
}
