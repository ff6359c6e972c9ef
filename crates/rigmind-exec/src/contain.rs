//! Every process a task starts ends with the task.
//!
//! A process group is not enough: `setsid cmd &` leaves it, and background children
//! of a command that exits 0 outlive it. Where the machine allows, each task runs
//! in a cgroup v2 of its own (`rigmind-task-<task id>`, created under the runner's
//! own cgroup), which nothing inside can leave; at the task's end the cgroup is
//! killed whole (`cgroup.kill`, which reaches child cgroups a task made and moved
//! into too), emptied and removed, child cgroups first. The runner records the
//! cgroup's path in the task's start record (`cgroup`), so that the brain kills
//! that very cgroup when the runner dies ([`kill_recorded_cgroup`]), wherever the
//! runner's own cgroup is. Elsewhere the fallback is the
//! environment marker every task carries (`RIGMIND_TASK_ID=<id>`): the processes
//! that hold it are signalled one by one ([`crate::group`] finds them).
//!
//! `RIGMIND_NO_CGROUP=1` forces the fallback (tests cover both ways).
//!
//! Memory caps (`memory.max`, crate::memwatch) need the memory controller in the
//! task cgroups, which cgroup v2 hands to the children of a cgroup only while that
//! cgroup holds no process itself. A runner that is alone in its cgroup (a systemd
//! unit with `Delegate=yes`, or a cgroup made for it) therefore moves itself into
//! a leaf beside its tasks' cgroups (`rigmind-runner-<pid>`) and turns the memory
//! controller on for the children ([`delegate_memory`]); elsewhere nothing moves
//! and caps are enforced by polling.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Prefix of the per-task cgroups' directory names.
const PREFIX: &str = "rigmind-task-";
/// How long the end of a task waits for its processes to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(5);
/// An empty task cgroup younger than this may belong to a live runner that has
/// just made it and whose command has not joined it yet (several workers start
/// together on a rig): stale clean-up leaves it alone.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// How this process contains the tasks it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// One cgroup per task under `parent` (the runner's own cgroup).
    Cgroup { parent: PathBuf },
    /// Processes found by their `RIGMIND_TASK_ID` marker; `why` cgroups are not used.
    Marker { why: String },
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mechanism::Cgroup { parent } => write!(
                f,
                "a cgroup per task under {} (killed whole at the task's end)",
                parent.display()
            ),
            Mechanism::Marker { why } => write!(
                f,
                "the RIGMIND_TASK_ID marker in each process's environment ({why})"
            ),
        }
    }
}

/// The mechanism of this process, decided once (see the module docs).
pub fn mechanism() -> &'static Mechanism {
    static M: OnceLock<Mechanism> = OnceLock::new();
    M.get_or_init(detect)
}

fn detect() -> Mechanism {
    if std::env::var_os("RIGMIND_NO_CGROUP").is_some_and(|v| !v.is_empty() && v != "0") {
        return Mechanism::Marker {
            why: "RIGMIND_NO_CGROUP is set".into(),
        };
    }
    match own_cgroup_dir().and_then(|dir| probe(&dir).map(|()| dir)) {
        Ok(parent) => {
            if let Err(why) = delegate_memory(&parent) {
                tracing::debug!(cgroup = %parent.display(), "memory controller not handed to task cgroups: {why}");
            }
            Mechanism::Cgroup { parent }
        }
        Err(why) => Mechanism::Marker { why },
    }
}

/// The cgroup2 mount of this process (from /proc/self/mountinfo): the root of the
/// hierarchy it shows, and where it is mounted.
fn cgroup2_mount() -> Result<(String, PathBuf), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    // Fields: id parent major:minor root mount-point options... - fstype source opts
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2").then(|| {
                let f: Vec<&str> = pre.split_whitespace().collect();
                (f.get(3).copied(), f.get(4).copied())
            })
        })
        .and_then(|(r, m)| Some((r?.to_string(), PathBuf::from(m?))))
        .ok_or_else(|| "no cgroup2 file system is mounted".to_string())
}

