//! The CPU's temperature, read from the kernel: the hottest CPU package or core
//! sensor, which `[safety] max_cpu_temp_c` is checked against.
//!
//! Which sensors count (docs/safety.md, "CPU temperature"):
//! - hwmon devices (`/sys/class/hwmon/hwmon*`) whose `name` is a CPU driver:
//!   `coretemp` (Intel: "Package id N", "Core N"), `k10temp` and `zenpower` (AMD:
//!   "Tctl", "Tdie", "Tccd N"; "Tctl" is left out when "Tdie" is there, as on the
//!   Threadrippers whose Tctl carries a fixed offset), `cpu_thermal` (ARM boards);
//!   every `temp*_input` of those;
//! - thermal zones (`/sys/class/thermal/thermal_zone*`) of type `x86_pkg_temp` or
//!   a type naming the CPU (`cpu-thermal`, `cpu0-thermal`, ...);
//! - `acpitz` zones only when none of the above is there (the ACPI zone is often
//!   the motherboard, not the CPU, but it is better than nothing).
//!
//! Unreadable sensors and absurd values (below -40 C or above 200 C) are skipped. No
//! sensor at all: `None`, and the gate passes. `RIGMIND_SYS_ROOT` names a directory
//! read in place of `/sys` (tests build a fake tree there).

use std::path::{Path, PathBuf};

use crate::CpuTemp;

/// The environment variable naming a directory read in place of `/sys`.
pub const SYS_ROOT_ENV: &str = "RIGMIND_SYS_ROOT";

/// hwmon drivers whose sensors are the CPU's.
const CPU_HWMON: &[&str] = &["coretemp", "k10temp", "zenpower", "cpu_thermal"];

