//! GPU telemetry for workers, host memory and CPU temperature readings, and the
//! safety-gate check.
//!
//! A worker asks [`open`] for the [`Telemetry`] of its machine: NVML on a real box, or
//! [`FakeGpus`] when `RIGMIND_FAKE_GPUS` is set (tests on machines without GPUs; the
//! fake says so loudly). It resolves its `--gpu` value ([`GpuSelector`]) to a
//! [`GpuInfo`], reads [`HostMemory`], and asks [`safety_violations`] whether rig.toml's
//! `[safety]` gates allow heavy work now.
//!
//! The types shared by both telemetries ([`GpuSelector`], [`Telemetry`]) live here;
//! each telemetry, host memory and the gates have their own module. The readings
//! ([`GpuInfo`], [`HostMemory`]) are plain data of `rigmind-types`, re-exported.

mod error;
mod fake;
mod host;
mod nvml;
mod safety;
mod thermal;

use std::fmt;
use std::str::FromStr;

pub use error::GpuError;
pub use fake::{FakeGpus, FAKE_GPUS_ENV, FAKE_GPU_DIR_ENV};
pub use host::{parse_meminfo, read_host_memory, read_host_memory_from};
pub use nvml::Nvml;
/// The readings themselves are plain data of `rigmind-types` (the worker state file
/// embeds them); they are re-exported here for the callers of the telemetry.
pub use rigmind_types::{CpuTemp, GpuInfo, HostMemory};
pub use safety::safety_violations;
pub use thermal::{read_cpu_temp, read_cpu_temp_from, SYS_ROOT_ENV};

/// Which GPU a worker was told to use: `--gpu 1` or `--gpu GPU-5f2c...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelector {
    /// An NVML index.
    Index(u32),
    /// A GPU or MIG UUID as `nvidia-smi -L` prints it ("GPU-..." or "MIG-...").
    Uuid(String),
}

impl FromStr for GpuSelector {
    type Err = GpuError;

    /// All digits -> [`GpuSelector::Index`]; "GPU-..." or "MIG-..." ->
    /// [`GpuSelector::Uuid`]; anything else (empty, a bare hex string, an index too
    /// large for u32) -> [`GpuError::BadSelector`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GpuError::BadSelector {
            value: s.to_string(),
        };
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().map(GpuSelector::Index).map_err(|_| bad());
        }
        let has_body = |prefix: &str| t.len() > prefix.len() && t.starts_with(prefix);
        if (has_body("GPU-") || has_body("MIG-")) && !t.contains(char::is_whitespace) {
            return Ok(GpuSelector::Uuid(t.to_string()));
        }
        Err(bad())
    }
}

impl fmt::Display for GpuSelector {
    /// The form it was given in: "1" or "GPU-5f2c...".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelector::Index(i) => write!(f, "{i}"),
            GpuSelector::Uuid(u) => f.write_str(u),
        }
    }
}

/// A source of GPU readings: real (NVML) or fake.
pub trait Telemetry: Send + Sync {
    /// "nvml" or "fake".
    fn kind(&self) -> &'static str;

    /// How many GPUs there are.
    fn count(&self) -> Result<u32, GpuError>;

    /// The current reading of the GPU at this index; [`GpuError::NoSuchGpu`] if none.
    fn read(&self, index: u32) -> Result<GpuInfo, GpuError>;

    /// Resolves a selector to the GPU's current reading; [`GpuError::NoSuchGpu`]
    /// (naming the selector and the count) if it names no GPU.
    fn find(&self, sel: &GpuSelector) -> Result<GpuInfo, GpuError>;

    /// The GPU memory (MB) each compute process holds on the GPU at this index,
    /// as `(pid, MB)`; `None` where this telemetry cannot tell (the fake, or a
    /// failed read). A task's peak VRAM is summed over its own pids.
    fn process_vram_mb(&self, _index: u32) -> Option<Vec<(u32, u64)>> {
        None
    }

    /// The current readings of all GPUs, in index order.
    fn all(&self) -> Result<Vec<GpuInfo>, GpuError> {
        (0..self.count()?).map(|i| self.read(i)).collect()
    }
}

