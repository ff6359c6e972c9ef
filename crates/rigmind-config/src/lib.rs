//! `rig.toml` (rig-config.md): read once at start, every value checked.
//!
//! A missing file means the defaults. Unknown keys and bad values are errors that name
//! the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rigmind_types::parse_duration;
use serde::Deserialize;

mod endpoint;
mod groups;
mod ops;

pub use endpoint::{url_host, Api, Endpoint, Escalation};
pub use ops::{Alerts, Notify, NOTIFY_TIMEOUT_SECS};

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

/// The rig: task defaults, LLM settings, resource policy, safety limits, groups, GPUs,
/// the LLM endpoints not tied to a card and the escalation tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct RigConfig {
    pub defaults: Defaults,
    pub llm: Llm,
    pub resource_manager: ResourceManager,
    pub safety: Safety,
    /// Concurrency groups: at most N tasks of the group running on the whole rig.
    pub groups: BTreeMap<String, u32>,
    /// The groups' command-line patterns (`match`, a regex): processes on the box
    /// whose `/proc/PID/cmdline` matches count against the group.
    pub group_match: BTreeMap<String, String>,
    /// The RAM a task of a group reserves when it does not say (`[groups] name =
    /// { slots = N, mem_mb = M }`), by group.
    pub group_mem_mb: BTreeMap<String, u64>,
    pub gpus: Vec<Gpu>,
    pub logs: Logs,
    /// `[[endpoint]]`: LLM servers not tied to a card.
    pub endpoints: Vec<Endpoint>,
    /// `[escalation]`: model tiers for llm tasks that keep failing.
    pub escalation: Escalation,
    /// `[scheduling]`: the claim order.
    pub scheduling: Scheduling,
    /// `[[model]]`: the memory each named model takes on a card.
    pub models: Vec<Model>,
    /// `[security]`: what task commands may not inherit.
    pub security: Security,
    /// `[alerts]`: when the brain raises its alerts.
    pub alerts: Alerts,
    /// `[notify]`: the command run on batch ends and alerts.
    pub notify: Notify,
}

/// `[security]`: environment variables no task command inherits, besides the
/// `api_key_env` variables of the endpoints (always dropped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    /// Names, or patterns with one `*` at either end (`*_TOKEN`, `AWS_*`).
    pub scrub_env: Vec<String>,
}

impl RigConfig {
    /// The variables of `env` (names) that a task command must not inherit: the
    /// endpoints' `api_key_env` and whatever `[security] scrub_env` names or
    /// matches. Sorted, each once.
    pub fn scrubbed_env<'a>(&self, env: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out: std::collections::BTreeSet<String> = self
            .endpoints
            .iter()
            .filter_map(|e| e.api_key_env.clone())
            .collect();
        out.extend(
            self.security
                .scrub_env
                .iter()
                .filter(|p| !p.contains('*'))
                .cloned(),
        );
        out.extend(
            env.into_iter()
                .filter(|name| self.security.scrub_env.iter().any(|p| env_matches(p, name)))
                .map(String::from),
        );
        out.into_iter().collect()
    }

    /// [`RigConfig::scrubbed_env`] of this process's environment: what the tasks
    /// it starts must not inherit.
    pub fn scrubbed_env_now(&self) -> Vec<String> {
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        self.scrubbed_env(names.iter().map(String::as_str))
    }
}

/// Whether variable `name` matches `pattern`: the same name, or `PREFIX*`,
/// `*SUFFIX`, `*PART*`.
fn env_matches(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') => name.contains(&rest[..rest.len() - 1]),
        (Some(suffix), _) => name.ends_with(suffix),
        (None, Some(prefix)) => name.starts_with(prefix),
        (None, None) => name == pattern,
    }
}

/// A model's size (`[[model]]`): a card holds it only when the card's memory less
/// `[llm] vram_margin_mb` is at least `vram_mb`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The model's name, canonical (`qwen2.5:14b`; `llama3.3` is `llama3.3:latest`).
    pub name: String,
    /// The memory it takes on a card, in MB.
    pub vram_mb: u64,
}

