//! The shared vocabulary of rigmind.
//!
//! Everything that the plan parser, the queue files, the brain and the workers must
//! agree on word for word lives here: the task classes, the executors, the duration
//! syntax users write (`90s`, `30m`, `2h`, plain seconds) and the keyword rules that
//! infer a missing `task_class` (plan-format.md, "Missing task_class"), the
//! readings a worker publishes (the `readings` module), and the open word sets of
//! the files (the `words` module: [`TaskType`], the [`open_words!`] macro).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod readings;
mod words;

pub use readings::{meminfo_path, CpuTemp, GpuInfo, HostMemory, MEMINFO_ENV};
pub use words::TaskType;

/// Environment variable that holds a fanned-out task's for_each item. A plan's
/// `{item}` in a `command` becomes a quoted reference to it, so the value reaches
/// the shell as data, never as code.
pub const ITEM_ENV: &str = "RIGMIND_ITEM";
/// Environment variable that holds the item's stem (`{stem}`).
pub const STEM_ENV: &str = "RIGMIND_STEM";
/// Environment variable that holds the item's 0-based index (`{index}`).
pub const INDEX_ENV: &str = "RIGMIND_INDEX";

/// A model's name as Ollama lists it: `:latest` added when the last part of the
/// name has no tag (`qwen2.5` is `qwen2.5:latest`). Names are compared in this form
/// everywhere, so a rig.toml or plan that leaves the tag out matches `/api/ps`.
pub fn canonical_model(name: &str) -> String {
    let name = name.trim();
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The state of a worker's GPU (queue-layout.md; the seed system's names).
///
/// A card is in its LLM state from the moment a load starts until its model is gone
/// (`booting_llm`, `llm_ready`, `llm_busy`), and in its script state otherwise. By
/// default the two exclude each other: a card with its model loaded runs no script
/// task, and a card without it runs no llm task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuState {
    /// No model loaded and no GPU task running.
    Idle,
    /// The model is being loaded (a `load_llm` task runs).
    BootingLlm,
    /// The model is loaded; no llm task runs.
    LlmReady,
    /// The model is loaded and an llm task runs.
    LlmBusy,
    /// The model is being unloaded to free the card for script work.
    BootingScript,
    /// A script task runs; no model is loaded.
    ScriptBusy,
}

impl GpuState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::BootingLlm => "booting_llm",
            Self::LlmReady => "llm_ready",
            Self::LlmBusy => "llm_busy",
            Self::BootingScript => "booting_script",
            Self::ScriptBusy => "script_busy",
        }
    }

    /// Whether the card holds (or is getting) its model.
    pub fn is_llm(self) -> bool {
        matches!(self, Self::BootingLlm | Self::LlmReady | Self::LlmBusy)
    }
}

impl fmt::Display for GpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of work a task is, which decides which worker may run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskClass {
    /// Plain CPU work; any worker runs it.
    Cpu,
    /// GPU work without an LLM (Whisper, embeddings, OCR).
    Script,
    /// A request to the LLM server of the worker's GPU.
    Llm,
    /// Reserved for the brain's resource manager (`load_llm` / `unload_llm`).
    Resource,
}

impl TaskClass {
    /// Every class, in the order used for display.
    pub const ALL: [TaskClass; 4] = [Self::Cpu, Self::Script, Self::Llm, Self::Resource];

    /// The spelling used in plans, task files and command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Script => "script",
            Self::Llm => "llm",
            Self::Resource => "resource",
        }
    }

    /// The task-file `type` that goes with this class (queue-layout.md).
    pub fn task_type(self) -> TaskType {
        match self {
            Self::Cpu | Self::Script => TaskType::Shell,
            Self::Llm => TaskType::Llm,
            Self::Resource => TaskType::Resource,
        }
    }
}

impl fmt::Display for TaskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a task class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task class '{0}' (expected cpu, script or llm)")]
pub struct UnknownClass(pub String);

impl FromStr for TaskClass {
    type Err = UnknownClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "script" => Ok(Self::Script),
            "llm" => Ok(Self::Llm),
            "resource" => Ok(Self::Resource),
            _ => Err(UnknownClass(s.trim().to_string())),
        }
    }
}

