//! Host memory readings from `/proc/meminfo`: what the RAM and swap gates of
//! `[safety]` are checked against. The [`HostMemory`] record itself is plain data of
//! `rigmind-types`.

use std::path::Path;

use crate::{GpuError, HostMemory};

/// Reads `/proc/meminfo` (or the file `RIGMIND_MEMINFO` names) now.
pub fn read_host_memory() -> Result<HostMemory, GpuError> {
    read_host_memory_from(&rigmind_types::meminfo_path())
}

/// Reads a file in `/proc/meminfo` form.
pub fn read_host_memory_from(path: &Path) -> Result<HostMemory, GpuError> {
    let text = std::fs::read_to_string(path).map_err(|source| GpuError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_meminfo(&text)
}

/// Parses `/proc/meminfo` text; MemTotal, MemAvailable (Linux >= 3.14), SwapTotal and
/// SwapFree must all be there.
pub fn parse_meminfo(text: &str) -> Result<HostMemory, GpuError> {
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
        let m = parse_meminfo(SAMPLE).unwrap();
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
        let err = parse_meminfo(&text).unwrap_err();
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
        let err = parse_meminfo(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("SwapFree") && msg.contains("lots"), "{msg}");
    }

    #[test]
    fn field_prefix_does_not_match_longer_names() {
        // "SwapTotal" must not be read off a "SwapTotalX:" line.
        let text = format!("SwapTotalX: 5 kB\n{SAMPLE}");
        assert_eq!(parse_meminfo(&text).unwrap().swap_total_mb, 2047);
    }

    #[test]
    fn reads_this_machine_and_missing_file_names_path() {
        let m = read_host_memory().unwrap();
        assert!(m.ram_total_mb > 0 && m.ram_available_mb <= m.ram_total_mb);
        let err = read_host_memory_from(Path::new("/nonexistent/meminfo")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/meminfo"), "{err}");
    }
}