/// The claim order's settings (`[scheduling]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduling {
    /// Seconds of waiting per priority level a queued task gains (0: no aging).
    pub aging_seconds_per_level: f64,
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
    /// Memory a card keeps beside a model (the server's own context and buffers):
    /// a card fits a model when its `vram_mb` less this is at least the model's.
    pub vram_margin_mb: u64,
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
    /// RAM kept free: no heavy claim below it, and no memory reservation into it.
    pub min_free_ram_mb: u64,
    pub max_swap_percent: f64,
    pub max_gpu_temp_c: f64,
    /// The hottest CPU package or core sensor may not pass this (`rigmind_gpu`'s
    /// thermal module says which sensors count).
    pub max_cpu_temp_c: f64,
    /// A task's memory cap, when it gives no `mem_limit_mb`, is its `mem_mb` times
    /// this (at least 1).
    pub mem_limit_factor: f64,
    /// The host's RAM as `rigmind simulate` sees it (MB): its tasks wait while
    /// their `mem_mb` would not fit. `None`: the simulator holds nothing back for
    /// memory. Live claims read the real host.
    pub host_ram_mb: Option<u64>,
}

impl Safety {
    /// The memory cap of a task in MB: its `mem_limit_mb`, else its `mem_mb` ×
    /// `mem_limit_factor` (rounded up), else none.
    pub fn mem_cap_mb(&self, mem_mb: Option<u64>, mem_limit_mb: Option<u64>) -> Option<u64> {
        mem_limit_mb.or_else(|| mem_mb.map(|m| (m as f64 * self.mem_limit_factor).ceil() as u64))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub worker: String,
    /// The card's Ollama server.
    pub ollama: Option<String>,
    /// The card's llama-server (router mode); never set together with `ollama`.
    pub llama_server: Option<String>,
    pub vram_mb: Option<u64>,
}

impl Gpu {
    /// The card's LLM server and its API, if it has one.
    pub fn llm_server(&self) -> Option<(Api, &str)> {
        match (&self.ollama, &self.llama_server) {
            (Some(url), _) => Some((Api::Ollama, url)),
            (None, Some(url)) => Some((Api::LlamaServer, url)),
            (None, None) => None,
        }
    }
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
                vram_margin_mb: 512,
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
                max_cpu_temp_c: 90.0,
                mem_limit_factor: 1.5,
                host_ram_mb: None,
            },
            groups: BTreeMap::new(),
            group_match: BTreeMap::new(),
            group_mem_mb: BTreeMap::new(),
            gpus: Vec::new(),
            logs: Logs {
                max_task_log_mb: 64,
            },
            endpoints: Vec::new(),
            escalation: Escalation::default(),
            scheduling: Scheduling {
                aging_seconds_per_level: 300.0,
            },
            models: Vec::new(),
            security: Security::default(),
            alerts: Alerts::default(),
            notify: Notify {
                command: None,
                timeout_secs: NOTIFY_TIMEOUT_SECS,
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
    groups: BTreeMap<String, toml::Spanned<groups::RawGroup>>,
    #[serde(default)]
    gpu: Vec<toml::Spanned<RawGpu>>,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    endpoint: Vec<toml::Spanned<endpoint::RawEndpoint>>,
    #[serde(default)]
    escalation: Option<toml::Spanned<endpoint::RawEscalation>>,
    #[serde(default)]
    scheduling: RawScheduling,
    #[serde(default)]
    model: Vec<toml::Spanned<RawModel>>,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    alerts: ops::RawAlerts,
    #[serde(default)]
    notify: ops::RawNotify,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default)]
    scrub_env: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    vram_mb: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScheduling {
    aging_seconds_per_level: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_task_log_mb: Option<u64>,
}

