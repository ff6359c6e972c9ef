//! The one error type of the crate. Every message names the GPU (index or UUID), the
//! spec or the file it is about, so that a line in a worker's log is enough to act on.

use std::path::PathBuf;

/// Everything that can go wrong reading GPUs or host memory.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// NVML (the NVIDIA driver's management library) could not be used at all.
    #[error(
        "NVML could not be loaded: {why}. Is the NVIDIA driver installed and a GPU present? \
         `worker` without `--gpu` runs as a CPU worker; to test GPU code on a machine without \
         GPUs, set RIGMIND_FAKE_GPUS=2x6144 (two fake GPUs of 6144 MB)"
    )]
    NoNvml {
        /// What failed: the library load, driver init, or no device found.
        why: String,
    },

    /// `RIGMIND_FAKE_GPUS` holds something other than `COUNTxMB`.
    #[error(
        "bad RIGMIND_FAKE_GPUS value {spec:?}: {why}; expected COUNTxMB with COUNT 1..=64 \
         and MB > 0, e.g. 2x6144"
    )]
    BadFakeSpec {
        /// The value as given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },

    /// The selector names no GPU of this machine.
    #[error("no GPU {selector} on this machine, which has {count} GPU(s)")]
    NoSuchGpu {
        /// The index or UUID asked for, as given.
        selector: String,
        /// How many GPUs there are.
        count: u32,
    },

    /// An NVML call failed for a GPU that exists.
    #[error("NVML {op} failed for GPU {gpu}: {source}")]
    Nvml {
        /// The GPU: its index, and UUID when known ("1 (GPU-5f2c...)"), or "all" for
        /// calls about no one GPU.
        gpu: String,
        /// The NVML call that failed, e.g. "memory_info".
        op: &'static str,
        /// NVML's own error.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },

    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `/proc/meminfo` text lacks a field or has a value that is not a number.
    #[error("/proc/meminfo: field {field}: {why}")]
    BadMeminfo {
        /// The field, e.g. "MemAvailable".
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },

    /// A `--gpu` value that is neither an index nor a GPU/MIG UUID.
    #[error(
        "bad GPU selector {value:?}: expected an index (e.g. 1) or a UUID starting with \
         GPU- or MIG- exactly as `nvidia-smi -L` prints it"
    )]
    BadSelector {
        /// The value as given.
        value: String,
    },
}
