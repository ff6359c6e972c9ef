//! [`Backend`]: the one interface over the four kinds of LLM server, so the worker
//! loads, unloads, checks and chats the same way whatever the card or endpoint
//! runs.
//!
//! The kinds differ in what "load" means. Ollama and llama-server hold models on a
//! card and really load and unload them; OpenAI-compatible and Anthropic servers
//! are endpoints whose models are always there, so for them `load` and `unload`
//! do nothing and `status` is always [`ModelStatus::Loaded`].

use std::time::Duration;

use rigmind_config::{Api, Endpoint};

use crate::anthropic::AnthropicClient;
use crate::client::OllamaClient;
use crate::error::LlmError;
use crate::key::ApiKey;
use crate::llama::{LlamaServerClient, ModelStatus};
use crate::openai::OpenAiClient;
use crate::types::{ChatRequest, Generation};

/// One LLM server, of any kind.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An Ollama server; loads keep the model per `keep_alive`.
    Ollama {
        client: OllamaClient,
        keep_alive: String,
    },
    /// llama-server in router mode.
    LlamaServer(LlamaServerClient),
    /// An OpenAI-compatible endpoint.
    OpenAi(OpenAiClient),
    /// Anthropic's Messages API.
    Anthropic(AnthropicClient),
}

impl Backend {
    /// The server of a card: `api` is Ollama or llama-server (rig.toml's
    /// `[[gpu]] ollama` / `llama_server`); `keep_alive` is Ollama's.
    pub fn for_card(api: Api, url: &str, keep_alive: &str) -> Result<Self, LlmError> {
        match api {
            Api::Ollama => Ok(Backend::Ollama {
                client: OllamaClient::new(url)?,
                keep_alive: keep_alive.to_string(),
            }),
            Api::LlamaServer => Ok(Backend::LlamaServer(LlamaServerClient::new(url)?)),
            Api::OpenAi | Api::Anthropic => Err(LlmError::BadUrl {
                api,
                url: url.to_string(),
                detail: format!("a card's server is ollama or llama-server, not {api}"),
            }),
        }
    }

    /// The server of an `[[endpoint]]`, its key read now from the environment
    /// variable the endpoint names.
    pub fn for_endpoint(e: &Endpoint) -> Result<Self, LlmError> {
        let key = match &e.api_key_env {
            Some(var) => Some(ApiKey::from_env(var).ok_or_else(|| LlmError::NoApiKey {
                api: e.api,
                url: e.url.clone(),
                var: var.clone(),
            })?),
            None => None,
        };
        Self::with_key(e.api, &e.url, key)
    }

    /// A server of kind `api` at `url` with `key` (Ollama and llama-server take
    /// none; Anthropic needs one).
    pub fn with_key(api: Api, url: &str, key: Option<ApiKey>) -> Result<Self, LlmError> {
        match (api, key) {
            (Api::OpenAi, key) => Ok(Backend::OpenAi(OpenAiClient::new(url, key)?)),
            (Api::Anthropic, Some(key)) => Ok(Backend::Anthropic(AnthropicClient::new(url, key)?)),
            (Api::Anthropic, None) => Err(LlmError::NoApiKey {
                api,
                url: url.to_string(),
                var: "(none named: set api_key_env)".into(),
            }),
            (Api::Ollama | Api::LlamaServer, _) => Self::for_card(api, url, "-1"),
        }
    }

    /// The kind of server.
    pub fn api(&self) -> Api {
        match self {
            Backend::Ollama { .. } => Api::Ollama,
            Backend::LlamaServer(_) => Api::LlamaServer,
            Backend::OpenAi(_) => Api::OpenAi,
            Backend::Anthropic(_) => Api::Anthropic,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        match self {
            Backend::Ollama { client, .. } => client.base_url(),
            Backend::LlamaServer(c) => c.base_url(),
            Backend::OpenAi(c) => c.base_url(),
            Backend::Anthropic(c) => c.base_url(),
        }
    }

    /// Sets the connect and whole-request timeouts.
    pub fn with_timeouts(self, connect: Duration, request: Duration) -> Self {
        match self {
            Backend::Ollama { client, keep_alive } => Backend::Ollama {
                client: client.with_timeouts(connect, request),
                keep_alive,
            },
            Backend::LlamaServer(c) => Backend::LlamaServer(c.with_timeouts(connect, request)),
            Backend::OpenAi(c) => Backend::OpenAi(c.with_timeouts(connect, request)),
            Backend::Anthropic(c) => Backend::Anthropic(c.with_timeouts(connect, request)),
        }
    }

    /// Loads `model` and returns once it is loaded, with how long that took
    /// (zero for an endpoint).
    pub async fn load(&self, model: &str) -> Result<Duration, LlmError> {
        match self {
            Backend::Ollama { client, keep_alive } => client.load(model, keep_alive).await,
            Backend::LlamaServer(c) => c.load(model).await,
            Backend::OpenAi(_) | Backend::Anthropic(_) => Ok(Duration::ZERO),
        }
    }

    /// Unloads `model` and returns once its memory is back, waiting up to `wait`.
    pub async fn unload(&self, model: &str, wait: Duration) -> Result<Duration, LlmError> {
        match self {
            Backend::Ollama { client, .. } => client.unload(model, wait).await,
            Backend::LlamaServer(c) => c.unload(model, wait).await,
            Backend::OpenAi(_) | Backend::Anthropic(_) => Ok(Duration::ZERO),
        }
    }

    /// Where `model` stands. Ollama shows only loaded models (`/api/ps`), so it
    /// never says Loading or Failed.
    pub async fn status(&self, model: &str) -> Result<ModelStatus, LlmError> {
        match self {
            Backend::Ollama { client, .. } => Ok(if client.is_loaded(model).await? {
                ModelStatus::Loaded
            } else {
                ModelStatus::Unloaded
            }),
            Backend::LlamaServer(c) => c.status(model).await,
            Backend::OpenAi(_) | Backend::Anthropic(_) => Ok(ModelStatus::Loaded),
        }
    }

    /// One chat turn, streamed or not as `req.stream` says; chunks go to
    /// `on_token` (a non-streamed answer whole).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Generation, LlmError> {
        match self {
            Backend::Ollama { client, .. } => client.chat(req, on_token).await,
            Backend::LlamaServer(c) => c.chat(req, on_token).await,
            Backend::OpenAi(c) => c.chat(req, on_token).await,
            Backend::Anthropic(c) => c.chat(req, on_token).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: T) {}

    /// The worker and the brain run these on a multi-threaded runtime.
    #[test]
    fn every_call_is_send() {
        let b = Backend::with_key(Api::OpenAi, "http://127.0.0.1:1", None).unwrap();
        let req = ChatRequest::default();
        let mut sink = |_: &str| {};
        send(b.load("m"));
        send(b.unload("m", Duration::ZERO));
        send(b.status("m"));
        send(b.chat(&req, &mut sink));
    }
}
