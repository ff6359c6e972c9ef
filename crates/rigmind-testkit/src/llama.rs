//! A real llama.cpp `llama-server` for the tests that need one: where
//! `scripts/setup-llm.sh` put it and the model ([`llm_dir`]), and a router
//! process that is stopped on drop ([`Router`]).

use std::path::PathBuf;
use std::process::Child;

/// The model `scripts/setup-llm.sh` fetches (SmolLM2-135M-Instruct).
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// `RIGMIND_LLM_DIR` (default `<workspace>/.cache/llm`) if it holds the server and
/// [`MODEL`]; otherwise records a skip of `test` and gives None.
pub fn llm_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("RIGMIND_LLM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/llm"));
    let ok = dir.join("bin/llama-server").is_file()
        && dir.join(format!("models/{MODEL}.gguf")).is_file();
    if !ok {
        crate::skip(
            test,
            "no llama-server and model in RIGMIND_LLM_DIR (run scripts/setup-llm.sh)",
        );
    }
    ok.then_some(dir)
}

/// A router process and its base URL, stopped with SIGTERM (which stops its model
/// processes too) on drop.
pub struct Router {
    /// The router process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        crate::wait_exit(&mut self.child, 30, "llama-server router");
    }
}
