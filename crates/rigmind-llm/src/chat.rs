//! One chat turn over a [`Site`], as the OpenAI and Anthropic clients make it:
//! post the request, then read either one whole answer or a stream of server-sent
//! events into a [`Generation`]. What differs between the two APIs (the request,
//! how an answer or an event reads, what ends a stream) is a [`ChatWire`]; the
//! clients' shared public methods come from [`chat_client_methods`].

use serde_json::Value;

use crate::error::LlmError;
use crate::http::{Call, Site};
use crate::types::{ChatRequest, Generation};

/// What a [`ChatWire`] reads with: the server, the request (for errors), and
/// where each piece of text goes as it comes.
pub(crate) struct Turn<'a> {
    pub(crate) site: &'a Site,
    pub(crate) call: &'a Call<'a>,
    pub(crate) on_token: &'a mut (dyn FnMut(&str) + Send),
}

/// An API's side of a chat turn: the answer read so far, and how to read more.
pub(crate) trait ChatWire: Send {
    /// The request, for error messages (`"chat: POST /v1/messages"`).
    const WHAT: &'static str;
    /// What ends a stream, for the error when it ends without it.
    const END: &'static str;

    /// Nothing read yet; the clock starts.
    fn start() -> Self;

    /// The HTTP request for `req` on `site`: URL, headers, key and body.
    fn request(site: &Site, req: &ChatRequest) -> reqwest::RequestBuilder;

    /// Reads a whole (non-streamed) answer.
    fn whole(&mut self, turn: &mut Turn<'_>, answer: Value) -> Result<(), LlmError>;

    /// Reads one event's data; true once the stream is over.
    fn event(&mut self, turn: &mut Turn<'_>, data: &str) -> Result<bool, LlmError>;

    /// The generation, its speed measured if the server gave none.
    fn finish(self) -> Generation;
}

/// One chat turn: streamed when `req.stream`, else one answer.
pub(crate) async fn chat<W: ChatWire>(
    site: &Site,
    req: &ChatRequest,
    on_token: &mut (dyn FnMut(&str) + Send),
) -> Result<Generation, LlmError> {
    let call = site.call(W::WHAT, Some(&req.model));
    let resp = site.send(&call, W::request(site, req)).await?;
    let mut acc = W::start();
    let mut turn = Turn {
        site,
        call: &call,
        on_token,
    };
    if req.stream {
        site.for_each_event(&call, resp, W::END, &mut |data| acc.event(&mut turn, data))
            .await?;
    } else {
        let v = site.json_body(&call, resp).await?;
        acc.whole(&mut turn, v)?;
    }
    Ok(acc.finish())
}

/// The public methods of a client that is one `site` speaking the chat API of
/// `$wire` (a [`ChatWire`]): `with_timeouts`, `base_url` and `chat`.
macro_rules! chat_client_methods {
    ($wire:ty) => {
        /// Sets the connect timeout and the whole-request timeout (30 min by default).
        pub fn with_timeouts(
            mut self,
            connect: std::time::Duration,
            request: std::time::Duration,
        ) -> Self {
            self.site.set_timeouts(connect, request);
            self
        }

        /// The base URL, without a trailing slash.
        pub fn base_url(&self) -> &str {
            &self.site.base
        }

        /// One chat turn: streamed when `req.stream` (each piece of text passed to
        /// `on_token` as it comes), else one answer (passed to `on_token` whole).
        /// `keep_alive` is Ollama's and not sent.
        pub async fn chat(
            &self,
            req: &$crate::types::ChatRequest,
            on_token: &mut (dyn FnMut(&str) + Send),
        ) -> Result<$crate::types::Generation, $crate::error::LlmError> {
            $crate::chat::chat::<$wire>(&self.site, req, on_token).await
        }
    };
}
pub(crate) use chat_client_methods;
