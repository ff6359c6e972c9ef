//! A brain starting on an existing root rebuilds every batch from the files alone.

use std::collections::{BTreeMap, HashMap};

use rigmind_queue::batch::BatchRecord;
use rigmind_queue::fsio;
use rigmind_queue::logs::{Decision, Logs};
use rigmind_queue::task::{TaskFile, TaskName};
use rigmind_queue::{Layout, QueueError, TaskDir};
use std::path::PathBuf;

use crate::observe::{holder_of, status_at, Place};
use crate::state::{Batch, BrainState, Job, JobStatus, JobWork};

/// Reads every batch record and task file under the root into a [`BrainState`].
///
/// A task found in two places (a crash between a write and a removal) keeps its
/// latest state and the stale copy is removed, with a decision logged. Dependencies
/// are resolved from the `depends_on` names of pending tasks: a name is a task of the
/// batch, or a plan task whose items it waits for all of.
pub fn rebuild(layout: &Layout, logs: &Logs) -> Result<BrainState, QueueError> {
    let mut state = BrainState::default();
    // Every public file, grouped by batch: file name -> places.
    let mut public: HashMap<String, BTreeMap<String, Vec<TaskDir>>> = HashMap::new();
    for d in TaskDir::ALL {
        for name in fsio::list_names(&layout.dir(d))? {
            if let Some(tn) = TaskName::parse(&name).filter(|t| !crate::run::is_request(&t.name)) {
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
            Err(e) => {
                logs.decision(&Decision::new("skip_batch").kv("reason", e))?;
                continue;
            }
        };
        let batch_id = record.batch_id.clone();
        // A submission that stopped while queueing its ready tasks: finish it.
        if let Some(ready) = crate::submit::read_manifest(layout, &batch_id) {
            let known = public.get(&batch_id);
            crate::submit::queue_manifest(layout, logs, &batch_id, &ready, |name| {
                known.is_some_and(|k| k.contains_key(name))
            })?;
            for t in &ready {
                public
                    .entry(batch_id.clone())
                    .or_default()
                    .entry(t.file_name())
                    .or_insert_with(|| vec![TaskDir::Queue]);
            }
        }
        let mut files: BTreeMap<String, Vec<Place>> = BTreeMap::new();
        for name in fsio::list_names(&layout.private_dir(&batch_id))? {
            files.entry(name).or_default().push(Place::Private);
        }
        for (name, dirs) in public.remove(&batch_id).unwrap_or_default() {
            let places = files.entry(name).or_default();
            places.extend(dirs.into_iter().map(Place::Public));
        }
        let mut jobs = Vec::with_capacity(files.len());
        let mut pending_deps: Vec<(usize, Vec<String>)> = Vec::new();
        let mut retry_at = Vec::new();
        let mut invalid: Vec<(PathBuf, String)> = Vec::new();
        for (file_name, mut places) in files {
            let Some(tn) = TaskName::parse(&file_name) else {
                continue;
            };
            // Latest first; the latest copy that reads as a task wins.
            places.sort_by_key(|p| std::cmp::Reverse(crate::observe::rank(*p)));
            let mut kept: Option<(Place, Option<TaskFile>)> = None;
            let mut bad_copies: Vec<(PathBuf, String)> = Vec::new();
            for place in &places {
                let path = place.dir(layout, &batch_id).join(&file_name);
                if kept.is_some() {
                    fsio::remove_if_exists(&path)?;
                    logs.decision(
                        &Decision::new("resolve_duplicate")
                            .kv("batch", &batch_id)
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
                // Completed tasks are known by their name alone.
                if *place == Place::Public(TaskDir::Complete) {
                    kept = Some((*place, None));
                    continue;
                }
                match TaskFile::read(&path) {
                    Ok(t) => kept = Some((*place, Some(t))),
                    // Judged below, once it is known whether a good copy exists.
                    Err(QueueError::Invalid { reason, .. }) => bad_copies.push((path, reason)),
                    // Moved on since the listing (a worker claimed it): look again.
                    Err(e) if e.is_not_found() => {
                        kept = relocate(layout, &batch_id, &file_name);
                        if kept.is_some() {
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let good_copy = matches!(
                kept,
                Some((_, Some(_))) | Some((Place::Public(TaskDir::Complete), _))
            );
            if good_copy {
                // A bad stale copy beside a good one: moved aside, the task goes on.
                for (path, reason) in bad_copies {
                    crate::observe::quarantine(layout, logs, &path, &reason);
                }
            } else if let Some((path, reason)) = bad_copies.first().cloned() {
                // Nothing readable is left: the task fails as a definition error.
                let place = places
                    .iter()
                    .copied()
                    .find(|p| p.dir(layout, &batch_id).join(&file_name) == path)
                    .unwrap_or(Place::Public(TaskDir::Failed));
                kept = Some((place, None));
                invalid.push((path, reason));
                for (p, r) in bad_copies.into_iter().skip(1) {
                    crate::observe::quarantine(layout, logs, &p, &r);
                }
            }
            // Still moving: counted as running for now; the first rescan (seconds
            // away, well inside the claim grace) reads it where it has come to rest.
            let (place, task) = kept.unwrap_or((Place::Public(TaskDir::Processing), None));
            let status = match (&task, place) {
                (Some(t), p) => status_at(p, t),
                (None, Place::Public(TaskDir::Complete)) => JobStatus::Complete,
                (None, Place::Public(TaskDir::Processing)) => JobStatus::Processing,
                // Unreadable: rejected just below, as a definition error.
                (None, _) => JobStatus::Failed(crate::state::FailureInfo {
                    kind: rigmind_queue::FailureKind::DefinitionError,
                    retry_count: 0,
                    retries: 0,
                }),
            };
            let path = place.dir(layout, &batch_id).join(&file_name);
            let holder = match (&task, status) {
                (Some(t), JobStatus::Processing) => Some(holder_of(t, &path)),
                (None, JobStatus::Processing) => Some(crate::state::Holder {
                    worker: None,
                    session: None,
                    pgid: None,
                    since: chrono::Utc::now(),
                }),
                _ => None,
            };
            let plan_task_id = task
                .as_ref()
                .map(|t| t.plan_task_id.clone())
                .unwrap_or_else(|| plan_task_of(&tn.name));
            // Every job read gets its edges back: pending ones wait on them, failed
            // ones are revived through them, queued ones are held back by them.
            if let Some(t) = &task {
                pending_deps.push((jobs.len(), t.depends_on.clone()));
                let back_off = t
                    .not_before
                    .as_deref()
                    .and_then(rigmind_queue::time::parse_rfc3339);
                if let (JobStatus::Queued, Some(at)) = (status, back_off) {
                    retry_at.push((jobs.len(), at));
                }
            }
            jobs.push(Job {
                name: tn.name.clone(),
                plan_task_id,
                task_id: task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
                file_name,
                status,
                deps: Vec::new(),
                dependents: Vec::new(),
                unmet: 0,
                holder,
                kill_sent: false,
                work: task.as_ref().map(JobWork::of).unwrap_or_default(),
            });
        }
        resolve_dependencies(&mut jobs, pending_deps);
        let mut batch = Batch::new(record, jobs);
        batch.retry_at.extend(retry_at);
        batch.refresh_counts();
        state.insert(batch);
        for (path, reason) in invalid {
            crate::observe::reject(layout, logs, &mut state, &path, &reason);
        }
    }
    Ok(state)
}

/// Where a file that vanished during the rebuild has gone, read there.
fn relocate(layout: &Layout, batch: &str, file_name: &str) -> Option<(Place, Option<TaskFile>)> {
    let place = crate::observe::locate(layout, batch, file_name)?;
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
