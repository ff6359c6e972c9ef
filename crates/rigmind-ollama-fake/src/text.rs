//! The fake "model": a deterministic reply derived from the prompt, cut into tokens.
//!
//! Tests only need the same input to give the same output, on every machine and
//! every run, so hashing is a fixed FNV-1a rather than std's (unspecified) hasher.

/// 64-bit FNV-1a: stable across Rust versions and platforms.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A 64-hex-digit pseudo digest for `name` (stands in for a sha256 blob digest).
pub fn fake_digest(name: &str) -> String {
    (0u8..4)
        .map(|i| {
            let mut seed = name.as_bytes().to_vec();
            seed.push(i);
            format!("{:016x}", fnv1a64(&seed))
        })
        .collect()
}

/// The reply the fake model gives to `input` (the whole prompt, system included),
/// quoting the first words of `focus` (the user's own text).
pub fn reply_text(model: &str, input: &str, focus: &str) -> String {
    let words: Vec<&str> = focus.split_whitespace().collect();
    let opening: Vec<&str> = words.iter().take(8).copied().collect();
    format!(
        "This is a deterministic reply from the fake {model} model. \
         The prompt had {chars} characters and {nwords} words, fingerprint {hash:016x}. \
         It began with: \"{opening}\". \
         No real model produced this text.",
        chars = input.chars().count(),
        nwords = input.split_whitespace().count(),
        hash = fnv1a64(input.as_bytes()),
        opening = opening.join(" "),
    )
}

/// Splits `text` into tokens: each is a run of whitespace followed by a run of
/// non-whitespace, so concatenating them gives `text` back exactly.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut seen_word = false;
    for c in text.chars() {
        if c.is_whitespace() && seen_word {
            tokens.push(std::mem::take(&mut cur));
            seen_word = false;
        }
        if !c.is_whitespace() {
            seen_word = true;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    tokens
}

/// Waits until token `i` (0-based) of a generation that started at `gen_start`
/// is due at `tokens_per_sec`.
pub async fn pace(gen_start: std::time::Instant, i: usize, tokens_per_sec: f64) {
    if tokens_per_sec.is_finite() && tokens_per_sec > 0.0 {
        let due = gen_start + std::time::Duration::from_secs_f64((i + 1) as f64 / tokens_per_sec);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Token ids for the `context` field of a generate reply (a stand-in encoding).
pub fn token_ids(tokens: &[String]) -> Vec<u32> {
    tokens
        .iter()
        .map(|t| (fnv1a64(t.as_bytes()) % 150_000) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rebuild_the_text() {
        for s in ["", "one", " lead", "a  b\nc ", "Hello, world. How are you?"] {
            assert_eq!(tokenize(s).concat(), s);
        }
        assert_eq!(tokenize("a b  c"), vec!["a", " b", "  c"]);
    }

    #[test]
    fn replies_are_deterministic_and_depend_on_the_prompt() {
        let a = reply_text("m", "why is the sky blue?", "why is the sky blue?");
        assert_eq!(
            a,
            reply_text("m", "why is the sky blue?", "why is the sky blue?")
        );
        assert_ne!(
            a,
            reply_text("m", "why is grass green?", "why is grass green?")
        );
        assert!(a.contains("why is the sky blue?"));
    }

    #[test]
    fn digests_look_like_sha256() {
        let d = fake_digest("qwen2.5:7b");
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(d, fake_digest("llama3.2:1b"));
    }
}
