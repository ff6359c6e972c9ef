//! [`LlmError`]: what can go wrong talking to an LLM server (Ollama, llama-server,
//! an OpenAI-compatible server, Anthropic's API), and whether the task or the worker
//! is to blame.
//!
//! Every message names the kind of server and its URL; none ever holds an API key
//! (the clients scrub the key from anything a server echoes back).

use std::time::Duration;

use rigmind_config::Api;

/// How a message names the server: "the {noun} at URL".
fn noun(api: &Api) -> &'static str {
    match api {
        Api::Ollama => "Ollama server",
        Api::LlamaServer => "llama-server",
        Api::OpenAi => "OpenAI-compatible server",
        Api::Anthropic => "Anthropic API",
    }
}

/// An error from one of the LLM clients. Every message names the server kind and
/// URL, and the `detail`s name the request and model they are about.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The server does not have the model (HTTP 404, or a "not found" error).
    #[error("the {} at {url} does not have model {model:?}: {detail}", noun(.api))]
    UnknownModel {
        api: Api,
        url: String,
        model: String,
        detail: String,
    },
    /// No connection: refused, DNS failure, connect timeout, connection dropped
    /// before an answer.
    #[error("cannot reach the {} at {url}: {detail}", noun(.api))]
    Unreachable {
        api: Api,
        url: String,
        detail: String,
    },
    /// The whole request took longer than allowed.
    #[error("the {} at {url} did not finish answering within {after:?}", noun(.api))]
    Timeout {
        api: Api,
        url: String,
        after: Duration,
    },
    /// A 5xx, or any other non-2xx status not covered by another variant.
    #[error("the {} at {url} failed with HTTP {status}: {detail}", noun(.api))]
    Server {
        api: Api,
        url: String,
        status: u16,
        detail: String,
    },
    /// HTTP 400 (and 422): the request as written was refused.
    #[error("the {} at {url} rejected the request (HTTP {status}): {detail}", noun(.api))]
    BadRequest {
        api: Api,
        url: String,
        status: u16,
        detail: String,
    },
    /// An answer that does not follow the protocol: unparseable body, a stream that
    /// ended early, an error object in the middle of a stream.
    #[error("bad answer from the {} at {url}: {detail}", noun(.api))]
    Protocol {
        api: Api,
        url: String,
        detail: String,
    },
    /// The model was still loaded after unloading it and waiting.
    #[error("model {model:?} is still loaded on the {} at {url} after {after:?}", noun(.api))]
    StillLoaded {
        api: Api,
        url: String,
        model: String,
        after: Duration,
    },
    /// The base URL is not a usable `http(s)://` URL.
    #[error("bad {} URL {url:?}: {detail}", noun(.api))]
    BadUrl {
        api: Api,
        url: String,
        detail: String,
    },
    /// HTTP 401 or 403: the API key is missing, wrong or not allowed this.
    #[error("the {} at {url} refused the API key (HTTP {status}): {detail}", noun(.api))]
    Unauthorized {
        api: Api,
        url: String,
        status: u16,
        detail: String,
    },
    /// The environment variable that should hold the API key is unset or empty.
    #[error("the {} at {url} needs an API key, but environment variable {var} is not set", noun(.api))]
    NoApiKey { api: Api, url: String, var: String },
    /// HTTP 429: too many requests; `retry_after` is the server's `retry-after`.
    #[error("the {} at {url} is rate limiting (HTTP 429, retry after {retry_after:?}): {detail}", noun(.api))]
    RateLimited {
        api: Api,
        url: String,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// A chat for a model the server has but has not loaded (llama-server in router
    /// mode without autoload): the card was not moved to its LLM state first.
    #[error("model {model:?} is not loaded on the {} at {url}: {detail}", noun(.api))]
    NotLoaded {
        api: Api,
        url: String,
        model: String,
        detail: String,
    },
    /// The server tried to load the model and gave up (llama-server: the model's
    /// process exited).
    #[error("the {} at {url} failed to load model {model:?}: {detail}", noun(.api))]
    LoadFailed {
        api: Api,
        url: String,
        model: String,
        detail: String,
    },
}