/// The directory of this process's cgroup v2: the cgroup2 mount joined with the
/// `0::/path` line of /proc/self/cgroup.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let (root, mount) = cgroup2_mount()?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup v2 path in /proc/self/cgroup")?;
    let rel = own.strip_prefix(root.trim_end_matches('/')).unwrap_or(own);
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Turns the memory controller on for the children of `parent` (this process's
/// cgroup) when it is available there, not on yet, and this process is the only
/// one in it: the process first moves into a leaf of its own under `parent`, as
/// cgroup v2 allows controllers for children only in a cgroup without processes.
fn delegate_memory(parent: &Path) -> Result<(), String> {
    let read = |f: &str| std::fs::read_to_string(parent.join(f)).unwrap_or_default();
    let has = |f: &str| read(f).split_whitespace().any(|c| c == "memory");
    if has("cgroup.subtree_control") {
        return Ok(());
    }
    if !has("cgroup.controllers") {
        return Err("the memory controller is not available in this cgroup".into());
    }
    let me = std::process::id().to_string();
    let procs = read("cgroup.procs");
    if procs.lines().any(|p| p.trim() != me) {
        return Err("other processes share this cgroup".into());
    }
    let leaf = parent.join(format!("rigmind-runner-{me}"));
    std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
    std::fs::write(leaf.join("cgroup.procs"), &me)
        .map_err(|e| format!("moving into {}: {e}", leaf.display()))?;
    std::fs::write(parent.join("cgroup.subtree_control"), "+memory")
        .map_err(|e| format!("{}/cgroup.subtree_control: {e}", parent.display()))
}

/// Whether a child cgroup can be made, joined (its `cgroup.procs` opened) and removed.
fn probe(parent: &Path) -> Result<(), String> {
    // Not under PREFIX: another runner's stale clean-up must not take it away.
    let dir = parent.join(format!("rigmind-probe-{}", std::process::id()));
    std::fs::create_dir(&dir)
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", parent.display()))?;
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"));
    let _ = std::fs::remove_dir(&dir);
    writable
        .map(|_| ())
        .map_err(|e| format!("cannot write {}/cgroup.procs: {e}", dir.display()))
}

/// Removes the empty `rigmind-task-*` cgroups (with the empty child cgroups a
/// task made in them) a killed runner left behind, once
/// they are older than [`STALE_AFTER`]: a younger one may be another live
/// runner's, made an instant ago for a command about to join it. One with
/// processes in it is left alone: it may belong to another live runner on this
/// machine (another root); the brain kills a dead runner's task processes by their
/// marker, and a later start removes the emptied cgroup. Returns how many were
/// removed.
pub fn remove_stale_cgroups() -> usize {
    let Mechanism::Cgroup { parent } = mechanism() else {
        return 0;
    };
    let Ok(rd) = std::fs::read_dir(parent) else {
        return 0;
    };
    let old = |e: &std::fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() >= STALE_AFTER)
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .filter(old)
        .filter(|e| !populated(&e.path()) && remove_tree(&e.path()).is_ok())
        .count()
}

/// The name of a task's cgroup: its id, with anything that is not safe in a
/// directory name (a hand-written id may hold `/` or `..`) replaced.
fn cgroup_name(task_id: &str) -> String {
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}{safe}")
}

/// The cgroup of task `task_id` under this process's parent cgroup, if any.
pub(crate) fn task_cgroup_dir(task_id: &str) -> Option<PathBuf> {
    match mechanism() {
        Mechanism::Cgroup { parent } => Some(parent.join(cgroup_name(task_id))),
        Mechanism::Marker { .. } => None,
    }
}

/// The processes of one running task, and how to end them.
pub(crate) struct Containment {
    task_id: String,
    /// The task's cgroup; `None`: the marker is used.
    cgroup: Option<PathBuf>,
    /// The task's cgroup directory, open until the command has started in it
    /// (`clone3` with `CLONE_INTO_CGROUP` takes it, [`crate::spawn`]).
    dir: Option<std::fs::File>,
}

