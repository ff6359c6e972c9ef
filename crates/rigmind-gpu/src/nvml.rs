//! Real GPU telemetry through NVML (`libnvidia-ml.so`, loaded at run time by
//! nvml-wrapper, so this builds and runs on machines without a driver and then fails
//! cleanly with [`GpuError::NoNvml`]).
//!
//! Indices here are NVML's, which follow PCI bus order. CUDA by default numbers GPUs
//! "fastest first" (`CUDA_DEVICE_ORDER=FASTEST_FIRST`), so on a box with mixed cards
//! NVML index 1 need not be CUDA device 1, and either order may change after a reboot
//! or a card swap. That is why callers pin a worker to a GPU by UUID (which both NVML
//! and `CUDA_VISIBLE_DEVICES` accept) and treat the index as a display label.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml as NvmlLib};

use crate::{GpuError, GpuInfo, GpuSelector, Telemetry};

const MIB: u64 = 1024 * 1024;

/// NVML telemetry. The library is initialised once, in [`Nvml::init`], and kept for the
/// life of this value (dropping it shuts NVML down).
pub struct Nvml {
    nvml: NvmlLib,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

impl Nvml {
    /// Loads and initialises NVML and checks that it sees at least one GPU; any failure
    /// (no library, no driver, no permission, no GPU) is [`GpuError::NoNvml`] saying
    /// why.
    pub fn init() -> Result<Self, GpuError> {
        let nvml = NvmlLib::init().map_err(|e| GpuError::NoNvml { why: init_why(&e) })?;
        let count = nvml.device_count().map_err(|e| GpuError::NoNvml {
            why: format!("NVML initialised but could not count GPUs ({e})"),
        })?;
        if count == 0 {
            return Err(GpuError::NoNvml {
                why: "NVML initialised but reports no GPU".to_string(),
            });
        }
        tracing::debug!("NVML initialised: {count} GPU(s)");
        Ok(Nvml { nvml })
    }

    fn no_such(&self, sel: &GpuSelector) -> Result<GpuError, GpuError> {
        Ok(GpuError::NoSuchGpu {
            selector: sel.to_string(),
            count: self.count()?,
        })
    }

    /// Reads one device. `label` names it in errors until its UUID is known.
    fn info(&self, dev: &Device<'_>, label: &str) -> Result<GpuInfo, GpuError> {
        let err = |gpu: &str, op: &'static str| {
            let gpu = gpu.to_string();
            move |source: NvmlError| GpuError::Nvml { gpu, op, source }
        };
        let uuid = dev.uuid().map_err(err(label, "uuid"))?;
        let label = format!("{label} ({uuid})");
        let index = dev.index().map_err(err(&label, "index"))?;
        let name = dev.name().map_err(err(&label, "name"))?;
        let mem = dev.memory_info().map_err(err(&label, "memory_info"))?;
        // The rest are optional: consumer cards, MIG slices and some drivers answer
        // NotSupported, which must not cost the worker its GPU.
        let utilization_percent =
            optional(&label, "utilization_rates", dev.utilization_rates()).map(|u| u.gpu);
        let temperature_c = optional(
            &label,
            "temperature",
            dev.temperature(TemperatureSensor::Gpu),
        );
        let power_watts =
            optional(&label, "power_usage", dev.power_usage()).map(|mw| f64::from(mw) / 1000.0);
        let total_mb = mem.total / MIB;
        let free_mb = mem.free / MIB;
        Ok(GpuInfo {
            index,
            uuid,
            name,
            memory_total_mb: total_mb,
            // NVML's v2 `used` leaves out what the driver reserves (about 0.5 GB on an
            // H100), so used + free would fall short of total; counting the reserve as
            // used keeps the sum whole, as the fake's is, and never overstates room.
            memory_used_mb: total_mb.saturating_sub(free_mb),
            memory_free_mb: free_mb,
            utilization_percent,
            temperature_c,
            power_watts,
        })
    }
}

