//! `rig.toml` (rig-config.md): read once at start, every value checked.
//!
//! A missing file means the defaults. Unknown keys and bad values are errors that name
//! the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rigmind_types::parse_duration;
use serde::Deserialize;

/// A rig.toml that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The rig: task defaults, LLM settings, resource policy, safety limits, groups, GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct RigConfig {
    pub defaults: Defaults,
    pub llm: Llm,
    pub resource_manager: ResourceManager,
    pub safety: Safety,
    /// Concurrency groups: at most N tasks of the group running on the whole rig.
    pub groups: BTreeMap<String, u32>,
    pub gpus: Vec<Gpu>,
    pub logs: Logs,
}

/// Task logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Logs {
    /// Megabytes of output a task's log keeps per run (its head and its tail, with
    /// a line saying what was cut); 0: no cap.
    pub max_task_log_mb: u64,
}

impl Logs {
    /// The cap in bytes, `None` for no cap.
    pub fn max_task_log_bytes(&self) -> Option<u64> {
        (self.max_task_log_mb > 0).then(|| self.max_task_log_mb.saturating_mul(1024 * 1024))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub timeout_secs: f64,
    pub retries: u32,
    /// Heartbeat age after which a worker is presumed dead.
    pub stale_after_secs: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Llm {
    pub backend: String,
    pub model: String,
    pub load_seconds: f64,
    pub unload_seconds: f64,
    pub keep_alive: String,
}

/// How the brain moves GPUs between their LLM and script states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Adaptive,
    Phases,
    Static,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceManager {
    pub policy: Policy,
    pub min_llm_gpus: u32,
    pub max_llm_gpus: Option<u32>,
    pub idle_unload_secs: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Safety {
    pub min_free_ram_mb: u64,
    pub max_swap_percent: f64,
    pub max_gpu_temp_c: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub worker: String,
    pub ollama: Option<String>,
    pub vram_mb: Option<u64>,
}

impl Default for RigConfig {
    fn default() -> Self {
        Self {
            defaults: Defaults {
                timeout_secs: 1800.0,
                retries: 3,
                stale_after_secs: 120.0,
            },
            llm: Llm {
                backend: "ollama".into(),
                model: "qwen2.5:7b".into(),
                load_seconds: 120.0,
                unload_seconds: 10.0,
                keep_alive: "-1".into(),
            },
            resource_manager: ResourceManager {
                policy: Policy::Adaptive,
                min_llm_gpus: 0,
                max_llm_gpus: None,
                idle_unload_secs: 1800.0,
            },
            safety: Safety {
                min_free_ram_mb: 2048,
                max_swap_percent: 80.0,
                max_gpu_temp_c: 83.0,
            },
            groups: BTreeMap::new(),
            gpus: Vec::new(),
            logs: Logs {
                max_task_log_mb: 64,
            },
        }
    }
}

// The file's shape, as serde reads it; every table refuses unknown keys.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    llm: RawLlm,
    #[serde(default)]
    resource_manager: RawRm,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    groups: BTreeMap<String, u32>,
    #[serde(default)]
    gpu: Vec<RawGpu>,
    #[serde(default)]
    logs: RawLogs,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_task_log_mb: Option<u64>,
}

/// A duration as rig.toml may write it: `"30m"` or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Secs(f64),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<toml::Spanned<RawDuration>>,
    retries: Option<u32>,
    stale_after: Option<toml::Spanned<RawDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    backend: Option<String>,
    model: Option<String>,
    load_seconds: Option<f64>,
    unload_seconds: Option<f64>,
    keep_alive: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRm {
    policy: Option<Policy>,
    min_llm_gpus: Option<u32>,
    max_llm_gpus: Option<u32>,
    idle_unload: Option<toml::Spanned<RawDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    min_free_ram_mb: Option<u64>,
    max_swap_percent: Option<f64>,
    max_gpu_temp_c: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    index: u32,
    worker: Option<String>,
    ollama: Option<String>,
    vram_mb: Option<u64>,
}

/// Reads rig.toml without ever blocking: opened `O_NONBLOCK` (a FIFO under its
/// name opens at once) and refused unless it is a regular file. A symbolic link
/// is followed (people keep their rig.toml in a dotfiles repository).
fn read_config(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        let kind = if meta.file_type().is_fifo() {
            "a FIFO"
        } else {
            "not a file"
        };
        return Err(std::io::Error::other(format!(
            "not a regular file ({kind})"
        )));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

impl RigConfig {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match read_config(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses rig.toml text; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(s.start));
            invalid(line, e.message().trim().to_string())
        })?;
        let duration = |key: &str, v: &toml::Spanned<RawDuration>| -> Result<f64, ConfigError> {
            match v.get_ref() {
                RawDuration::Text(t) => parse_duration(t)
                    .map_err(|e| invalid(line_of(v.span().start), format!("{key}: {e}"))),
                RawDuration::Secs(s) if *s >= 0.0 => Ok(*s),
                RawDuration::Secs(s) => Err(invalid(
                    line_of(v.span().start),
                    format!("{key}: {s} is negative"),
                )),
            }
        };
        let mut cfg = Self::default();
        if let Some(v) = &raw.defaults.timeout {
            cfg.defaults.timeout_secs = duration("defaults.timeout", v)?;
            if cfg.defaults.timeout_secs <= 0.0 {
                return Err(invalid(
                    line_of(v.span().start),
                    "defaults.timeout: must be more than 0".to_string(),
                ));
            }
        }
        if let Some(mb) = raw.logs.max_task_log_mb {
            cfg.logs.max_task_log_mb = mb;
        }
        if let Some(v) = raw.defaults.retries {
            cfg.defaults.retries = v;
        }
        if let Some(v) = &raw.defaults.stale_after {
            cfg.defaults.stale_after_secs = duration("defaults.stale_after", v)?;
        }
        let l = raw.llm;
        cfg.llm.backend = l.backend.unwrap_or(cfg.llm.backend);
        cfg.llm.model = rigmind_types::canonical_model(&l.model.unwrap_or(cfg.llm.model));
        cfg.llm.load_seconds = l.load_seconds.unwrap_or(cfg.llm.load_seconds);
        cfg.llm.unload_seconds = l.unload_seconds.unwrap_or(cfg.llm.unload_seconds);
        cfg.llm.keep_alive = l.keep_alive.unwrap_or(cfg.llm.keep_alive);
        if cfg.llm.backend != "ollama" {
            return Err(invalid(
                1,
                format!(
                    "llm.backend: '{}' is not supported (only 'ollama')",
                    cfg.llm.backend
                ),
            ));
        }
        let rm = raw.resource_manager;
        cfg.resource_manager.policy = rm.policy.unwrap_or(cfg.resource_manager.policy);
        cfg.resource_manager.min_llm_gpus = rm.min_llm_gpus.unwrap_or(0);
        cfg.resource_manager.max_llm_gpus = rm.max_llm_gpus;
        if let Some(v) = &rm.idle_unload {
            cfg.resource_manager.idle_unload_secs = duration("resource_manager.idle_unload", v)?;
        }
        let s = raw.safety;
        cfg.safety.min_free_ram_mb = s.min_free_ram_mb.unwrap_or(cfg.safety.min_free_ram_mb);
        cfg.safety.max_swap_percent = s.max_swap_percent.unwrap_or(cfg.safety.max_swap_percent);
        cfg.safety.max_gpu_temp_c = s.max_gpu_temp_c.unwrap_or(cfg.safety.max_gpu_temp_c);
        cfg.groups = raw.groups;
        for g in raw.gpu {
            let worker = g.worker.unwrap_or_else(|| format!("worker_{}", g.index));
            if cfg
                .gpus
                .iter()
                .any(|o| o.index == g.index || o.worker == worker)
            {
                return Err(invalid(
                    1,
                    format!(
                        "[[gpu]] index {} / worker '{worker}' is declared twice",
                        g.index
                    ),
                ));
            }
            cfg.gpus.push(Gpu {
                index: g.index,
                worker,
                ollama: g.ollama,
                vram_mb: g.vram_mb,
            });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
[defaults]
timeout = "30m"
retries = 3
stale_after = "120s"

[llm]
backend = "ollama"
model = "qwen2.5:7b"
load_seconds = 120
unload_seconds = 10
keep_alive = "-1"

[resource_manager]
policy = "adaptive"
min_llm_gpus = 0
max_llm_gpus = 3
idle_unload = "30m"

[safety]
min_free_ram_mb = 2048
max_swap_percent = 80
max_gpu_temp_c = 83

[groups]
whisper_large = 1

[[gpu]]
index = 1
worker = "worker_1"
ollama = "http://127.0.0.1:11435"
vram_mb = 6144

[[gpu]]
index = 2
worker = "worker_2"
ollama = "http://127.0.0.1:11436"
vram_mb = 6144
"#;

    #[test]
    fn the_spec_example_reads() {
        let c = RigConfig::parse(Path::new("rig.toml"), SPEC_EXAMPLE).unwrap();
        assert_eq!(c.defaults.stale_after_secs, 120.0);
        assert_eq!(c.resource_manager.max_llm_gpus, Some(3));
        assert_eq!(c.groups["whisper_large"], 1);
        assert_eq!(c.gpus.len(), 2);
        assert_eq!(c.gpus[1].worker, "worker_2");
        assert_eq!(c.llm.load_seconds, 120.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let e = RigConfig::parse(
            Path::new("rig.toml"),
            "[defaults]\nretries = 2\ntimout = \"3m\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rig.toml:3: unknown field `timout`"), "{e}");
        let e = RigConfig::parse(Path::new("rig.toml"), "\n[defaults]\ntimeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rig.toml:3: defaults.timeout: bad duration 'soon'"),
            "{e}"
        );
        let e = RigConfig::parse(
            Path::new("r.toml"),
            "[resource_manager]\npolicy = \"greedy\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("r.toml:2:"), "{e}");
    }

    #[test]
    fn a_zero_default_timeout_is_refused_at_its_line() {
        for zero in ["0", "\"0s\"", "0.0"] {
            let e = RigConfig::parse(
                Path::new("rig.toml"),
                &format!("[defaults]\nretries = 1\ntimeout = {zero}\n"),
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                e, "rig.toml:3: defaults.timeout: must be more than 0",
                "{zero}"
            );
        }
    }

    #[test]
    fn the_task_log_cap_reads_with_a_default() {
        let c = RigConfig::parse(Path::new("rig.toml"), "[logs]\nmax_task_log_mb = 3\n").unwrap();
        assert_eq!(c.logs.max_task_log_bytes(), Some(3 * 1024 * 1024));
        let c = RigConfig::parse(Path::new("rig.toml"), "[logs]\nmax_task_log_mb = 0\n").unwrap();
        assert_eq!(c.logs.max_task_log_bytes(), None);
        assert_eq!(RigConfig::default().logs.max_task_log_mb, 64);
        let e = RigConfig::parse(Path::new("rig.toml"), "[logs]\nmax_task_log = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rig.toml:2: unknown field `max_task_log`"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = RigConfig::load(&dir.path().join("rig.toml")).unwrap();
        assert_eq!(c, RigConfig::default());
    }
}
