//! rigmind's LLM side: one interface ([`Backend`]) over four kinds of server, each
//! with its own client: Ollama ([`OllamaClient`]), llama.cpp's llama-server in
//! router mode ([`LlamaServerClient`]), OpenAI-compatible servers
//! ([`OpenAiClient`]) and Anthropic's Messages API ([`AnthropicClient`]); the
//! fenced prompt of llm tasks ([`prompt::fenced_prompt`]); and training-sample
//! records ([`samples::append_sample`]). `docs/llm.md` has the wire facts and their
//! sources.
//!
//! Errors are [`LlmError`]s; [`LlmError::is_definition_error`] tells a task that
//! cannot run as written (unknown model, bad request: not retried) from a worker
//! failure (retried).

mod anthropic;
mod backend;
mod chat;
mod client;
mod error;
mod http;
mod key;
mod llama;
mod openai;
pub mod prompt;
pub mod samples;
mod sse;
mod types;

pub use anthropic::{AnthropicClient, ANTHROPIC_VERSION};
pub use backend::Backend;
pub use client::OllamaClient;
pub use error::LlmError;
pub use key::{ApiKey, REDACTED};
pub use llama::{LlamaServerClient, ModelStatus};
pub use openai::OpenAiClient;
pub use prompt::fenced_prompt;
pub use rigmind_config::Api;
pub use samples::{append_sample, TrainingSample};
pub use types::{ChatMessage, ChatRequest, GenerateRequest, Generation, RunningModel};
