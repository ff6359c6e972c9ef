//! The LLM servers of rig.toml that are not a card's: `[[endpoint]]` entries, the
//! kind of API each server speaks ([`Api`]), and the `[escalation]` tiers.
//!
//! A card's server (`[[gpu]] ollama` / `llama_server`) holds one model at a time
//! and is moved between the LLM and script states; an endpoint is always ready,
//! serves the models it lists, and is shared by every worker, so its limits
//! (`max_concurrent`, `requests_per_minute`) are the rig's, not a card's. API keys
//! never appear here: an endpoint names the environment variable that holds its
//! key (`api_key_env`), which the worker reads when it calls the server.

use std::net::IpAddr;

use serde::Deserialize;

/// The protocol an LLM server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Api {
    /// Ollama's `/api/*` (load, unload, `/api/ps`, chat).
    #[serde(rename = "ollama")]
    Ollama,
    /// llama.cpp's `llama-server` in router mode (`/models/*`, `/v1/chat/completions`).
    #[serde(rename = "llama-server")]
    LlamaServer,
    /// Any OpenAI-compatible server (vLLM, LM Studio, OpenAI): `/v1/chat/completions`.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`).
    #[serde(rename = "anthropic")]
    Anthropic,
}

impl Api {
    /// The name rig.toml uses (`ollama`, `llama-server`, `openai`, `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Ollama => "ollama",
            Api::LlamaServer => "llama-server",
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    /// Whether the server loads and unloads models on request (Ollama, llama-server);
    /// the others are endpoints whose models are always there.
    pub fn loads_models(self) -> bool {
        matches!(self, Api::Ollama | Api::LlamaServer)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[endpoint]]`: an LLM server not tied to a card.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Unique among the endpoints; a plan's `endpoint:` names it.
    pub name: String,
    pub api: Api,
    /// Base URL (`http(s)://host:port`, no trailing slash).
    pub url: String,
    /// The models it serves (for `api = "ollama"` in canonical form, `name:tag`).
    pub models: Vec<String>,
    /// Requests in flight at most; `None`: unlimited. Defaults to 1 for a loopback
    /// URL (one local server, one GPU) and unlimited otherwise; `0` in rig.toml
    /// means unlimited.
    pub max_concurrent: Option<u32>,
    /// The environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Price in the endpoint's currency per million prompt tokens.
    pub price_in_per_mtok: Option<f64>,
    /// Price per million completion tokens.
    pub price_out_per_mtok: Option<f64>,
    /// Requests per minute at most; `None`: no limit.
    pub requests_per_minute: Option<u32>,
}

impl Endpoint {
    /// Whether this endpoint serves `model` (Ollama names compare in canonical form).
    pub fn serves(&self, model: &str) -> bool {
        let want = self.model_name(model);
        self.models.contains(&want)
    }

    /// `model` as this endpoint's model list spells it.
    fn model_name(&self, model: &str) -> String {
        match self.api {
            Api::Ollama => rigmind_types::canonical_model(model),
            _ => model.to_string(),
        }
    }

    /// Whether the URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
    pub fn is_loopback(&self) -> bool {
        url_host(&self.url).is_ok_and(|h| host_is_loopback(&h))
    }

    /// What a request cost, when both prices are declared.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        let input = self.price_in_per_mtok?;
        let output = self.price_out_per_mtok?;
        Some((prompt_tokens as f64 * input + completion_tokens as f64 * output) / 1e6)
    }
}

/// `[escalation]`: the model tiers an llm task climbs when it keeps failing.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Models, smallest first; empty: no escalation.
    pub tiers: Vec<String>,
    /// Failures on one tier before the task moves to the next.
    pub after_failures: u32,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            tiers: Vec::new(),
            after_failures: 2,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    name: String,
    api: Api,
    url: String,
    models: Vec<String>,
    max_concurrent: Option<u32>,
    api_key_env: Option<String>,
    price_in_per_mtok: Option<f64>,
    price_out_per_mtok: Option<f64>,
    requests_per_minute: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEscalation {
    tiers: Option<Vec<String>>,
    after_failures: Option<u32>,
}