/// The hottest CPU sensor now, from `/sys` (or `RIGMIND_SYS_ROOT`); `None` when the
/// machine has no CPU sensor this module knows.
pub fn read_cpu_temp() -> Option<CpuTemp> {
    let sys = std::env::var_os(SYS_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/sys"), PathBuf::from);
    read_cpu_temp_from(&sys)
}

/// [`read_cpu_temp`] from a `/sys`-shaped tree at `sys`.
pub fn read_cpu_temp_from(sys: &Path) -> Option<CpuTemp> {
    let mut found = hwmon_sensors(&sys.join("class/hwmon"));
    let zones = zone_sensors(&sys.join("class/thermal"));
    let (acpi, cpu): (Vec<_>, Vec<_>) = zones.into_iter().partition(|(_, is_acpi)| *is_acpi);
    found.extend(cpu.into_iter().map(|(t, _)| t));
    if found.is_empty() {
        found.extend(acpi.into_iter().map(|(t, _)| t));
    }
    found
        .into_iter()
        .max_by(|a, b| a.celsius.total_cmp(&b.celsius))
}

/// The sorted entries of `dir` whose names start with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A millidegree reading, in degrees; `None` when unreadable or absurd.
fn millidegrees(path: &Path) -> Option<f64> {
    let c = read_trimmed(path)?.parse::<i64>().ok()? as f64 / 1000.0;
    (-40.0..=200.0).contains(&c).then_some(c)
}

/// Every sensor of the CPU hwmon devices under `dir`.
fn hwmon_sensors(dir: &Path) -> Vec<CpuTemp> {
    let mut out = Vec::new();
    for dev in entries(dir, "hwmon") {
        let Some(name) = read_trimmed(&dev.join("name")) else {
            continue;
        };
        if !CPU_HWMON.contains(&name.as_str()) {
            continue;
        }
        let mut sensors = Vec::new();
        for input in entries(&dev, "temp") {
            let file = input.file_name().unwrap_or_default().to_string_lossy();
            let Some(stem) = file.strip_suffix("_input") else {
                continue;
            };
            let Some(c) = millidegrees(&input) else {
                continue;
            };
            let label =
                read_trimmed(&dev.join(format!("{stem}_label"))).unwrap_or(stem.to_string());
            sensors.push((label, c));
        }
        let has_tdie = sensors.iter().any(|(l, _)| l == "Tdie");
        out.extend(
            sensors
                .into_iter()
                .filter(|(l, _)| !(has_tdie && l == "Tctl"))
                .map(|(label, celsius)| CpuTemp {
                    celsius,
                    sensor: format!("{name} {label}"),
                }),
        );
    }
    out
}

/// The CPU thermal zones under `dir`, each with whether it is an `acpitz` zone.
fn zone_sensors(dir: &Path) -> Vec<(CpuTemp, bool)> {
    let mut out = Vec::new();
    for zone in entries(dir, "thermal_zone") {
        let Some(kind) = read_trimmed(&zone.join("type")) else {
            continue;
        };
        let acpi = kind == "acpitz";
        let cpu = kind == "x86_pkg_temp" || kind.to_ascii_lowercase().contains("cpu");
        if !(acpi || cpu) {
            continue;
        }
        let Some(celsius) = millidegrees(&zone.join("temp")) else {
            continue;
        };
        let zone_name = zone.file_name().unwrap_or_default().to_string_lossy();
        let sensor = format!("{zone_name} {kind}");
        out.push((CpuTemp { celsius, sensor }, acpi));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn no_tree_is_no_sensor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cpu_temp_from(dir.path()), None);
    }

    #[test]
    fn coretemp_hottest_core_wins_and_other_drivers_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(r, "class/hwmon/hwmon0/name", "nvme\n");
        put(r, "class/hwmon/hwmon0/temp1_input", "120000\n");
        put(r, "class/hwmon/hwmon1/name", "coretemp\n");
        put(r, "class/hwmon/hwmon1/temp1_label", "Package id 0\n");
        put(r, "class/hwmon/hwmon1/temp1_input", "97000\n");
        put(r, "class/hwmon/hwmon1/temp2_label", "Core 0\n");
        put(r, "class/hwmon/hwmon1/temp2_input", "99500\n");
        put(r, "class/hwmon/hwmon1/temp3_input", "garbage\n");
        put(r, "class/thermal/thermal_zone0/type", "acpitz\n");
        put(r, "class/thermal/thermal_zone0/temp", "150000\n");
        let t = read_cpu_temp_from(r).unwrap();
        assert_eq!(t.celsius, 99.5);
        assert_eq!(t.sensor, "coretemp Core 0");
    }

    #[test]
    fn k10temp_tctl_is_left_out_when_tdie_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(r, "class/hwmon/hwmon3/name", "k10temp\n");
        put(r, "class/hwmon/hwmon3/temp1_label", "Tctl\n");
        put(r, "class/hwmon/hwmon3/temp1_input", "87000\n");
        put(r, "class/hwmon/hwmon3/temp2_label", "Tdie\n");
        put(r, "class/hwmon/hwmon3/temp2_input", "60000\n");
        let t = read_cpu_temp_from(r).unwrap();
        assert_eq!((t.celsius, t.sensor.as_str()), (60.0, "k10temp Tdie"));
        std::fs::remove_file(r.join("class/hwmon/hwmon3/temp2_input")).unwrap();
        let t = read_cpu_temp_from(r).unwrap();
        assert_eq!((t.celsius, t.sensor.as_str()), (87.0, "k10temp Tctl"));
    }

    #[test]
    fn thermal_zones_count_and_acpitz_only_as_a_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(r, "class/thermal/thermal_zone0/type", "acpitz\n");
        put(r, "class/thermal/thermal_zone0/temp", "45000\n");
        put(r, "class/thermal/thermal_zone1/type", "iwlwifi_1\n");
        put(r, "class/thermal/thermal_zone1/temp", "99000\n");
        let t = read_cpu_temp_from(r).unwrap();
        assert_eq!(
            (t.celsius, t.sensor.as_str()),
            (45.0, "thermal_zone0 acpitz")
        );
        put(r, "class/thermal/thermal_zone2/type", "x86_pkg_temp\n");
        put(r, "class/thermal/thermal_zone2/temp", "41000\n");
        let t = read_cpu_temp_from(r).unwrap();
        assert_eq!(
            (t.celsius, t.sensor.as_str()),
            (41.0, "thermal_zone2 x86_pkg_temp")
        );
    }
}