/// A duration as rig.toml may write it: `"30m"` or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDuration {
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
    vram_margin_mb: Option<u64>,
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
    max_cpu_temp_c: Option<f64>,
    mem_limit_factor: Option<f64>,
    host_ram_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGpu {
    index: u32,
    worker: Option<String>,
    ollama: Option<String>,
    llama_server: Option<String>,
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
        cfg.llm.vram_margin_mb = l.vram_margin_mb.unwrap_or(cfg.llm.vram_margin_mb);
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
        cfg.safety.max_cpu_temp_c = s.max_cpu_temp_c.unwrap_or(cfg.safety.max_cpu_temp_c);
        if let Some(f) = s.mem_limit_factor {
            if !f.is_finite() || f < 1.0 {
                return Err(invalid(
                    1,
                    format!("safety.mem_limit_factor: {f} is not a number >= 1 (the cap is mem_mb times it)"),
                ));
            }
            cfg.safety.mem_limit_factor = f;
        }
        cfg.safety.host_ram_mb = s.host_ram_mb;
        cfg.scheduling = scheduling(raw.scheduling, cfg.scheduling, &invalid)?;
        let read = groups::groups(raw.groups, &line_of).map_err(|(l, m)| invalid(l, m))?;
        (cfg.groups, cfg.group_match, cfg.group_mem_mb) = (read.slots, read.matches, read.mem_mb);
        cfg.gpus = gpus(raw.gpu, &line_of, &invalid)?;
        cfg.endpoints = endpoints(raw.endpoint, &line_of, &invalid)?;
        cfg.models = models(raw.model, &line_of, &invalid)?;
        cfg.security.scrub_env = raw.security.scrub_env;
        if let Some(v) = &raw.alerts.stalled_after {
            cfg.alerts.stalled_after_secs = duration("alerts.stalled_after", v)?;
        }
        if let Some(v) = &raw.notify.timeout {
            cfg.notify.timeout_secs = duration("notify.timeout", v)?;
        }
        cfg.notify.command = raw.notify.command.filter(|c| !c.trim().is_empty());
        if let Some(esc) = raw.escalation {
            let line = line_of(esc.span().start);
            cfg.escalation =
                endpoint::escalation(esc.into_inner()).map_err(|m| invalid(line, m))?;
        }
        Ok(cfg)
    }
}

/// The `[[gpu]]` entries, checked: no index or worker twice, at most one LLM
/// server per card.
fn gpus(
    raw: Vec<toml::Spanned<RawGpu>>,
    line_of: &dyn Fn(usize) -> usize,
    invalid: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Vec<Gpu>, ConfigError> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for g in raw {
        let line = line_of(g.span().start);
        let g = g.into_inner();
        if g.ollama.is_some() && g.llama_server.is_some() {
            return Err(invalid(
                line,
                format!(
                    "[[gpu]] index {}: ollama and llama_server: a card has one LLM server, give one of the two",
                    g.index
                ),
            ));
        }
        let worker = g.worker.unwrap_or_else(|| format!("worker_{}", g.index));
        if gpus
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
        gpus.push(Gpu {
            index: g.index,
            worker,
            ollama: g.ollama,
            llama_server: g.llama_server,
            vram_mb: g.vram_mb,
        });
    }
    Ok(gpus)
}

