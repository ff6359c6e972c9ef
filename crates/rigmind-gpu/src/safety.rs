//! The safety-gate check: which of rig.toml's `[safety]` limits the machine breaks now.
//! A worker claims no heavy task while the list is not empty, and shows the reasons.

use rigmind_config::Safety;

use crate::{CpuTemp, GpuInfo, HostMemory};

/// The safety gates of rig.toml's `[safety]` that are violated now, as short human
/// reasons ("free RAM 1500 MB < min_free_ram_mb 2048", "swap 85% > max_swap_percent 80",
/// "GPU 1 at 86 C > max_gpu_temp_c 83", "CPU at 97 C > max_cpu_temp_c 90"). Empty: all
/// clear. Pure.
///
/// Limits are strict: sitting exactly at a limit is allowed. A GPU that does not report
/// its temperature (or no GPU, for a CPU worker), and a machine with no CPU sensor
/// (`cpu` None), pass the temperature gates: there is nothing to hold against them.
pub fn safety_violations(
    safety: &Safety,
    host: &HostMemory,
    gpu: Option<&GpuInfo>,
    cpu: Option<&CpuTemp>,
) -> Vec<String> {
    let mut out = Vec::new();
    if host.ram_available_mb < safety.min_free_ram_mb {
        out.push(format!(
            "free RAM {} MB < min_free_ram_mb {}",
            host.ram_available_mb, safety.min_free_ram_mb
        ));
    }
    let swap = host.swap_used_percent();
    if swap > safety.max_swap_percent {
        out.push(format!(
            "swap {}% > max_swap_percent {}",
            num(swap),
            num(safety.max_swap_percent)
        ));
    }
    if let Some((g, t)) = gpu.and_then(|g| Some((g, g.temperature_c?))) {
        if f64::from(t) > safety.max_gpu_temp_c {
            out.push(format!(
                "GPU {} at {t} C > max_gpu_temp_c {}",
                g.index,
                num(safety.max_gpu_temp_c)
            ));
        }
    }
    if let Some(c) = cpu.filter(|c| c.celsius > safety.max_cpu_temp_c) {
        out.push(format!(
            "CPU at {} C > max_cpu_temp_c {}",
            num(c.celsius),
            num(safety.max_cpu_temp_c)
        ));
    }
    out
}

/// A number as a person writes it: "80", "80.5", "83.25" (at most two decimals, so an
/// 80.4% swap does not print as "80% > 80").
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rig.toml's `[safety]` defaults (the tests' numbers are theirs).
    fn safety() -> Safety {
        rigmind_config::RigConfig::default().safety
    }

    fn host(avail: u64, swap_used: u64) -> HostMemory {
        HostMemory {
            ram_total_mb: 16000,
            ram_available_mb: avail,
            swap_total_mb: 1000,
            swap_used_mb: swap_used,
        }
    }

    fn gpu(temp: Option<u32>) -> GpuInfo {
        GpuInfo {
            index: 1,
            uuid: "GPU-00000000-fake-4000-8000-000000000001".into(),
            name: "rigmind fake GPU".into(),
            memory_total_mb: 6144,
            memory_used_mb: 0,
            memory_free_mb: 6144,
            utilization_percent: Some(0),
            temperature_c: temp,
            power_watts: None,
        }
    }

    #[test]
    fn all_clear() {
        let v = safety_violations(&safety(), &host(8000, 100), Some(&gpu(Some(60))), None);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn exactly_at_the_limits_is_clear() {
        let v = safety_violations(&safety(), &host(2048, 800), Some(&gpu(Some(83))), None);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn low_ram() {
        let v = safety_violations(&safety(), &host(1500, 0), None, None);
        assert_eq!(v, ["free RAM 1500 MB < min_free_ram_mb 2048"]);
    }

    #[test]
    fn high_swap() {
        let v = safety_violations(&safety(), &host(8000, 850), None, None);
        assert_eq!(v, ["swap 85% > max_swap_percent 80"]);
        let v = safety_violations(&safety(), &host(8000, 804), None, None);
        assert_eq!(v, ["swap 80.4% > max_swap_percent 80"]);
    }

    #[test]
    fn no_swap_never_trips_the_swap_gate() {
        let h = HostMemory {
            swap_total_mb: 0,
            swap_used_mb: 0,
            ..host(8000, 0)
        };
        let strict = Safety {
            max_swap_percent: 0.0,
            ..safety()
        };
        assert!(safety_violations(&strict, &h, None, None).is_empty());
    }

    #[test]
    fn hot_gpu() {
        let v = safety_violations(&safety(), &host(8000, 0), Some(&gpu(Some(86))), None);
        assert_eq!(v, ["GPU 1 at 86 C > max_gpu_temp_c 83"]);
    }

    #[test]
    fn gpu_none_or_without_temperature_passes_the_temp_gate() {
        assert!(safety_violations(&safety(), &host(8000, 0), None, None).is_empty());
        assert!(safety_violations(&safety(), &host(8000, 0), Some(&gpu(None)), None).is_empty());
    }

    #[test]
    fn every_gate_at_once_in_order() {
        let v = safety_violations(&safety(), &host(100, 900), Some(&gpu(Some(90))), None);
        assert_eq!(
            v,
            [
                "free RAM 100 MB < min_free_ram_mb 2048",
                "swap 90% > max_swap_percent 80",
                "GPU 1 at 90 C > max_gpu_temp_c 83",
            ]
        );
    }

    #[test]
    fn hot_cpu_and_no_cpu_sensor() {
        let cpu = |c: f64| CpuTemp {
            celsius: c,
            sensor: "coretemp Package id 0".into(),
        };
        let v = safety_violations(&safety(), &host(8000, 0), None, Some(&cpu(97.0)));
        assert_eq!(v, ["CPU at 97 C > max_cpu_temp_c 90"]);
        let v = safety_violations(&safety(), &host(8000, 0), None, Some(&cpu(90.0)));
        assert!(v.is_empty(), "{v:?}");
        assert!(safety_violations(&safety(), &host(8000, 0), None, None).is_empty());
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(num(80.0), "80");
        assert_eq!(num(80.5), "80.5");
        assert_eq!(num(83.25), "83.25");
        assert_eq!(num(0.0), "0");
    }
}
