//! Fake GPUs for tests on machines without GPUs: `RIGMIND_FAKE_GPUS=COUNTxMB`.
//!
//! They must never pass for real ones: [`open`](crate::open) logs a loud warning, the
//! kind is "fake", the name is "rigmind fake GPU" and "fake" shows in every UUID.
//!
//! So that tests can drive the VRAM and temperature gates without hardware, readings
//! come from the directory named by `RIGMIND_FAKE_GPU_DIR`, read afresh at every
//! [`Telemetry::read`]:
//! - `<dir>/<i>/*.mb`: each holds one integer of MB "held" on GPU i (a test process
//!   drops one while it holds memory and removes it when done); used = their sum,
//!   clamped to the total.
//! - `<dir>/<i>/temp_c`: the temperature of GPU i (else 40).
//!
//! Utilization is always 0 and power None.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{GpuError, GpuInfo, GpuSelector, Telemetry};

/// The variable that turns the fake on, e.g. `2x6144`.
pub const FAKE_GPUS_ENV: &str = "RIGMIND_FAKE_GPUS";
/// The variable naming the directory the fake readings come from.
pub const FAKE_GPU_DIR_ENV: &str = "RIGMIND_FAKE_GPU_DIR";

const MAX_FAKE_GPUS: u32 = 64;
const DEFAULT_TEMP_C: u32 = 40;
const FAKE_NAME: &str = "rigmind fake GPU";

/// `COUNT` fake GPUs of `MB` each, with readings from an optional directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGpus {
    spec: String,
    count: u32,
    total_mb: u64,
    dir: Option<PathBuf>,
}