/// The telemetry of this machine: the fake one when `RIGMIND_FAKE_GPUS` is set (and not
/// empty), else NVML. See [`open_with`].
pub fn open() -> Result<Box<dyn Telemetry>, GpuError> {
    let spec = std::env::var(FAKE_GPUS_ENV).ok();
    // An empty value counts as unset, so `RIGMIND_FAKE_GPUS= worker ...` turns it off.
    let spec = spec.as_deref().map(str::trim).filter(|s| !s.is_empty());
    open_with(spec)
}

/// The testable form of [`open`]: `Some(spec)` gives [`FakeGpus`] (with the reading
/// directory from `RIGMIND_FAKE_GPU_DIR`) and logs a loud warning that the GPUs are
/// fake; `None` gives [`Nvml`], or [`GpuError::NoNvml`] when there is no driver,
/// library or GPU.
pub fn open_with(fake_spec: Option<&str>) -> Result<Box<dyn Telemetry>, GpuError> {
    match fake_spec {
        Some(spec) => {
            let fake = FakeGpus::parse(spec)?;
            fake.warn_loudly();
            Ok(Box::new(fake))
        }
        None => Ok(Box::new(Nvml::init()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_digits_are_an_index() {
        assert_eq!("0".parse::<GpuSelector>().unwrap(), GpuSelector::Index(0));
        assert_eq!(
            " 12 ".parse::<GpuSelector>().unwrap(),
            GpuSelector::Index(12)
        );
    }

    #[test]
    fn selector_gpu_and_mig_uuids() {
        let u = "GPU-5f2c1e3a-0000-1111-2222-333344445555";
        assert_eq!(
            u.parse::<GpuSelector>().unwrap(),
            GpuSelector::Uuid(u.to_string())
        );
        let m = "MIG-1f2e3d4c-aaaa-bbbb-cccc-ddddeeeeffff";
        assert_eq!(
            m.parse::<GpuSelector>().unwrap(),
            GpuSelector::Uuid(m.to_string())
        );
    }

    #[test]
    fn selector_rejects_the_rest() {
        for bad in [
            "",
            "  ",
            "-1",
            "1.5",
            "5f2c1e3a",
            "gpu-5f2c",
            "GPU-",
            "GPU-a b",
            "99999999999",
        ] {
            let err = bad.parse::<GpuSelector>().unwrap_err();
            assert!(
                matches!(&err, GpuError::BadSelector { value } if value == bad),
                "{bad:?} gave {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("GPU-") && msg.contains("MIG-"), "{msg}");
        }
    }

    #[test]
    fn selector_displays_as_given() {
        assert_eq!(GpuSelector::Index(3).to_string(), "3");
        assert_eq!(GpuSelector::Uuid("GPU-ab".into()).to_string(), "GPU-ab");
    }

    #[test]
    fn open_with_fake_spec_gives_fake() {
        let t = open_with(Some("3x1024")).unwrap();
        assert_eq!(t.kind(), "fake");
        assert_eq!(t.count().unwrap(), 3);
        assert_eq!(t.all().unwrap().len(), 3);
    }

    #[test]
    fn open_with_bad_fake_spec_is_an_error() {
        let err = open_with(Some("two")).err().expect("bad spec accepted");
        assert!(matches!(err, GpuError::BadFakeSpec { .. }), "{err:?}");
    }

    #[test]
    fn open_with_none_without_gpu_is_no_nvml() {
        match open_with(None) {
            // A machine with a driver and a GPU: nothing to check here.
            Ok(t) => assert_eq!(t.kind(), "nvml"),
            Err(err) => {
                assert!(matches!(err, GpuError::NoNvml { .. }), "{err:?}");
                let msg = err.to_string();
                assert!(msg.contains("NVML could not be loaded"), "{msg}");
                assert!(msg.contains("RIGMIND_FAKE_GPUS"), "{msg}");
                assert!(msg.contains("--gpu"), "{msg}");
            }
        }
    }
}