impl Telemetry for Nvml {
    fn kind(&self) -> &'static str {
        "nvml"
    }

    fn count(&self) -> Result<u32, GpuError> {
        self.nvml.device_count().map_err(|source| GpuError::Nvml {
            gpu: "all".to_string(),
            op: "device_count",
            source,
        })
    }

    fn read(&self, index: u32) -> Result<GpuInfo, GpuError> {
        // NVML answers a bad index with a bare InvalidArg; check first so the error
        // says what is wrong.
        if index >= self.count()? {
            return Err(self.no_such(&GpuSelector::Index(index))?);
        }
        let label = index.to_string();
        let dev = self
            .nvml
            .device_by_index(index)
            .map_err(|source| GpuError::Nvml {
                gpu: label.clone(),
                op: "device_by_index",
                source,
            })?;
        self.info(&dev, &label)
    }

    fn process_vram_mb(&self, index: u32) -> Option<Vec<(u32, u64)>> {
        use nvml_wrapper::enums::device::UsedGpuMemory;
        let dev = self.nvml.device_by_index(index).ok()?;
        let procs = optional(
            &index.to_string(),
            "running_compute_processes",
            dev.running_compute_processes(),
        )?;
        Some(
            procs
                .into_iter()
                .filter_map(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some((p.pid, bytes / MIB)),
                    UsedGpuMemory::Unavailable => None,
                })
                .collect(),
        )
    }

    fn find(&self, sel: &GpuSelector) -> Result<GpuInfo, GpuError> {
        match sel {
            GpuSelector::Index(i) => self.read(*i),
            GpuSelector::Uuid(uuid) => match self.nvml.device_by_uuid(uuid.as_str()) {
                Ok(dev) => self.info(&dev, uuid),
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => Err(self.no_such(sel)?),
                Err(source) => Err(GpuError::Nvml {
                    gpu: uuid.clone(),
                    op: "device_by_uuid",
                    source,
                }),
            },
        }
    }
}

/// An optional reading: a failure is logged at debug and becomes None.
fn optional<T>(gpu: &str, op: &str, r: Result<T, NvmlError>) -> Option<T> {
    r.map_err(|e| tracing::debug!("GPU {gpu}: NVML {op} unavailable: {e}"))
        .ok()
}

/// Why `Nvml::init` failed, in words a user can act on.
fn init_why(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(le) => {
            format!("the NVIDIA management library (libnvidia-ml) could not be opened: {le}")
        }
        NvmlError::FailedToLoadSymbol(s) => {
            format!("libnvidia-ml.so lacks a needed function, driver too old? ({s})")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        NvmlError::LibraryNotFound => "the NVIDIA management library was not found".to_string(),
        other => format!("NVML init failed ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_why_says_what_is_missing() {
        assert!(init_why(&NvmlError::DriverNotLoaded).contains("driver is not loaded"));
        assert!(init_why(&NvmlError::NoPermission).contains("permission"));
        assert!(init_why(&NvmlError::Unknown).contains("NVML init failed"));
    }

    #[test]
    fn nvml_error_names_gpu_and_call() {
        let e = GpuError::Nvml {
            gpu: "1 (GPU-5f2c)".into(),
            op: "memory_info",
            source: NvmlError::GpuLost,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("GPU 1 (GPU-5f2c)") && msg.contains("memory_info"),
            "{msg}"
        );
    }

    #[test]
    fn init_on_this_machine_is_ok_or_no_nvml() {
        let n = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                assert!(matches!(e, GpuError::NoNvml { .. }), "{e:?}");
                rigmind_testkit::skip(
                    "rigmind-gpu nvml::init_on_this_machine_is_ok_or_no_nvml",
                    &format!("no NVML here: {e}"),
                );
                return;
            }
        };
        // A machine with GPUs: check the readings hang together.
        let count = n.count().unwrap();
        assert!(count > 0);
        for g in n.all().unwrap() {
            eprintln!("{g:?}");
            assert!(g.uuid.starts_with("GPU-"), "{g:?}");
            assert!(g.memory_total_mb > 0 && g.memory_free_mb <= g.memory_total_mb);
            assert_eq!(g.memory_used_mb + g.memory_free_mb, g.memory_total_mb);
            assert_eq!(
                n.find(&GpuSelector::Uuid(g.uuid.clone())).unwrap().index,
                g.index
            );
            assert_eq!(n.find(&GpuSelector::Index(g.index)).unwrap().uuid, g.uuid);
        }
        let err = n.read(count).unwrap_err();
        assert!(matches!(err, GpuError::NoSuchGpu { .. }), "{err:?}");
        let missing = GpuSelector::Uuid("GPU-00000000-0000-0000-0000-000000000000".into());
        let err = n.find(&missing).unwrap_err();
        assert!(matches!(err, GpuError::NoSuchGpu { .. }), "{err:?}");
    }
}