impl Containment {
    /// Prepares the containment of task `task_id` by `how`. A cgroup that cannot be
    /// made falls back to the marker for this task, with a warning.
    pub(crate) fn new(task_id: &str, how: &Mechanism) -> Self {
        let mut c = Self {
            task_id: task_id.to_string(),
            cgroup: None,
            dir: None,
        };
        if let Mechanism::Cgroup { parent } = how {
            let dir = parent.join(cgroup_name(task_id));
            let made = made_afresh(&dir).and_then(|fresh| {
                // Only a cgroup made now is started into (see `made_afresh`).
                fresh
                    .then(|| {
                        std::fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_DIRECTORY)
                            .open(&dir)
                    })
                    .transpose()
            });
            match made {
                Ok(f) => {
                    c.cgroup = Some(dir);
                    c.dir = f;
                }
                Err(e) => tracing::warn!(
                    task_id,
                    "cannot set up cgroup {}: {e}; using the RIGMIND_TASK_ID marker",
                    dir.display()
                ),
            }
        }
        c
    }

    /// The task's cgroup directory, open, until the command has started.
    pub(crate) fn dir(&self) -> Option<&std::fs::File> {
        self.dir.as_ref()
    }

    /// Makes the command join the task's cgroup before it runs anything, where it
    /// cannot be started in it ([`crate::spawn`]): the child writes `0` to the
    /// cgroup's `cgroup.procs` between fork and exec (std then forks the runner).
    pub(crate) fn prepare(&self, cmd: &mut tokio::process::Command) -> std::io::Result<()> {
        let Some(dir) = &self.cgroup else {
            return Ok(());
        };
        let join = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        // SAFETY: the closure runs between fork and exec and only calls write(2)
        // on an fd opened before the fork; no allocation, no locks. The file is
        // closed with the command, after the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(join.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(())
    }

    /// The task's cgroup, when it has one: what the start record names.
    pub(crate) fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// Closes the cgroup's directory (the command has started).
    pub(crate) fn started(&mut self) {
        self.dir = None;
    }

    /// Sends `sig` to every process of the task (those that left its group, or
    /// moved into a child cgroup, too).
    pub(crate) fn signal(&self, sig: i32) {
        match &self.cgroup {
            Some(dir) => signal_pids(&subtree_pids(dir), sig),
            None => {
                crate::group::signal_task_processes(&self.task_id, sig);
            }
        }
    }

    /// Kills whatever of the task is left, waits (bounded) until it is gone and
    /// removes the cgroup. Called at every end of a task.
    pub(crate) async fn end(self) {
        match &self.cgroup {
            Some(dir) => end_cgroup(dir).await,
            None => {
                // A process in the middle of an exec shows an empty environment for
                // a moment, so a scan that finds nothing is proof only of those
                // that showed one: the rest are looked at again a moment later.
                // (Two full scans 10 ms apart cost every task 20 ms of sleep, and a
                // 2,000-task fan-out on two workers 16 × the time of `xargs`.)
                let id = &self.task_id;
                let deadline = tokio::time::Instant::now() + EMPTY_WAIT;
                loop {
                    let scan = crate::group::scan_task_processes(id, libc::SIGKILL);
                    if scan.found == 0 && scan.unsure.is_empty() {
                        break;
                    }
                    if tokio::time::Instant::now() > deadline {
                        tracing::warn!(task_id = %id, "processes of the task survive SIGKILL");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if scan.found == 0
                        && crate::group::recheck(id, &scan.unsure, libc::SIGKILL) == 0
                    {
                        break;
                    }
                }
            }
        }
    }
}

/// Makes the task's cgroup `dir`; true when it is new. One left by an earlier
/// attempt (its runner died; the brain killed it through `cgroup.kill`) is
/// removed and made again where it is empty: the kernel (6.x, `kill_seq`) compares
/// a `CLONE_INTO_CGROUP` child's cgroup's kill count with its parent's, so a
/// command started into a cgroup that was ever killed is killed at once. False:
/// it is still populated (an earlier attempt's processes dying), and the command
/// joins it by migration instead, as it always could.
fn made_afresh(dir: &Path) -> std::io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if remove_tree(dir).is_err() {
                return Ok(false);
            }
            std::fs::create_dir(dir).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

