//! What an llm task's answer must be and what its next tier is told: `expect:
//! json` ([`expected_json`]: the answer, or a fenced json block in it, must parse)
//! and the "Earlier attempts" section ([`earlier_attempts`]) an escalated task's
//! prompt carries, as data, from the attempts on lower tiers.

use rigmind_queue::task::TaskFile;

/// The longest answer kept with a failed attempt, in characters.
pub const FAILED_OUTPUT_MAX: usize = 2000;

/// The JSON an answer holds, when the task expects JSON: the whole answer, else
/// the first fenced block (```json or ```) that parses. `Err` says why not.
pub fn expected_json(answer: &str) -> Result<serde_json::Value, String> {
    let whole = serde_json::from_str::<serde_json::Value>(answer.trim());
    let whole_err = match whole {
        Ok(v) => return Ok(v),
        Err(e) => e.to_string(),
    };
    for block in fenced_blocks(answer) {
        if let Ok(v) = serde_json::from_str(block.trim()) {
            return Ok(v);
        }
    }
    Err(format!(
        "the answer is not JSON (expect: json): {whole_err}, and no fenced block in it parses"
    ))
}

/// The bodies of the fenced code blocks of `text` (``` with any info string).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let Some(nl) = after.find('\n') else { break };
        let body = &after[nl + 1..];
        let Some(close) = body.find("```") else { break };
        out.push(&body[..close]);
        rest = &body[close + 3..];
    }
    out
}

/// `s` cut to its first `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The "Earlier attempts" section for a task escalated from lower tiers: each
/// attempt's tier, model, endpoint, error and answer. `None` for a task on its
/// first tier. The caller fences it as data: it holds model output.
pub fn earlier_attempts(task: &TaskFile) -> Option<String> {
    if task.earlier_attempts.is_empty() {
        return None;
    }
    let mut out = String::from("## Earlier attempts\n");
    for a in &task.earlier_attempts {
        let at = a
            .endpoint
            .as_deref()
            .map_or(String::new(), |e| format!(" at endpoint {e}"));
        out.push_str(&format!(
            "\n### Tier {}: model {}{at}\nError: {}\n",
            a.tier, a.model, a.error
        ));
        if let Some(o) = &a.output {
            out.push_str(&format!("Answer:\n{o}\n"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_whole_or_fenced() {
        assert_eq!(expected_json(" {\"a\": 1}\n").unwrap()["a"], 1);
        let fenced = "Here it is:\n```json\n{\"b\": [1, 2]}\n```\nDone.";
        assert_eq!(expected_json(fenced).unwrap()["b"][1], 2);
        let err = expected_json("Sure! The answer is a cat.").unwrap_err();
        assert!(err.contains("expect: json"), "{err}");
    }

    #[test]
    fn earlier_attempts_name_tier_model_error_and_answer() {
        let mut t = TaskFile::new("b", "t", rigmind_types::TaskClass::Llm);
        assert_eq!(earlier_attempts(&t), None);
        t.earlier_attempts
            .push(rigmind_queue::task::EarlierAttempt {
                tier: 1,
                model: "small:latest".into(),
                endpoint: None,
                error: "the answer is not JSON".into(),
                output: Some("a cat".into()),
            });
        let s = earlier_attempts(&t).unwrap();
        assert!(s.starts_with("## Earlier attempts"), "{s}");
        assert!(
            s.contains("Tier 1: model small:latest") && s.contains("a cat"),
            "{s}"
        );
    }
}