impl FakeGpus {
    /// Parses `COUNTxMB` (1..=64 GPUs, MB > 0); the reading directory comes from
    /// `RIGMIND_FAKE_GPU_DIR` (unset or empty: none).
    pub fn parse(spec: &str) -> Result<Self, GpuError> {
        let dir = std::env::var_os(FAKE_GPU_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        Self::with_dir(spec, dir)
    }

    /// Like [`FakeGpus::parse`] with the reading directory given, not taken from the
    /// environment (tests run in parallel and must not share env vars).
    pub fn with_dir(spec: &str, dir: Option<PathBuf>) -> Result<Self, GpuError> {
        let bad = |why: &str| GpuError::BadFakeSpec {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let t = spec.trim();
        let (count, mb) = t
            .split_once(['x', 'X'])
            .ok_or_else(|| bad("no 'x' between COUNT and MB"))?;
        let count: u32 = parse_digits(count).ok_or_else(|| bad("COUNT is not a number"))?;
        let total_mb: u64 = parse_digits(mb).ok_or_else(|| bad("MB is not a number"))?;
        if !(1..=MAX_FAKE_GPUS).contains(&count) {
            return Err(bad("COUNT must be 1..=64"));
        }
        if total_mb == 0 {
            return Err(bad("MB must be > 0"));
        }
        Ok(FakeGpus {
            spec: t.to_string(),
            count,
            total_mb,
            dir,
        })
    }

    /// The UUID of fake GPU `index`: deterministic, distinct, UUID-shaped, and with
    /// "fake" in plain sight.
    pub fn uuid_for(index: u32) -> String {
        format!("GPU-00000000-fake-4000-8000-{index:012}")
    }

    /// Memory of each fake GPU.
    pub fn memory_total_mb(&self) -> u64 {
        self.total_mb
    }

    /// The directory readings come from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The warning [`open`](crate::open) logs, so nobody mistakes a fake run for a
    /// real one.
    pub(crate) fn warn_loudly(&self) {
        let dir = match &self.dir {
            Some(d) => d.display().to_string(),
            None => format!("none ({FAKE_GPU_DIR_ENV} unset: used 0 MB, 40 C)"),
        };
        tracing::warn!(
            "GPUs are FAKE: {FAKE_GPUS_ENV}={} gives {} fake GPU(s) of {} MB each; NO REAL GPU \
             IS USED OR MEASURED. Fake readings from: {dir}",
            self.spec,
            self.count,
            self.total_mb
        );
    }

    fn no_such(&self, sel: &GpuSelector) -> GpuError {
        GpuError::NoSuchGpu {
            selector: sel.to_string(),
            count: self.count,
        }
    }

    /// Sum of the `*.mb` files of one GPU's directory; unreadable or garbage files are
    /// skipped (a holder may be writing or removing one right now).
    fn used_mb(&self, gpu_dir: &Path) -> Result<u64, GpuError> {
        let entries = match fs::read_dir(gpu_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(GpuError::Io {
                    path: gpu_dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut used: u64 = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension() != Some(OsStr::new("mb")) {
                continue;
            }
            match read_number(&path) {
                Some(mb) => used = used.saturating_add(mb),
                None => tracing::debug!("fake GPU: ignoring {} (not one integer)", path.display()),
            }
        }
        Ok(used)
    }

    fn temp_c(&self, gpu_dir: &Path) -> u32 {
        let path = gpu_dir.join("temp_c");
        if !path.exists() {
            return DEFAULT_TEMP_C;
        }
        match read_number(&path).and_then(|t| u32::try_from(t).ok()) {
            Some(t) => t,
            None => {
                tracing::debug!(
                    "fake GPU: ignoring {} (not one integer), using {DEFAULT_TEMP_C} C",
                    path.display()
                );
                DEFAULT_TEMP_C
            }
        }
    }
}

impl Telemetry for FakeGpus {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn count(&self) -> Result<u32, GpuError> {
        Ok(self.count)
    }

    fn read(&self, index: u32) -> Result<GpuInfo, GpuError> {
        if index >= self.count {
            return Err(self.no_such(&GpuSelector::Index(index)));
        }
        let (used, temp) = match &self.dir {
            Some(dir) => {
                let gpu_dir = dir.join(index.to_string());
                (self.used_mb(&gpu_dir)?, self.temp_c(&gpu_dir))
            }
            None => (0, DEFAULT_TEMP_C),
        };
        let used = used.min(self.total_mb);
        Ok(GpuInfo {
            index,
            uuid: Self::uuid_for(index),
            name: FAKE_NAME.to_string(),
            memory_total_mb: self.total_mb,
            memory_used_mb: used,
            memory_free_mb: self.total_mb - used,
            utilization_percent: Some(0),
            temperature_c: Some(temp),
            power_watts: None,
        })
    }

    fn find(&self, sel: &GpuSelector) -> Result<GpuInfo, GpuError> {
        match sel {
            GpuSelector::Index(i) => self.read(*i).map_err(|e| match e {
                GpuError::NoSuchGpu { .. } => self.no_such(sel),
                other => other,
            }),
            GpuSelector::Uuid(u) => match (0..self.count).find(|&i| Self::uuid_for(i) == *u) {
                Some(i) => self.read(i),
                None => Err(self.no_such(sel)),
            },
        }
    }
}

/// A string of ASCII digits only (no sign, no spaces inside) as a number.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A file holding one non-negative integer (surrounding whitespace allowed).
fn read_number(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    parse_digits(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(spec: &str, dir: Option<&Path>) -> FakeGpus {
        FakeGpus::with_dir(spec, dir.map(Path::to_path_buf)).unwrap()
    }

    #[test]
    fn parses_good_specs() {
        let f = fake("2x6144", None);
        assert_eq!(f.count().unwrap(), 2);
        assert_eq!(f.memory_total_mb(), 6144);
        assert_eq!(fake(" 64X1 ", None).count().unwrap(), 64);
        assert_eq!(fake("1x80000", None).memory_total_mb(), 80000);
    }

    #[test]
    fn rejects_bad_specs_naming_the_spec_and_form() {
        for bad in [
            "",
            "2",
            "x6144",
            "2x",
            "0x6144",
            "65x6144",
            "2x0",
            "-1x6144",
            "2x-5",
            "2.5x6144",
            "2x6144x1",
            "ax6144",
            "2 x 6144",
            "99999999999x1",
        ] {
            let err = FakeGpus::with_dir(bad, None).unwrap_err();
            assert!(
                matches!(&err, GpuError::BadFakeSpec { spec, .. } if spec == bad),
                "{bad:?} gave {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("COUNTxMB"), "{msg}");
        }
    }

    #[test]
    fn uuids_are_distinct_uuid_shaped_and_say_fake() {
        let a = FakeGpus::uuid_for(0);
        let b = FakeGpus::uuid_for(1);
        assert_ne!(a, b);
        assert_eq!(a, "GPU-00000000-fake-4000-8000-000000000000");
        let body = a.strip_prefix("GPU-").unwrap();
        let groups: Vec<usize> = body.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(a.parse::<GpuSelector>().is_ok());
    }

    #[test]
    fn without_dir_reads_idle_cool_cards() {
        let f = fake("2x6144", None);
        let g = f.read(1).unwrap();
        assert_eq!(g.index, 1);
        assert_eq!(g.uuid, FakeGpus::uuid_for(1));
        assert_eq!(g.name, "rigmind fake GPU");
        assert_eq!(
            (g.memory_total_mb, g.memory_used_mb, g.memory_free_mb),
            (6144, 0, 6144)
        );
        assert_eq!(g.temperature_c, Some(40));
        assert_eq!(g.utilization_percent, Some(0));
        assert_eq!(g.power_watts, None);
    }

    #[test]
    fn missing_gpu_subdir_reads_idle() {
        let tmp = tempfile::tempdir().unwrap();
        let g = fake("2x6144", Some(tmp.path())).read(0).unwrap();
        assert_eq!((g.memory_used_mb, g.temperature_c), (0, Some(40)));
    }

    #[test]
    fn used_memory_is_the_sum_of_mb_files_and_garbage_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let d1 = tmp.path().join("1");
        fs::create_dir_all(&d1).unwrap();
        fs::write(d1.join("task-a.mb"), "1000\n").unwrap();
        fs::write(d1.join("task-b.mb"), " 24 ").unwrap();
        fs::write(d1.join("garbage.mb"), "lots").unwrap();
        fs::write(d1.join("negative.mb"), "-5").unwrap();
        fs::write(d1.join("notes.txt"), "4000").unwrap();
        fs::create_dir(d1.join("dir.mb")).unwrap();
        let f = fake("2x6144", Some(tmp.path()));
        let g = f.read(1).unwrap();
        assert_eq!((g.memory_used_mb, g.memory_free_mb), (1024, 5120));
        // GPU 0 has its own directory (none): untouched.
        assert_eq!(f.read(0).unwrap().memory_used_mb, 0);

        // Not cached: a holder leaving frees its memory at the next read.
        fs::remove_file(d1.join("task-a.mb")).unwrap();
        assert_eq!(f.read(1).unwrap().memory_used_mb, 24);
    }

    #[test]
    fn used_memory_is_clamped_to_total() {
        let tmp = tempfile::tempdir().unwrap();
        let d0 = tmp.path().join("0");
        fs::create_dir_all(&d0).unwrap();
        fs::write(d0.join("a.mb"), "5000").unwrap();
        fs::write(d0.join("b.mb"), "5000").unwrap();
        fs::write(d0.join("huge.mb"), u64::MAX.to_string()).unwrap();
        let g = fake("1x6144", Some(tmp.path())).read(0).unwrap();
        assert_eq!((g.memory_used_mb, g.memory_free_mb), (6144, 0));
    }

    #[test]
    fn temperature_comes_from_temp_c() {
        let tmp = tempfile::tempdir().unwrap();
        let f = fake("3x6144", Some(tmp.path()));
        for (i, text) in [(0, "86\n"), (1, "hot"), (2, "")] {
            let d = tmp.path().join(i.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("temp_c"), text).unwrap();
        }
        assert_eq!(f.read(0).unwrap().temperature_c, Some(86));
        // Garbage: ignored, the default stands.
        assert_eq!(f.read(1).unwrap().temperature_c, Some(40));
        assert_eq!(f.read(2).unwrap().temperature_c, Some(40));
    }

    #[test]
    fn find_by_index_and_uuid() {
        let f = fake("2x6144", None);
        let by_index = f.find(&GpuSelector::Index(1)).unwrap();
        let by_uuid = f.find(&GpuSelector::Uuid(FakeGpus::uuid_for(1))).unwrap();
        assert_eq!(by_index, by_uuid);
        assert_eq!(by_uuid.index, 1);
    }

    #[test]
    fn find_missing_names_selector_and_count() {
        let f = fake("2x6144", None);
        let err = f.find(&GpuSelector::Index(2)).unwrap_err();
        assert!(
            matches!(&err, GpuError::NoSuchGpu { selector, count: 2 } if selector == "2"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no GPU 2 on this machine, which has 2 GPU(s)"
        );

        let uuid = "GPU-5f2c1e3a-0000-1111-2222-333344445555";
        let err = f.find(&GpuSelector::Uuid(uuid.into())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(uuid) && msg.contains("2 GPU(s)"), "{msg}");

        let err = f.read(7).unwrap_err();
        assert!(
            matches!(err, GpuError::NoSuchGpu { count: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn all_reads_every_gpu_in_order() {
        let all = fake("3x100", None).all().unwrap();
        let idx: Vec<u32> = all.iter().map(|g| g.index).collect();
        assert_eq!(idx, [0, 1, 2]);
    }
}