/// Kills a cgroup whole, waits until it is empty, removes it (child cgroups
/// first). `cgroup.kill` is written even when `cgroup.procs` is empty: the task's
/// processes may sit in a child cgroup it made, which that file does not list.
pub(crate) async fn end_cgroup(dir: &Path) {
    let deadline = tokio::time::Instant::now() + EMPTY_WAIT;
    let has_kill = dir.join("cgroup.kill").exists();
    loop {
        if has_kill {
            kill_cgroup(dir);
        } else {
            signal_pids(&subtree_pids(dir), libc::SIGKILL);
        }
        if !populated(dir) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let pids = subtree_pids(dir);
            tracing::warn!(cgroup = %dir.display(), "processes survive the cgroup's kill: {pids:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Err(e) = remove_tree(dir) {
        tracing::warn!(cgroup = %dir.display(), "cannot remove the task's cgroup: {e}");
    }
}

/// Kills the cgroup a task's start record names (`recorded`, written by its
/// runner, which may live in another cgroup than this process) with everything
/// below it; without a record, the cgroup this process would have made for
/// `task_id`. A recorded path is used only when it is a task cgroup of `task_id`
/// under the cgroup2 mount: a hand-edited record must not make the brain kill
/// some other cgroup of the machine. Returns how many processes were in it.
pub(crate) fn kill_recorded_cgroup(task_id: &str, recorded: Option<&Path>) -> usize {
    let dir = match recorded {
        Some(dir) => match check_task_cgroup(task_id, dir) {
            Ok(()) => dir.to_path_buf(),
            Err(why) => {
                tracing::warn!(task_id, cgroup = %dir.display(), "not killing the recorded cgroup: {why}");
                return 0;
            }
        },
        None => match task_cgroup_dir(task_id) {
            Some(dir) => dir,
            None => return 0,
        },
    };
    let pids = subtree_pids(&dir);
    if dir.join("cgroup.kill").exists() {
        kill_cgroup(&dir);
    } else {
        signal_pids(&pids, libc::SIGKILL);
    }
    pids.len()
}

/// Whether `dir` may be task `task_id`'s cgroup: named for it, under the cgroup2
/// mount, with no `.` or `..` in the path.
fn check_task_cgroup(task_id: &str, dir: &Path) -> Result<(), String> {
    use std::path::Component;
    if dir.file_name() != Some(std::ffi::OsStr::new(&cgroup_name(task_id))) {
        return Err(format!("not named {}", cgroup_name(task_id)));
    }
    let plain = dir
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !dir.is_absolute() || !plain {
        return Err("not a plain absolute path".into());
    }
    let (_, mount) = cgroup2_mount()?;
    if !dir.starts_with(&mount) || dir == mount {
        return Err(format!("not under the cgroup2 mount {}", mount.display()));
    }
    Ok(())
}

/// `cgroup.kill`: SIGKILL to every process of the cgroup and its descendants.
pub(crate) fn kill_cgroup(dir: &Path) {
    let w = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    match w {
        // Gone already: nothing left to kill.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(cgroup = %dir.display(), "cgroup.kill: {e}"),
        Ok(()) => {}
    }
}

/// Whether any process is left in the cgroup or below it (`populated` of
/// `cgroup.events`; where that cannot be read, whether its tree lists a process).
fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => events
            .lines()
            .find_map(|l| l.strip_prefix("populated "))
            .is_some_and(|v| v.trim() != "0"),
        Err(_) => !subtree_pids(dir).is_empty(),
    }
}

/// The processes in a cgroup (none when it is gone).
fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The child cgroups of a cgroup (its subdirectories).
fn child_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The processes in a cgroup and in every cgroup below it.
fn subtree_pids(dir: &Path) -> Vec<i32> {
    let mut pids = cgroup_pids(dir);
    for child in child_cgroups(dir) {
        pids.extend(subtree_pids(&child));
    }
    pids
}

/// Removes an empty cgroup and the cgroups below it, deepest first (a cgroup
/// with children cannot be removed). One already gone is no error.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for child in child_cgroups(dir) {
        remove_tree(&child)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Sends `sig` to each of `pids`.
fn signal_pids(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: kill(2) on a pid of the task's cgroup; no memory involved.
        unsafe { libc::kill(pid, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_are_safe_directory_names() {
        assert_eq!(cgroup_name("3f2a-99_x"), "rigmind-task-3f2a-99_x");
        assert_eq!(cgroup_name("../../etc"), "rigmind-task-______etc");
        assert_eq!(cgroup_name("a/b c"), "rigmind-task-a_b_c");
    }

    #[test]
    fn stale_clean_up_spares_a_fresh_empty_cgroup_another_runner_just_made() {
        let Mechanism::Cgroup { parent } = mechanism() else {
            rigmind_testkit::skip(
                "rigmind-exec contain::stale_clean_up_spares_a_fresh_empty_cgroup_another_runner_just_made",
                &format!("no cgroup here ({})", mechanism()),
            );
            return;
        };
        // As another worker's: made, its command not joined yet.
        let fresh = parent.join(cgroup_name(&format!("fresh-{}", std::process::id())));
        std::fs::create_dir(&fresh).unwrap();
        remove_stale_cgroups();
        let survived = fresh.is_dir();
        let _ = std::fs::remove_dir(&fresh);
        assert!(survived, "a fresh cgroup was removed as stale");
    }
}
