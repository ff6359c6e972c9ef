//! What a task did on its worker's card while it ran: the most GPU memory its
//! processes held (`peak_vram_mb`) and the card's mean utilisation
//! (`gpu_util_mean`), sampled from NVML about once a second and written into its
//! result (queue-layout.md). Where the telemetry cannot tell (the fake, no NVML),
//! the fields stay absent.

use std::path::Path;
use std::sync::Arc;

use rigmind_gpu::Telemetry;
use rigmind_queue::memory::{group_pids, subtree_pids};
use rigmind_queue::task::TaskFile;

/// The samples of one task on one card.
pub struct GpuSample {
    telemetry: Arc<dyn Telemetry>,
    index: u32,
    peak_vram_mb: Option<u64>,
    util_sum: f64,
    util_n: u32,
}

impl GpuSample {
    /// A sampler of card `index` read through `telemetry`.
    pub fn new(telemetry: Arc<dyn Telemetry>, index: u32) -> Self {
        Self {
            telemetry,
            index,
            peak_vram_mb: None,
            util_sum: 0.0,
            util_n: 0,
        }
    }

    /// One sample, for the task whose start record is at `processing` (its
    /// cgroup or process group names its processes).
    pub fn sample(&mut self, processing: &Path) {
        if self.telemetry.kind() != "nvml" {
            return;
        }
        if let Some(u) = self
            .telemetry
            .read(self.index)
            .ok()
            .and_then(|i| i.utilization_percent)
        {
            self.util_sum += f64::from(u);
            self.util_n += 1;
        }
        let Ok(task) = TaskFile::read(processing) else {
            return;
        };
        let pids = match (&task.cgroup, task.pgid) {
            (Some(dir), _) if dir.is_dir() => subtree_pids(dir),
            (_, Some(g)) => group_pids(g),
            _ => return,
        };
        if let Some(procs) = self.telemetry.process_vram_mb(self.index) {
            let mine: u64 = procs
                .iter()
                .filter(|(pid, _)| pids.contains(&(*pid as i32)))
                .map(|(_, mb)| mb)
                .sum();
            self.peak_vram_mb = Some(self.peak_vram_mb.unwrap_or(0).max(mine));
        }
    }

    /// Writes the samples into the task's result.
    pub fn apply(&self, task: &mut TaskFile) {
        task.peak_vram_mb = self.peak_vram_mb;
        task.gpu_util_mean = (self.util_n > 0)
            .then(|| (self.util_sum / f64::from(self.util_n) * 10.0).round() / 10.0);
    }
}
