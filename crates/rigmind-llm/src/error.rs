//! [`LlmError`]: what can go wrong talking to an Ollama server, and whether the task
//! or the worker is to blame.

use std::time::Duration;

/// An error from [`OllamaClient`](crate::OllamaClient). Every message names the
/// server URL, and the `detail`s name the request and model they are about.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The server does not have the model (HTTP 404, or a "not found" error line).
    #[error("the Ollama server at {url} does not have model {model:?}: {detail}")]
    UnknownModel {
        url: String,
        model: String,
        detail: String,
    },
    /// No connection: refused, DNS failure, connect timeout, connection dropped
    /// before an answer.
    #[error("cannot reach the Ollama server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The whole request took longer than allowed.
    #[error("the Ollama server at {url} did not finish answering within {after:?}")]
    Timeout { url: String, after: Duration },
    /// A 5xx, or any other non-2xx status that is neither 404 nor 400.
    #[error("the Ollama server at {url} failed with HTTP {status}: {detail}")]
    Server {
        url: String,
        status: u16,
        detail: String,
    },
    /// HTTP 400: the request as written was refused.
    #[error("the Ollama server at {url} rejected the request (HTTP {status}): {detail}")]
    BadRequest {
        url: String,
        status: u16,
        detail: String,
    },
    /// An answer that does not follow the protocol: unparseable body, a stream that
    /// ended before `done`, an `{"error": ...}` line in the middle of a stream.
    #[error("bad answer from the Ollama server at {url}: {detail}")]
    Protocol { url: String, detail: String },
    /// The model was still listed by `/api/ps` after unloading it and waiting.
    #[error("model {model:?} is still loaded on the Ollama server at {url} after {after:?}")]
    StillLoaded {
        url: String,
        model: String,
        after: Duration,
    },
    /// The base URL is not a usable `http(s)://` URL.
    #[error("bad Ollama server URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
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
            | LlmError::BadUrl { url, .. } => url,
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
                url: url.clone(),
                model: "m".into(),
                detail: "d".into(),
            },
            LlmError::BadRequest {
                url: url.clone(),
                status: 400,
                detail: "d".into(),
            },
        ];
        let worker = [
            LlmError::Unreachable {
                url: url.clone(),
                detail: "d".into(),
            },
            LlmError::Timeout {
                url: url.clone(),
                after: Duration::from_secs(1),
            },
            LlmError::Server {
                url: url.clone(),
                status: 500,
                detail: "d".into(),
            },
            LlmError::Protocol {
                url: url.clone(),
                detail: "d".into(),
            },
            LlmError::StillLoaded {
                url: url.clone(),
                model: "m".into(),
                after: Duration::from_secs(1),
            },
            LlmError::BadUrl {
                url: url.clone(),
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
}
