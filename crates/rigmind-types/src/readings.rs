//! The readings a worker publishes in its state file: one GPU's identity and current
//! reading ([`GpuInfo`]) and the host's memory ([`HostMemory`]).
//!
//! They are plain data, here so that the queue (which writes and reads the worker
//! state files) needs no GPU library; `rigmind-gpu` takes the readings and re-exports
//! these types.

use serde::{Deserialize, Serialize};

/// One GPU's identity and current reading. Memory is in MiB (called MB throughout
/// rigmind, as nvidia-smi does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The NVML index (PCI bus order; see `rigmind-gpu`'s `nvml` module on why callers
    /// pin by UUID).
    pub index: u32,
    /// e.g. "GPU-5f2c...", exactly as `nvidia-smi -L` prints it.
    pub uuid: String,
    /// The product name, e.g. "NVIDIA GeForce RTX 3060".
    pub name: String,
    /// Total memory of the card.
    pub memory_total_mb: u64,
    /// Memory in use by all processes on the card.
    pub memory_used_mb: u64,
    /// Memory free on the card.
    pub memory_free_mb: u64,
    /// GPU (not memory) utilization over the driver's last sample period; None when
    /// the card does not report it.
    pub utilization_percent: Option<u32>,
    /// Core temperature; None when the card does not report it.
    pub temperature_c: Option<u32>,
    /// Power draw; None when the card does not report it.
    pub power_watts: Option<f64>,
}

/// Host RAM and swap, in MB (MiB).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostMemory {
    /// `MemTotal`.
    pub ram_total_mb: u64,
    /// `MemAvailable`: what new work can get without swapping (not `MemFree`, which
    /// leaves out reclaimable page cache and so reads low on any busy box).
    pub ram_available_mb: u64,
    /// `SwapTotal`.
    pub swap_total_mb: u64,
    /// `SwapTotal - SwapFree`.
    pub swap_used_mb: u64,
}

/// The hottest CPU sensor at one reading (`rigmind_gpu`'s thermal module says which
/// sensors count). No sensor at all is no value, not a zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuTemp {
    /// Degrees Celsius.
    pub celsius: f64,
    /// Which sensor it was, e.g. `coretemp Package id 0`, `k10temp Tctl`,
    /// `thermal_zone2 x86_pkg_temp`.
    pub sensor: String,
}

impl HostMemory {
    /// Swap in use as a percentage of swap size; 0 when there is no swap.
    pub fn swap_used_percent(&self) -> f64 {
        if self.swap_total_mb == 0 {
            return 0.0;
        }
        self.swap_used_mb as f64 * 100.0 / self.swap_total_mb as f64
    }
}

/// The environment variable naming a file read instead of `/proc/meminfo` (tests
/// fake a machine's RAM with it): the safety gates and the memory reservations
/// both read host memory from [`meminfo_path`].
pub const MEMINFO_ENV: &str = "RIGMIND_MEMINFO";

/// The file host memory is read from: `$RIGMIND_MEMINFO`, else `/proc/meminfo`.
pub fn meminfo_path() -> std::path::PathBuf {
    std::env::var_os(MEMINFO_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| "/proc/meminfo".into(), std::path::PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_swap_is_zero_percent() {
        let m = HostMemory {
            ram_total_mb: 1000,
            ram_available_mb: 500,
            swap_total_mb: 0,
            swap_used_mb: 0,
        };
        assert_eq!(m.swap_used_percent(), 0.0);
        let full = HostMemory {
            swap_total_mb: 400,
            swap_used_mb: 400,
            ..m
        };
        assert_eq!(full.swap_used_percent(), 100.0);
    }
}
