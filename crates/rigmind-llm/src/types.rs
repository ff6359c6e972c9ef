//! The requests and results of [`OllamaClient`](crate::OllamaClient), in rigmind's
//! terms (the wire format lives in the client).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One `/api/generate` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Model name, e.g. `qwen2.5:7b` (no tag means `:latest`).
    pub model: String,
    /// The full prompt (for llm tasks: the fenced prompt).
    pub prompt: String,
    /// System prompt, overriding the model's.
    pub system: Option<String>,
    /// Stream the answer as NDJSON (tokens reach `on_token` as they come).
    pub stream: bool,
    /// How long the model stays loaded afterwards: a duration (`"5m"`), seconds
    /// (`"300"`), `"-1"` (forever) or `"0"` (unload now). None: the server default.
    pub keep_alive: Option<String>,
    /// Model options (`temperature`, `num_predict`, `seed`, ...).
    pub options: Option<serde_json::Value>,
}

impl GenerateRequest {
    /// A non-streaming request with no system prompt, options or keep_alive.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        GenerateRequest {
            model: model.into(),
            prompt: prompt.into(),
            ..Default::default()
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// One `/api/chat` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Stream the answer as NDJSON.
    pub stream: bool,
    /// As in [`GenerateRequest::keep_alive`].
    pub keep_alive: Option<String>,
    /// Model options.
    pub options: Option<serde_json::Value>,
}

/// The result of one generation (generate or chat), whichever server gave it:
/// `prompt_eval_count` and `eval_count` are the prompt and completion tokens
/// (OpenAI's `usage.prompt_tokens`/`completion_tokens`, Anthropic's
/// `input_tokens`/`output_tokens`), `response` the raw text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The model that answered, as the server named it.
    pub model: String,
    /// The whole response text.
    pub response: String,
    /// Why generation stopped: `stop`, `length`, `load`, `unload`.
    pub done_reason: Option<String>,
    /// Tokens generated.
    pub eval_count: Option<u64>,
    /// Time spent generating, in nanoseconds.
    pub eval_duration_ns: Option<u64>,
    /// Tokens in the prompt.
    pub prompt_eval_count: Option<u64>,
    /// Time spent loading the model for this request, in nanoseconds.
    pub load_duration_ns: Option<u64>,
    /// Time the whole request took on the server, in nanoseconds.
    pub total_duration_ns: Option<u64>,
}

impl Generation {
    /// Generation speed: `eval_count / eval_duration` in tokens per second (as
    /// Ollama's docs compute it); None when either is missing or zero.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let count = self.eval_count.filter(|c| *c > 0)?;
        let ns = self.eval_duration_ns.filter(|d| *d > 0)?;
        Some(count as f64 * 1e9 / ns as f64)
    }
}

/// The client's own clock of one generation, for servers that report no
/// durations (OpenAI, Anthropic): the speed is then the completion tokens over
/// the time from the first token to the end.
pub(crate) struct GenClock {
    started: Instant,
    first_token: Option<Instant>,
}

impl GenClock {
    /// Starts now (when the answer's headers arrived).
    pub(crate) fn start() -> Self {
        GenClock {
            started: Instant::now(),
            first_token: None,
        }
    }

    /// Notes that a token arrived (only the first counts).
    pub(crate) fn token(&mut self) {
        self.first_token.get_or_insert_with(Instant::now);
    }

    /// Sets the total duration, and the generation time unless the server gave it.
    pub(crate) fn finish(&self, g: &mut Generation) {
        let end = Instant::now();
        g.total_duration_ns = Some(nanos(end - self.started));
        if g.eval_duration_ns.is_none() && g.eval_count.is_some() {
            g.eval_duration_ns = Some(nanos(end - self.first_token.unwrap_or(self.started)));
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64
}

/// A model loaded on the server, from `/api/ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningModel {
    /// Name with tag, e.g. `qwen2.5:7b`.
    pub name: String,
    /// Usually the same as `name`.
    #[serde(default)]
    pub model: String,
    /// Bytes of memory the model takes.
    #[serde(default)]
    pub size: u64,
    /// Of which in GPU memory.
    #[serde(default)]
    pub size_vram: u64,
    /// When it unloads (RFC 3339); centuries away for keep_alive -1.
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl RunningModel {
    /// Whether this entry is `model` (a name without a tag means `:latest`).
    pub fn is(&self, model: &str) -> bool {
        let want = with_tag(model);
        [&self.name, &self.model]
            .iter()
            .any(|n| !n.is_empty() && with_tag(n).eq_ignore_ascii_case(&want))
    }
}

fn with_tag(name: &str) -> String {
    rigmind_types::canonical_model(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_second_needs_both_numbers() {
        let g = Generation {
            eval_count: Some(100),
            eval_duration_ns: Some(2_000_000_000),
            ..Default::default()
        };
        assert_eq!(g.tokens_per_second(), Some(50.0));
        let g = Generation {
            eval_count: Some(100),
            ..Default::default()
        };
        assert_eq!(g.tokens_per_second(), None);
        let g = Generation {
            eval_count: Some(0),
            eval_duration_ns: Some(5),
            ..Default::default()
        };
        assert_eq!(g.tokens_per_second(), None);
    }

    #[test]
    fn running_model_matches_with_implicit_latest() {
        let m = RunningModel {
            name: "llama3.2:latest".into(),
            model: "llama3.2:latest".into(),
            ..Default::default()
        };
        assert!(m.is("llama3.2"));
        assert!(m.is("LLAMA3.2:latest"));
        assert!(!m.is("llama3.2:1b"));
        let m = RunningModel {
            name: "qwen2.5:7b".into(),
            ..Default::default()
        };
        assert!(m.is("qwen2.5:7b"));
        assert!(!m.is("qwen2.5"));
    }
}