impl LlmError {
    /// Definition errors are not retried (the task cannot run as written: unknown
    /// model, bad request); the rest are worker failures (retried).
    pub fn is_definition_error(&self) -> bool {
        matches!(
            self,
            LlmError::UnknownModel { .. } | LlmError::BadRequest { .. }
        )
    }

    /// The server URL the error is about.
    pub fn url(&self) -> &str {
        match self {
            LlmError::UnknownModel { url, .. }
            | LlmError::Unreachable { url, .. }
            | LlmError::Timeout { url, .. }
            | LlmError::Server { url, .. }
            | LlmError::BadRequest { url, .. }
            | LlmError::Protocol { url, .. }
            | LlmError::StillLoaded { url, .. }
            | LlmError::BadUrl { url, .. }
            | LlmError::Unauthorized { url, .. }
            | LlmError::NoApiKey { url, .. }
            | LlmError::RateLimited { url, .. }
            | LlmError::NotLoaded { url, .. }
            | LlmError::LoadFailed { url, .. } => url,
        }
    }

    /// How long the server asked us to wait before the next request (HTTP 429).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_task_faults_are_definition_errors() {
        let url = "http://127.0.0.1:1".to_string();
        let def = [
            LlmError::UnknownModel {
                api: Api::Ollama,
                url: url.clone(),
                model: "m".into(),
                detail: "d".into(),
            },
            LlmError::BadRequest {
                api: Api::Ollama,
                url: url.clone(),
                status: 400,
                detail: "d".into(),
            },
        ];
        let worker = [
            LlmError::Unreachable {
                api: Api::Ollama,
                url: url.clone(),
                detail: "d".into(),
            },
            LlmError::Timeout {
                api: Api::Ollama,
                url: url.clone(),
                after: Duration::from_secs(1),
            },
            LlmError::Server {
                api: Api::Ollama,
                url: url.clone(),
                status: 500,
                detail: "d".into(),
            },
            LlmError::Protocol {
                api: Api::Ollama,
                url: url.clone(),
                detail: "d".into(),
            },
            LlmError::StillLoaded {
                api: Api::Ollama,
                url: url.clone(),
                model: "m".into(),
                after: Duration::from_secs(1),
            },
            LlmError::BadUrl {
                api: Api::Ollama,
                url: url.clone(),
                detail: "d".into(),
            },
            LlmError::Unauthorized {
                api: Api::OpenAi,
                url: url.clone(),
                status: 401,
                detail: "d".into(),
            },
            LlmError::NoApiKey {
                api: Api::Anthropic,
                url: url.clone(),
                var: "KEY_VAR".into(),
            },
            LlmError::RateLimited {
                api: Api::Anthropic,
                url: url.clone(),
                retry_after: Some(Duration::from_secs(3)),
                detail: "d".into(),
            },
            LlmError::NotLoaded {
                api: Api::LlamaServer,
                url: url.clone(),
                model: "m".into(),
                detail: "d".into(),
            },
            LlmError::LoadFailed {
                api: Api::LlamaServer,
                url: url.clone(),
                model: "m".into(),
                detail: "d".into(),
            },
        ];
        assert!(def.iter().all(LlmError::is_definition_error));
        assert!(!worker.iter().any(LlmError::is_definition_error));
        for e in def.iter().chain(worker.iter()) {
            assert!(e.to_string().contains(&url), "{e}");
            assert_eq!(e.url(), url);
        }
    }

    #[test]
    fn messages_name_the_server_kind() {
        let e = |api| LlmError::UnknownModel {
            api,
            url: "http://h".into(),
            model: "m".into(),
            detail: "d".into(),
        };
        assert_eq!(
            e(Api::Ollama).to_string(),
            "the Ollama server at http://h does not have model \"m\": d"
        );
        assert!(e(Api::LlamaServer)
            .to_string()
            .starts_with("the llama-server at"));
        assert!(e(Api::OpenAi)
            .to_string()
            .starts_with("the OpenAI-compatible server at"));
        assert!(e(Api::Anthropic)
            .to_string()
            .starts_with("the Anthropic API at"));
        let r = LlmError::RateLimited {
            api: Api::OpenAi,
            url: "http://h".into(),
            retry_after: Some(Duration::from_secs(2)),
            detail: "slow down".into(),
        };
        assert_eq!(r.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e(Api::Ollama).retry_after(), None);
    }
}