/// Who runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// A worker claims it from `tasks/queue/`.
    #[default]
    Worker,
    /// The brain runs it itself (cpu tasks only).
    Brain,
}

impl Executor {
    /// The spelling used in plans and task files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Brain => "brain",
        }
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Executor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "worker" => Ok(Self::Worker),
            "brain" => Ok(Self::Brain),
            other => Err(format!(
                "unknown executor '{other}' (expected worker or brain)"
            )),
        }
    }
}

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration '{0}' (expected e.g. 90s, 30m, 2h or plain seconds)")]
pub struct BadDuration(pub String);

/// Parses the duration syntax of plans and rig.toml into seconds.
///
/// Accepts plain seconds (`45`, `1.5`) or a number with one unit among `ms`, `s`, `m`,
/// `h`, `d`; spaces between number and unit are allowed. Negative, empty, non-finite
/// values are refused.
pub fn parse_duration(text: &str) -> Result<f64, BadDuration> {
    let t = text.trim();
    let bad = || BadDuration(t.to_string());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return Err(bad()),
    };
    let secs = value * factor;
    // A hundred years is as long as anything here needs to wait.
    if !secs.is_finite() || !(0.0..=100.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(secs)
}

/// Formats seconds the way a person writes them back (`90s`, `30m`, `2h`, `1.5s`).
pub fn format_duration(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

/// Infers the class of a task that does not say it, by plan-format.md's keyword rules.
///
/// `script` when the command mentions whisper, transcrib, embed, cuda or gpu; `llm`
/// when the task has a prompt or its command mentions ollama, generate or llm; `cpu`
/// otherwise. The script rule is checked first because a Whisper command that also
/// says "generate" is still GPU script work.
pub fn infer_class(command: Option<&str>, has_prompt: bool) -> TaskClass {
    let cmd = command.unwrap_or("").to_ascii_lowercase();
    const SCRIPT: [&str; 5] = ["whisper", "transcrib", "embed", "cuda", "gpu"];
    const LLM: [&str; 3] = ["ollama", "generate", "llm"];
    if SCRIPT.iter().any(|k| cmd.contains(k)) {
        TaskClass::Script
    } else if has_prompt || LLM.iter().any(|k| cmd.contains(k)) {
        TaskClass::Llm
    } else {
        TaskClass::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("30m").unwrap(), 1800.0);
        assert_eq!(parse_duration("2h").unwrap(), 7200.0);
        assert_eq!(parse_duration("45").unwrap(), 45.0);
        assert_eq!(parse_duration(" 1.5 s ").unwrap(), 1.5);
        assert_eq!(parse_duration("250ms").unwrap(), 0.25);
        for bad in ["", "s", "ten", "5x", "-3", "1..2s", "3 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format_duration(7200.0), "2h");
        assert_eq!(format_duration(1800.0), "30m");
        assert_eq!(format_duration(90.0), "90s");
    }

    #[test]
    fn class_inference_follows_the_spec_keywords() {
        assert_eq!(
            infer_class(Some("python whisper.py a.mp3"), false),
            TaskClass::Script
        );
        assert_eq!(
            infer_class(Some("./transcribe.sh"), false),
            TaskClass::Script
        );
        assert_eq!(
            infer_class(Some("make-embeddings"), false),
            TaskClass::Script
        );
        assert_eq!(
            infer_class(Some("nvidia CUDA probe"), false),
            TaskClass::Script
        );
        assert_eq!(infer_class(Some("ollama run x"), false), TaskClass::Llm);
        assert_eq!(infer_class(Some("echo hi"), true), TaskClass::Llm);
        assert_eq!(infer_class(Some("echo hi"), false), TaskClass::Cpu);
        assert_eq!(infer_class(None, false), TaskClass::Cpu);
    }

    #[test]
    fn class_words_round_trip() {
        for c in TaskClass::ALL {
            assert_eq!(c.as_str().parse::<TaskClass>().unwrap(), c);
        }
        assert!("gpu".parse::<TaskClass>().is_err());
        assert_eq!("Brain".parse::<Executor>().unwrap(), Executor::Brain);
    }
}