/// The `[[model]]` entries, checked: a name, canonical, given once; a size above 0.
fn models(
    raw: Vec<toml::Spanned<RawModel>>,
    line_of: &dyn Fn(usize) -> usize,
    invalid: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Vec<Model>, ConfigError> {
    let mut out: Vec<Model> = Vec::new();
    for m in raw {
        let line = line_of(m.span().start);
        let m = m.into_inner();
        let name = rigmind_types::canonical_model(m.name.trim());
        if m.name.trim().is_empty() {
            return Err(invalid(line, "[[model]] name: must not be empty".into()));
        }
        if m.vram_mb == 0 {
            return Err(invalid(
                line,
                format!("[[model]] '{name}': vram_mb must be more than 0"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(invalid(
                line,
                format!("[[model]] name: '{name}' is declared twice"),
            ));
        }
        out.push(Model {
            name,
            vram_mb: m.vram_mb,
        });
    }
    Ok(out)
}

impl RigConfig {
    /// The memory `model` takes on a card, as a `[[model]]` entry gives it
    /// (`None`: not declared, it fits any card).
    pub fn model_vram_mb(&self, model: &str) -> Option<u64> {
        let name = rigmind_types::canonical_model(model);
        self.models
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.vram_mb)
    }
}

/// `[scheduling]` over the defaults `d`, checked.
fn scheduling(
    raw: RawScheduling,
    d: Scheduling,
    invalid: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Scheduling, ConfigError> {
    let Some(a) = raw.aging_seconds_per_level else {
        return Ok(d);
    };
    if !a.is_finite() || a < 0.0 {
        return Err(invalid(
            1,
            format!("scheduling.aging_seconds_per_level: {a} is not a number of seconds >= 0 (0 turns aging off)"),
        ));
    }
    Ok(Scheduling {
        aging_seconds_per_level: a,
    })
}

/// The `[[endpoint]]` entries, checked, defaults resolved; no name twice.
fn endpoints(
    raw: Vec<toml::Spanned<endpoint::RawEndpoint>>,
    line_of: &dyn Fn(usize) -> usize,
    invalid: &dyn Fn(usize, String) -> ConfigError,
) -> Result<Vec<Endpoint>, ConfigError> {
    let mut out: Vec<Endpoint> = Vec::new();
    for e in raw {
        let line = line_of(e.span().start);
        let e = endpoint::endpoint(e.into_inner()).map_err(|m| invalid(line, m))?;
        if out.iter().any(|o| o.name == e.name) {
            return Err(invalid(
                line,
                format!("[[endpoint]] name: '{}' is declared twice", e.name),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_env_takes_api_keys_names_and_patterns() {
        let cfg = RigConfig::parse(
            Path::new("rig.toml"),
            "[security]\nscrub_env = [\"HF_TOKEN\", \"*_SECRET\", \"AWS_*\", \"*PASS*\"]\n\n\
             [[endpoint]]\nname = \"o\"\napi = \"openai\"\nurl = \"https://api.example.com/v1\"\n\
             models = [\"m\"]\napi_key_env = \"OPENAI_API_KEY\"\n",
        )
        .unwrap();
        let env = [
            "PATH",
            "DB_SECRET",
            "AWS_REGION",
            "MYPASSWORD",
            "HOME",
            "SECRET_X",
        ];
        assert_eq!(
            cfg.scrubbed_env(env),
            [
                "AWS_REGION",
                "DB_SECRET",
                "HF_TOKEN",
                "MYPASSWORD",
                "OPENAI_API_KEY"
            ]
        );
    }

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
    fn alerts_and_notify_read_with_defaults() {
        let d = RigConfig::parse(Path::new("rig.toml"), "").unwrap();
        assert_eq!(d.alerts.stalled_after_secs, 600.0);
        assert_eq!(d.notify.command, None);
        assert_eq!(d.notify.timeout_secs, 60.0);
        let text =
            "[alerts]\nstalled_after = \"5m\"\n[notify]\ncommand = \"echo hi\"\ntimeout = 10\n";
        let c = RigConfig::parse(Path::new("rig.toml"), text).unwrap();
        assert_eq!(c.alerts.stalled_after_secs, 300.0);
        assert_eq!(c.notify.command.as_deref(), Some("echo hi"));
        assert_eq!(c.notify.timeout_secs, 10.0);
        let bad = RigConfig::parse(Path::new("rig.toml"), "[alerts]\nstaled_after = 3\n");
        assert!(bad.unwrap_err().to_string().contains("staled_after"));
    }

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
    fn groups_read_plain_or_as_a_table_with_a_pattern() {
        let text = "[safety]\nmax_cpu_temp_c = 85\n\n[groups]\nplain = 2\nwl = { slots = 1, match = \"whisper.*large\" }\nbare = { slots = 3 }\n";
        let c = RigConfig::parse(Path::new("rig.toml"), text).unwrap();
        assert_eq!(c.safety.max_cpu_temp_c, 85.0);
        assert_eq!(
            (c.groups["plain"], c.groups["wl"], c.groups["bare"]),
            (2, 1, 3)
        );
        assert_eq!(c.group_match.len(), 1);
        assert_eq!(c.group_match["wl"], "whisper.*large");
        assert_eq!(RigConfig::default().safety.max_cpu_temp_c, 90.0);
        let bad = RigConfig::parse(
            Path::new("rig.toml"),
            "\n[groups]\nwl = { slots = 1, match = \"whisper(\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.starts_with("rig.toml:3: groups.wl.match: not a valid regex"),
            "{bad}"
        );
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
    fn aging_reads_with_a_default_and_refuses_negative_seconds() {
        let parse = |t: &str| RigConfig::parse(Path::new("rig.toml"), t);
        assert_eq!(
            RigConfig::default().scheduling.aging_seconds_per_level,
            300.0
        );
        let c = parse("[scheduling]\naging_seconds_per_level = 0\n").unwrap();
        assert_eq!(c.scheduling.aging_seconds_per_level, 0.0);
        let e = parse("[scheduling]\naging_seconds_per_level = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduling.aging_seconds_per_level: -1"), "{e}");
    }

    #[test]
    fn groups_read_as_slots_or_a_table_with_their_memory() {
        let c = RigConfig::parse(
            Path::new("rig.toml"),
            "[safety]\nmem_limit_factor = 2\n\n[groups]\nplain = 2\nwhisper_large = { slots = 1, mem_mb = 10000 }\nslots_only = { slots = 3 }\n",
        )
        .unwrap();
        assert_eq!(c.groups["plain"], 2);
        assert_eq!(c.groups["whisper_large"], 1);
        assert_eq!(c.groups["slots_only"], 3);
        assert_eq!(c.group_mem_mb.get("whisper_large"), Some(&10000));
        assert_eq!(c.group_mem_mb.len(), 1);
        assert_eq!(c.safety.mem_limit_factor, 2.0);
        assert_eq!(c.safety.mem_cap_mb(Some(1000), None), Some(2000));
        assert_eq!(c.safety.mem_cap_mb(Some(1000), Some(1200)), Some(1200));
        assert_eq!(c.safety.mem_cap_mb(None, Some(700)), Some(700));
        assert_eq!(c.safety.mem_cap_mb(None, None), None);
        assert_eq!(RigConfig::default().safety.mem_limit_factor, 1.5);
        let e = err("[groups]\n\nw = { slots = 1, mem_mb = 0 }\n");
        assert_eq!(e, "rig.toml:3: groups.w: mem_mb must be more than 0");
        let e = err("[groups]\nw = { slots = 1, memmb = 10 }\n");
        assert!(e.starts_with("rig.toml:2:"), "{e}");
        let e = err("[safety]\nmem_limit_factor = 0.5\n");
        assert!(e.contains("safety.mem_limit_factor: 0.5"), "{e}");
    }

    #[test]
    fn a_missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = RigConfig::load(&dir.path().join("rig.toml")).unwrap();
        assert_eq!(c, RigConfig::default());
    }

    const LLM_EXAMPLE: &str = r#"
[[gpu]]
index = 0
llama_server = "http://127.0.0.1:8080"

[[endpoint]]
name = "local-vllm"
api = "openai"
url = "http://127.0.0.1:8000/"
models = ["Qwen/Qwen2.5-32B-Instruct"]

[[endpoint]]
name = "lan-ollama"
api = "ollama"
url = "http://10.0.0.5:11434"
models = ["qwen2.5:32b", "llama3.3"]
max_concurrent = 4

[[endpoint]]
name = "claude"
api = "anthropic"
url = "https://api.anthropic.com"
models = ["claude-sonnet-4-5"]
api_key_env = "ANTHROPIC_API_KEY"
price_in_per_mtok = 3.0
price_out_per_mtok = 15.0
requests_per_minute = 50

[escalation]
tiers = ["qwen2.5:7b", "qwen2.5:32b", "claude-sonnet-4-5"]
after_failures = 3
"#;

    #[test]
    fn endpoints_cards_and_tiers_read() {
        let c = RigConfig::parse(Path::new("rig.toml"), LLM_EXAMPLE).unwrap();
        assert_eq!(
            c.gpus[0].llm_server(),
            Some((Api::LlamaServer, "http://127.0.0.1:8080"))
        );
        let [vllm, lan, claude] = &c.endpoints[..] else {
            panic!("{:?}", c.endpoints)
        };
        assert_eq!(vllm.url, "http://127.0.0.1:8000");
        assert_eq!(vllm.max_concurrent, Some(1), "loopback defaults to 1");
        assert!(vllm.is_loopback() && !lan.is_loopback());
        assert_eq!(lan.max_concurrent, Some(4));
        assert_eq!(lan.models, ["qwen2.5:32b", "llama3.3:latest"]);
        assert!(lan.serves("llama3.3") && !vllm.serves("llama3.3"));
        assert_eq!(claude.max_concurrent, None, "remote defaults to unlimited");
        assert_eq!(claude.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
        assert_eq!(claude.requests_per_minute, Some(50));
        assert_eq!(claude.cost(2_000_000, 1_000_000), Some(21.0));
        assert_eq!(c.escalation.tiers.len(), 3);
        assert_eq!(c.escalation.after_failures, 3);
        let d = RigConfig::default();
        assert!(d.endpoints.is_empty() && d.escalation.tiers.is_empty());
        assert_eq!(d.escalation.after_failures, 2);
        let c = RigConfig::parse(
            Path::new("rig.toml"),
            "[[endpoint]]\nname = \"x\"\napi = \"llama-server\"\nurl = \"http://localhost:1\"\nmodels = [\"m\"]\nmax_concurrent = 0\n",
        )
        .unwrap();
        assert_eq!(c.endpoints[0].max_concurrent, None, "0 means unlimited");
    }

    #[test]
    fn models_read_with_their_sizes_and_bad_ones_name_the_line() {
        let c = RigConfig::parse(
            Path::new("rig.toml"),
            "[llm]\nvram_margin_mb = 300\n\n[[model]]\nname = \"qwen2.5:14b\"\nvram_mb = 10500\n\n[[model]]\nname = \"llama3.3\"\nvram_mb = 4000\n",
        )
        .unwrap();
        assert_eq!(c.llm.vram_margin_mb, 300);
        assert_eq!(c.model_vram_mb("qwen2.5:14b"), Some(10500));
        assert_eq!(c.model_vram_mb("llama3.3:latest"), Some(4000));
        assert_eq!(c.model_vram_mb("qwen2.5:7b"), None);
        assert_eq!(RigConfig::default().llm.vram_margin_mb, 512);
        let e = err("[logs]\n\n[[model]]\nname = \"a\"\nvram_mb = 0\n");
        assert_eq!(
            e,
            "rig.toml:3: [[model]] 'a:latest': vram_mb must be more than 0"
        );
        let e = err(
            "[[model]]\nname = \"a\"\nvram_mb = 1\n[[model]]\nname = \"a:latest\"\nvram_mb = 2\n",
        );
        assert!(
            e.starts_with("rig.toml:4: [[model]] name: 'a:latest' is declared twice"),
            "{e}"
        );
        let e = err("[[model]]\nname = \"a\"\n");
        assert!(e.contains("vram_mb"), "{e}");
    }

    fn err(text: &str) -> String {
        RigConfig::parse(Path::new("rig.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_llm_servers_name_the_file_line_and_key() {
        let ep = |extra: &str| {
            format!("[logs]\n\n[[endpoint]]\nname = \"e\"\napi = \"openai\"\nurl = \"https://h\"\nmodels = [\"m\"]\n{extra}")
        };
        for (extra, want) in [
            (
                "api_key_env = \"sk-123\"\n",
                "rig.toml:3: [[endpoint]] 'e': api_key_env: 'sk-123' is not",
            ),
            (
                "price_in_per_mtok = -1\n",
                "rig.toml:3: [[endpoint]] 'e': price_in_per_mtok: must be",
            ),
            (
                "requests_per_minute = 0\n",
                "rig.toml:3: [[endpoint]] 'e': requests_per_minute: must be",
            ),
            ("models = []\n", "rig.toml:"),
            ("colour = 1\n", "unknown field `colour`"),
        ] {
            let e = err(&ep(extra));
            assert!(e.starts_with(want) || e.contains(want), "{extra}: {e}");
        }
        let e = err(&ep("").replace("https://h", "h:80"));
        assert!(e.starts_with("rig.toml:3: [[endpoint]] 'e': url:"), "{e}");
        let e = err(&ep("").replace("openai", "gemini"));
        assert!(e.starts_with("rig.toml:5:") && e.contains("gemini"), "{e}");
        let e = err(&ep("").replace("openai", "anthropic"));
        assert!(
            e.contains("'e': api_key_env: the anthropic API needs a key"),
            "{e}"
        );
        let e = err(&format!("{}{}", ep(""), ep("").replace("[logs]\n", "")));
        assert!(
            e.contains("[[endpoint]] name: 'e' is declared twice"),
            "{e}"
        );
        let e = err("\n[[gpu]]\nindex = 0\nollama = \"http://a\"\nllama_server = \"http://b\"\n");
        assert!(
            e.starts_with("rig.toml:2: [[gpu]] index 0: ollama and llama_server:"),
            "{e}"
        );
        let e = err("[escalation]\ntiers = [\"a\", \"a\"]\n");
        assert_eq!(e, "rig.toml:1: escalation.tiers: 'a' is listed twice");
        let e = err("[escalation]\ntiers = [\"a\"]\nafter_failures = 0\n");
        assert_eq!(
            e,
            "rig.toml:1: escalation.after_failures: must be at least 1"
        );
    }
}
