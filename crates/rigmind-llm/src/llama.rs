//! [`LlamaServerClient`]: llama.cpp's `llama-server` in router mode, which holds
//! models the way an Ollama card does: explicitly loaded and unloaded.
//!
//! Wire facts (llama.cpp `tools/server/README.md`, "Using multiple models", and
//! `/work/shared/notes/llama-server-facts.md`, checked on this machine): model ids
//! are the gguf file names without `.gguf`; `GET /models` lists
//! `{"data": [{"id", "status": {"value": "unloaded|loading|loaded|sleeping|downloading",
//! "failed": true, "exit_code": N}}]}`; `POST /models/load {"model"}` and
//! `POST /models/unload {"model"}` answer `{"success": true}` at once and work in
//! the background (each loaded model is a child process; unloaded means that
//! process has exited), so both are followed here by polling `/models`. Loading a
//! running model and unloading a stopped one are 400s, taken here as "already
//! done". Chat goes through the OpenAI-compatible `/v1/chat/completions`; run
//! with `--no-models-autoload`, a chat for an unloaded model is a 400 "model is
//! not loaded" ([`LlmError::NotLoaded`]).

use std::time::{Duration, Instant};

use rigmind_config::Api;
use serde::Deserialize;
use serde_json::json;

use crate::error::LlmError;
use crate::http::{snippet, Site};
use crate::openai::OpenAiClient;
use crate::types::{ChatRequest, Generation};

const POLL: Duration = Duration::from_millis(100);

/// Where a model stands on a server that loads models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Loaded and answering (an endpoint's models are always loaded). A sleeping
    /// llama-server model counts as loaded: its process is there and wakes on the
    /// next request.
    Loaded,
    /// Being loaded (or downloaded).
    Loading,
    /// Not loaded; its process (and memory) is gone.
    Unloaded,
    /// The last load failed; the text says how (e.g. the exit code).
    Failed(String),
}

/// A client for one llama-server in router mode (cheap to clone).
#[derive(Debug, Clone)]
pub struct LlamaServerClient {
    site: Site,
    chat: OpenAiClient,
}

#[derive(Debug, Deserialize)]
struct WireModels {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    status: WireStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireStatus {
    value: String,
    failed: bool,
    exit_code: Option<i64>,
}

impl WireStatus {
    fn status(&self) -> ModelStatus {
        match self.value.as_str() {
            "loaded" | "sleeping" => ModelStatus::Loaded,
            "loading" | "downloading" => ModelStatus::Loading,
            _ if self.failed => ModelStatus::Failed(match self.exit_code {
                Some(c) => format!("the model's process exited with code {c}"),
                None => "the load failed".into(),
            }),
            _ => ModelStatus::Unloaded,
        }
    }
}

impl LlamaServerClient {
    /// A client for the router at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self, LlmError> {
        let site = Site::new(Api::LlamaServer, base_url, None)?;
        Ok(LlamaServerClient {
            chat: OpenAiClient::on(site.clone()),
            site,
        })
    }

    /// Sets the connect timeout and the whole-request timeout (which also bounds
    /// how long a load is waited for).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.site.set_timeouts(connect, request);
        self.chat = OpenAiClient::on(self.site.clone());
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.site.base
    }

    /// Every model the router knows, with its status (`GET /models`).
    pub async fn models(&self) -> Result<Vec<(String, ModelStatus)>, LlmError> {
        let mut call = self.site.call("GET /models", None);
        call.timeout = self.site.control_timeout();
        let body = self.site.get_bytes(&call, "/models").await?;
        let m: WireModels = serde_json::from_slice(&body).map_err(|e| {
            self.site.protocol(
                &call,
                format!("unparseable answer ({e}): {}", snippet(&body)),
            )
        })?;
        Ok(m.data
            .into_iter()
            .map(|m| (m.id, m.status.status()))
            .collect())
    }

    /// Where `model` stands; [`LlmError::UnknownModel`] when the router lacks it.
    pub async fn status(&self, model: &str) -> Result<ModelStatus, LlmError> {
        let models = self.models().await?;
        models
            .into_iter()
            .find(|(id, _)| id == model)
            .map(|(_, s)| s)
            .ok_or_else(|| LlmError::UnknownModel {
                api: Api::LlamaServer,
                url: self.site.base.clone(),
                model: model.to_string(),
                detail: "GET /models does not list it".into(),
            })
    }

    /// Loads `model` and waits until `/models` says it is loaded; returns how long
    /// that took (the load time). A model already loaded returns at once.
    pub async fn load(&self, model: &str) -> Result<Duration, LlmError> {
        let start = Instant::now();
        if self.status(model).await? == ModelStatus::Loaded {
            return Ok(start.elapsed());
        }
        self.post_models("load: POST /models/load", "/models/load", model)
            .await?;
        loop {
            match self.status(model).await? {
                ModelStatus::Loaded => break,
                ModelStatus::Failed(why) => {
                    return Err(LlmError::LoadFailed {
                        api: Api::LlamaServer,
                        url: self.site.base.clone(),
                        model: model.to_string(),
                        detail: why,
                    })
                }
                _ if start.elapsed() >= self.site.request_timeout => {
                    return Err(LlmError::Timeout {
                        api: Api::LlamaServer,
                        url: self.site.base.clone(),
                        after: self.site.request_timeout,
                    })
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
        tracing::debug!(url = %self.site.base, model, took_ms = start.elapsed().as_millis() as u64, "llama-server load");
        Ok(start.elapsed())
    }

    /// Unloads `model` and waits, up to `wait`, until its process is gone
    /// (`/models` says unloaded); [`LlmError::StillLoaded`] if it is not.
    pub async fn unload(&self, model: &str, wait: Duration) -> Result<Duration, LlmError> {
        let start = Instant::now();
        if self.status(model).await? != ModelStatus::Unloaded {
            self.post_models("unload: POST /models/unload", "/models/unload", model)
                .await?;
        }
        self.site
            .wait_unloaded(model, start, start, wait, || async {
                Ok(matches!(
                    self.status(model).await?,
                    ModelStatus::Unloaded | ModelStatus::Failed(_)
                ))
            })
            .await
    }

    /// Posts `{"model"}` to a `/models/*` endpoint. A 400 means "already there"
    /// (loading a running model, unloading a stopped one): the status poll that
    /// follows tells the truth either way.
    async fn post_models(
        &self,
        what: &'static str,
        path: &str,
        model: &str,
    ) -> Result<(), LlmError> {
        let call = self.site.call(what, Some(model));
        let req = self
            .site
            .http
            .post(format!("{}{path}", self.site.base))
            .json(&json!({ "model": model }));
        match self.site.send(&call, req).await {
            Ok(_) | Err(LlmError::BadRequest { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One chat turn through `/v1/chat/completions` (see [`OpenAiClient::chat`]);
    /// the speed is llama-server's own `timings`.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        on_token: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Generation, LlmError> {
        self.chat.chat(req, on_token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read() {
        let s = |v: serde_json::Value| serde_json::from_value::<WireStatus>(v).unwrap().status();
        assert_eq!(
            s(json!({"value": "loaded", "args": []})),
            ModelStatus::Loaded
        );
        assert_eq!(s(json!({"value": "loading"})), ModelStatus::Loading);
        assert_eq!(s(json!({"value": "unloaded"})), ModelStatus::Unloaded);
        assert_eq!(s(json!({"value": "sleeping"})), ModelStatus::Loaded);
        assert_eq!(
            s(json!({"value": "unloaded", "failed": true, "exit_code": 1})),
            ModelStatus::Failed("the model's process exited with code 1".into())
        );
    }
}