/// Checks a base URL: `http` or `https`, a host, no query or fragment. Returns the
/// host (brackets of an IPv6 address removed).
pub fn url_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("'{url}' is not an http:// or https:// URL"))?;
    if rest.contains(['?', '#']) {
        return Err(format!("'{url}': a base URL takes no query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    Ok(host.to_string())
}

fn host_is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks one `[[endpoint]]` and resolves its defaults; `Err` is the message
/// (the caller adds the file and line).
pub(crate) fn endpoint(raw: RawEndpoint) -> Result<Endpoint, String> {
    let at = format!("[[endpoint]] '{}'", raw.name);
    if raw.name.trim().is_empty() {
        return Err("[[endpoint]] name: must not be empty".into());
    }
    let url = raw.url.trim().trim_end_matches('/').to_string();
    let host = url_host(&url).map_err(|e| format!("{at}: url: {e}"))?;
    if raw.models.is_empty() || raw.models.iter().any(|m| m.trim().is_empty()) {
        return Err(format!("{at}: models: list at least one model, none empty"));
    }
    if let Some(var) = raw.api_key_env.as_deref().filter(|v| !is_env_name(v)) {
        return Err(format!(
            "{at}: api_key_env: '{var}' is not an environment variable name \
             (it names the variable that holds the key, not the key)"
        ));
    }
    if raw.api == Api::Anthropic && raw.api_key_env.is_none() {
        return Err(format!(
            "{at}: api_key_env: the anthropic API needs a key; name the variable that holds it"
        ));
    }
    for (key, price) in [
        ("price_in_per_mtok", raw.price_in_per_mtok),
        ("price_out_per_mtok", raw.price_out_per_mtok),
    ] {
        if price.is_some_and(|p| !p.is_finite() || p < 0.0) {
            return Err(format!("{at}: {key}: must be a number >= 0"));
        }
    }
    if raw.requests_per_minute == Some(0) {
        return Err(format!(
            "{at}: requests_per_minute: must be more than 0 (leave it out for no limit)"
        ));
    }
    let max_concurrent = match raw.max_concurrent {
        Some(0) => None,
        Some(n) => Some(n),
        None if host_is_loopback(&host) => Some(1),
        None => None,
    };
    let mut e = Endpoint {
        name: raw.name,
        api: raw.api,
        url,
        models: Vec::new(),
        max_concurrent,
        api_key_env: raw.api_key_env,
        price_in_per_mtok: raw.price_in_per_mtok,
        price_out_per_mtok: raw.price_out_per_mtok,
        requests_per_minute: raw.requests_per_minute,
    };
    e.models = raw.models.iter().map(|m| e.model_name(m.trim())).collect();
    Ok(e)
}

/// Checks `[escalation]`.
pub(crate) fn escalation(raw: RawEscalation) -> Result<Escalation, String> {
    let mut esc = Escalation::default();
    if let Some(n) = raw.after_failures {
        if n == 0 {
            return Err("escalation.after_failures: must be at least 1".into());
        }
        esc.after_failures = n;
    }
    let tiers = raw.tiers.unwrap_or_default();
    for (i, t) in tiers.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(format!("escalation.tiers: tier {} is empty", i + 1));
        }
        if tiers[..i].contains(t) {
            return Err(format!("escalation.tiers: '{t}' is listed twice"));
        }
    }
    esc.tiers = tiers;
    Ok(esc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_loopback() {
        assert_eq!(url_host("http://127.0.0.1:8080").unwrap(), "127.0.0.1");
        assert_eq!(url_host("https://u:p@api.x.com/v1").unwrap(), "api.x.com");
        assert_eq!(url_host("http://[::1]:80").unwrap(), "::1");
        for bad in ["127.0.0.1:80", "ftp://h", "http://", "http://h/?q=1"] {
            assert!(url_host(bad).is_err(), "{bad}");
        }
        for (host, lo) in [
            ("localhost", true),
            ("127.0.0.2", true),
            ("::1", true),
            ("10.0.0.1", false),
            ("api.openai.com", false),
        ] {
            assert_eq!(host_is_loopback(host), lo, "{host}");
        }
    }

    #[test]
    fn costs_need_both_prices() {
        let mut e = endpoint(RawEndpoint {
            name: "x".into(),
            api: Api::OpenAi,
            url: "https://api.example.com/".into(),
            models: vec!["m".into()],
            max_concurrent: None,
            api_key_env: None,
            price_in_per_mtok: Some(3.0),
            price_out_per_mtok: None,
            requests_per_minute: None,
        })
        .unwrap();
        assert_eq!(e.url, "https://api.example.com");
        assert_eq!(e.max_concurrent, None);
        assert_eq!(e.cost(1000, 1000), None);
        e.price_out_per_mtok = Some(15.0);
        assert_eq!(e.cost(1_000_000, 100_000), Some(4.5));
    }
}
