//! parse_str + expand never panic, on arbitrary text and on plan-like fragments.

use std::path::Path;

use proptest::prelude::*;
use rigmind_plan::{expand, parse_str, ExpandDefaults, Severity};

const FRAGMENTS: &[&str] = &[
    "# Plan: p",
    "# ",
    "## Task: a",
    "## Task: b",
    "## b",
    "## Task: a b",
    "## Defaults",
    "### notes",
    "- task_class: cpu",
    "- task_class: llm",
    "- task_class: resource",
    "- TASK_CLASS: script",
    "- command: echo {item} {stem} {index}",
    "- command: awk '{print $1}' *.txt",
    "- command:",
    "- command: `` a ` b ``",
    "  ```bash",
    "  ```",
    "  ~~~",
    "```",
    "- depends_on: a, b",
    "- depends_on: a",
    "- depends_on: b",
    "- depends_on:",
    "  - a",
    "  - `b`",
    "  -",
    "- for_each: [x.txt, y.txt]",
    "- for_each: [x.txt, 'y.txt', \"z, w\"]",
    "- for_each: `*.none`",
    "- for_each: [a/x.txt, b/x.txt]",
    "- for_each: []",
    "- for_each: [",
    "- for_each:",
    "  - a.md",
    "- prompt: hi {item}",
    "- prompt:",
    "- priority: 10",
    "- priority: 3",
    "- timeout: 5x",
    "- timeout: 30m",
    "- retries: 2",
    "- env: A=1, B={index}",
    "- env: 1=2",
    "- env:",
    "  - B=2",
    "- executor: brain",
    "- group: g",
    "- vram_mb: 0",
    "- sensitive: yes",
    "- estimate: 2h",
    "- depend_on: a",
    "- ",
    "- just text",
    "text *emph* _u_",
    "",
    "> quote",
    "1. item: x",
    "    indented code",
    "<div>",
    "---",
    "===",
    "\u{feff}",
    "\r",
    "- a:\n  - b:\n    - c",
];

fn check(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.md");
    match parse_str(&path, text) {
        Ok(plan) => {
            assert!(plan
                .warnings
                .iter()
                .all(|w| w.severity == Severity::Warning));
            match expand(&plan, &ExpandDefaults::default()) {
                Ok(ex) => {
                    for j in &ex.jobs {
                        assert!(j.depends_on.windows(2).all(|w| w[0] < w[1]));
                        assert!(j.depends_on.iter().all(|&i| i < ex.jobs.len()));
                    }
                }
                Err(e) => assert_eq!(e.diagnostics[0].severity, Severity::Error),
            }
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            assert_eq!(e.diagnostics[0].severity, Severity::Error);
            let _ = e.to_string();
        }
    }
    let _ = parse_str(Path::new(""), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn markdownish_strings_never_panic(text in "[-#`~: \\[\\]{}a-c_*=,\n\t>0-9]{0,300}") {
        check(&text);
    }

    #[test]
    fn plan_fragments_never_panic(parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)) {
        check(&parts.join("\n"));
    }
}
