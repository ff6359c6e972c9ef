//! A task's memory while it runs: its cap and its peak (docs/safety.md, "Memory:
//! reservations and caps").
//!
//! Where the task's cgroup has the memory controller, the cap is the kernel's:
//! `memory.max` (with `memory.swap.max = 0`, so a task past its cap dies instead of
//! pushing the box into swap, and `memory.oom.group = 1`, so the whole task dies,
//! not one process of it), and an `oom_kill` in `memory.events` makes the result
//! `oom`; the peak is `memory.peak`. Elsewhere (no cgroup, cgroup v2 without the
//! memory controller, `RIGMIND_NO_CGROUP=1`) the runner polls the RSS of the
//! task's processes (its cgroup's, else its process group's) and kills the task
//! past the cap itself; the peak is the largest sum of their `VmHWM` it saw, or
//! the command's `ru_maxrss`, whichever is larger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rigmind_queue::memory::{self, Rss};

const MB: u64 = 1024 * 1024;
/// How often the runner looks at a task whose cap it enforces itself.
const POLL_CAPPED: Duration = Duration::from_millis(100);
/// How often it looks at the others (for their peak only).
const POLL_PEAK: Duration = Duration::from_millis(250);
/// The second look, soon after the start (the first is at once,
/// [`MemWatch::started`]): short tasks have a peak too.
const SECOND_LOOK: Duration = Duration::from_millis(20);

/// How memory caps are enforced on this machine, for the worker's start line.
pub fn cap_mechanism() -> String {
    match crate::contain::mechanism() {
        crate::Mechanism::Cgroup { parent } if memory_controller(parent) => format!(
            "memory caps by the kernel (memory.max in each task's cgroup under {})",
            parent.display()
        ),
        crate::Mechanism::Cgroup { parent } => format!(
            "memory caps by polling the RSS of each task's processes (the cgroup {} does not hand the memory controller to its children)",
            parent.display()
        ),
        crate::Mechanism::Marker { why } => format!(
            "memory caps by polling the RSS of each task's process group (no cgroups: {why})"
        ),
    }
}

/// Whether the children of cgroup `dir` get the memory controller.
fn memory_controller(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.subtree_control"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
}

/// What the run's memory came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemReport {
    /// The cap it ran under, in MB.
    pub cap_mb: Option<u64>,
    /// Its peak, in MB (`None`: nothing could be read).
    pub peak_mb: Option<u64>,
    /// It went past its cap and was killed.
    pub oom: bool,
}

/// The memory of one running task.
pub(crate) struct MemWatch {
    /// The cap in bytes.
    cap: Option<u64>,
    /// The task's cgroup, if it has one.
    cgroup: Option<PathBuf>,
    /// The kernel enforces the cap (memory.max was written).
    kernel: bool,
    pgid: Option<i32>,
    /// The largest total seen, in bytes.
    peak: u64,
    /// The runner killed it past its cap.
    over: bool,
}

impl MemWatch {
    /// Sets the cap (`cap_mb`) on the task's `cgroup` before its command starts,
    /// where the kernel can enforce it.
    pub(crate) fn new(cap_mb: Option<u64>, cgroup: Option<&Path>) -> Self {
        let cap = cap_mb.map(|m| m.saturating_mul(MB));
        let kernel = match (cap, cgroup) {
            (Some(bytes), Some(dir)) => set_kernel_cap(dir, bytes),
            _ => false,
        };
        Self {
            cap,
            cgroup: cgroup.map(Path::to_path_buf),
            kernel,
            pgid: None,
            peak: 0,
            over: false,
        }
    }

    /// The command has started as process group `pgid`: the first look, at once
    /// (a task over before any later look has the peak of its command at its
    /// start; the kernel's or rusage's, where known, is larger).
    pub(crate) fn started(&mut self, pgid: Option<i32>) {
        self.pgid = pgid;
        self.over = self.look(true);
    }

    /// Watches the task until it is past a cap the runner enforces (then returns:
    /// the caller kills it); keeps the peak meanwhile. Never returns otherwise.
    pub(crate) async fn until_over(&mut self) {
        if self.over {
            return;
        }
        tokio::time::sleep(SECOND_LOOK).await;
        let every = if self.cap.is_some() && !self.kernel {
            POLL_CAPPED
        } else {
            POLL_PEAK
        };
        loop {
            if self.look(false) {
                self.over = true;
                return;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One look: notes the peak; true when past a cap the runner enforces. The
    /// `first`, at the start, looks at the command alone where finding its process
    /// group would mean reading every process of the machine.
    fn look(&mut self, first: bool) -> bool {
        if let Some(peak) = self.cgroup.as_deref().and_then(kernel_peak) {
            self.peak = self.peak.max(peak);
            return false;
        }
        let pids = match (&self.cgroup, self.pgid) {
            (Some(dir), _) => memory::subtree_pids(dir),
            (None, Some(g)) if first => vec![g],
            (None, Some(g)) => memory::group_pids(g),
            (None, None) => Vec::new(),
        };
        self.peak = self.peak.max(memory::rss_bytes(&pids, Rss::Peak));
        let now = memory::rss_bytes(&pids, Rss::Now);
        !self.kernel && self.cap.is_some_and(|cap| now > cap)
    }

    /// What the run came to, read before the task's cgroup is removed;
    /// `max_rss`: the command's own `ru_maxrss`, where it is known.
    pub(crate) fn finish(mut self, max_rss: Option<u64>) -> MemReport {
        let killed_by_kernel = self
            .cgroup
            .as_deref()
            .is_some_and(|dir| self.kernel && oom_kills(dir) > 0);
        if let Some(p) = self.cgroup.as_deref().and_then(kernel_peak) {
            self.peak = self.peak.max(p);
        }
        let peak = self.peak.max(max_rss.unwrap_or(0));
        MemReport {
            cap_mb: self.cap.map(|c| c / MB),
            peak_mb: (peak > 0).then(|| peak.div_ceil(MB)),
            oom: self.over || killed_by_kernel,
        }
    }
}

/// Writes the cap into the cgroup: true when `memory.max` took it.
fn set_kernel_cap(dir: &Path, bytes: u64) -> bool {
    let max = dir.join("memory.max");
    if !max.exists() {
        return false;
    }
    if let Err(e) = std::fs::write(&max, bytes.to_string()) {
        tracing::warn!(cgroup = %dir.display(), "memory.max: {e}; the runner polls the task's memory instead");
        return false;
    }
    // No swap: past its cap the task dies rather than pushing the box into swap.
    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    // The whole task, not one process of it.
    let _ = std::fs::write(dir.join("memory.oom.group"), "1");
    true
}

/// The cgroup's `memory.peak` (kernel 5.19 and later).
fn kernel_peak(dir: &Path) -> Option<u64> {
    memory::read_u64(&dir.join("memory.peak"))
}

/// How many processes the kernel killed in the cgroup for its memory cap
/// (`oom_kill` of `memory.events`).
fn oom_kills(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("memory.events"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
