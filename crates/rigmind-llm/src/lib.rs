//! rigmind's LLM side: the Ollama client ([`OllamaClient`]), the fenced prompt of
//! llm tasks ([`prompt::fenced_prompt`]) and training-sample records
//! ([`samples::append_sample`]).
//!
//! Errors are [`LlmError`]s; [`LlmError::is_definition_error`] tells a task that
//! cannot run as written (unknown model, bad request: not retried) from a worker
//! failure (retried).

mod client;
mod error;
pub mod prompt;
pub mod samples;
mod types;

pub use client::OllamaClient;
pub use error::LlmError;
pub use prompt::fenced_prompt;
pub use samples::{append_sample, TrainingSample};
pub use types::{ChatMessage, ChatRequest, GenerateRequest, Generation, RunningModel};
