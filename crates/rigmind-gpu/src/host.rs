//! Host memory readings from `/proc/meminfo`: what the RAM and swap gates of
//! `[safety]` are checked against.

use std::path::Path;

use crate::GpuError;

const MEMINFO: &str = "/proc/meminfo";

/// Host RAM and swap, in MB (MiB).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl HostMemory {
    /// Reads `/proc/meminfo` now.
    pub fn read() -> Result<Self, GpuError> {
        Self::read_from(Path::new(MEMINFO))
    }

    /// Reads a file in `/proc/meminfo` form.
    pub fn read_from(path: &Path) -> Result<Self, GpuError> {
        let text = std::fs::read_to_string(path).map_err(|source| GpuError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses `/proc/meminfo` text; MemTotal, MemAvailable (Linux >= 3.14), SwapTotal and
    /// SwapFree must all be there.
    pub fn parse(text: &str) -> Result<Self, GpuError> {
        let kb = |field: &'static str| -> Result<u64, GpuError> {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .ok_or_else(|| GpuError::BadMeminfo {
                    field,
                    why: "missing".to_string(),
                })?;
            let number = value.trim().trim_end_matches("kB").trim_end();
            number.parse::<u64>().map_err(|_| GpuError::BadMeminfo {
                field,
                why: format!("{:?} is not a number of kB", value.trim()),
            })
        };
        let swap_total_kb = kb("SwapTotal")?;
        let swap_free_kb = kb("SwapFree")?;
        Ok(HostMemory {
            ram_total_mb: kb("MemTotal")? / 1024,
            ram_available_mb: kb("MemAvailable")? / 1024,
            swap_total_mb: swap_total_kb / 1024,
            // Subtract before rounding down, so used + free adds up to total.
            swap_used_mb: swap_total_kb.saturating_sub(swap_free_kb) / 1024,
        })
    }

    /// Swap in use as a percentage of swap size; 0 when there is no swap.
    pub fn swap_used_percent(&self) -> f64 {
        if self.swap_total_mb == 0 {
            return 0.0;
        }
        self.swap_used_mb as f64 * 100.0 / self.swap_total_mb as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a real 16 GB box (trimmed after the fields that matter).
    const SAMPLE: &str = "\
MemTotal:       16318252 kB
MemFree:          734820 kB
MemAvailable:    9123456 kB
Buffers:          402196 kB
Cached:          7841024 kB
SwapCached:        21052 kB
Active:          6710396 kB
Inactive:        7325640 kB
SwapTotal:       2097148 kB
SwapFree:        1048572 kB
Dirty:               520 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn parses_a_real_sample() {
        let m = HostMemory::parse(SAMPLE).unwrap();
        assert_eq!(
            m,
            HostMemory {
                ram_total_mb: 15935,
                ram_available_mb: 8909,
                swap_total_mb: 2047,
                swap_used_mb: 1024,
            }
        );
        assert!((m.swap_used_percent() - 1024.0 * 100.0 / 2047.0).abs() < 1e-9);
    }

    #[test]
    fn missing_field_is_named() {
        let text = SAMPLE.replace("MemAvailable:    9123456 kB\n", "");
        let err = HostMemory::parse(&text).unwrap_err();
        assert!(
            matches!(
                err,
                GpuError::BadMeminfo {
                    field: "MemAvailable",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("MemAvailable"));
        assert!(err.to_string().contains("/proc/meminfo"));
    }

    #[test]
    fn bad_number_is_named() {
        let text = SAMPLE.replace("SwapFree:        1048572 kB", "SwapFree: lots kB");
        let err = HostMemory::parse(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("SwapFree") && msg.contains("lots"), "{msg}");
    }

    #[test]
    fn field_prefix_does_not_match_longer_names() {
        // "SwapTotal" must not be read off a "SwapTotalX:" line.
        let text = format!("SwapTotalX: 5 kB\n{SAMPLE}");
        assert_eq!(HostMemory::parse(&text).unwrap().swap_total_mb, 2047);
    }

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

    #[test]
    fn reads_this_machine_and_missing_file_names_path() {
        let m = HostMemory::read().unwrap();
        assert!(m.ram_total_mb > 0 && m.ram_available_mb <= m.ram_total_mb);
        let err = HostMemory::read_from(Path::new("/nonexistent/meminfo")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/meminfo"), "{err}");
    }
}
