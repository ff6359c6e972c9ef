//! [`ApiKey`]: an API key read from the environment variable rig.toml names
//! (`api_key_env`), which only the HTTP header ever sees.
//!
//! Its `Debug` shows the variable's name and never the key, and [`ApiKey::redact`]
//! cuts the key out of any text a server echoes back before it can reach an error
//! message, a log line or a task file.

/// What stands in for the key in redacted text.
pub const REDACTED: &str = "[redacted]";

/// An API key and the environment variable it came from.
#[derive(Clone)]
pub struct ApiKey {
    var: String,
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("var", &self.var)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl ApiKey {
    /// The key in environment variable `var`; None when it is unset or blank.
    pub fn from_env(var: &str) -> Option<Self> {
        let secret = std::env::var(var).ok()?.trim().to_string();
        (!secret.is_empty()).then(|| ApiKey {
            var: var.to_string(),
            secret,
        })
    }

    /// A key given directly (tests); `var` names where it came from in messages.
    pub fn new(var: impl Into<String>, secret: impl Into<String>) -> Self {
        ApiKey {
            var: var.into(),
            secret: secret.into(),
        }
    }

    /// The environment variable's name.
    pub fn var(&self) -> &str {
        &self.var
    }

    /// The key itself, for the request header only.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// `text` with every occurrence of the key replaced by [`REDACTED`].
    pub fn redact(&self, text: String) -> String {
        if self.secret.is_empty() || !text.contains(&self.secret) {
            return text;
        }
        text.replace(&self.secret, REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_redact_never_show_the_key() {
        let k = ApiKey::new("MY_KEY", "sk-secret-123");
        let d = format!("{k:?}");
        assert!(d.contains("MY_KEY") && !d.contains("sk-secret-123"), "{d}");
        assert_eq!(
            k.redact("bad key sk-secret-123!".into()),
            "bad key [redacted]!"
        );
        assert_eq!(k.secret(), "sk-secret-123");
        assert!(ApiKey::from_env("RIGMIND_TEST_SURELY_UNSET_VAR").is_none());
    }
}
