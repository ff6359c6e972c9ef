//! No thrash: the GPU issue's plan (6 prep scripts → 6 item-wise llm tasks → 6 post
//! scripts, on 2 cards, a 3 s load), with estimates of 4 s for tasks that really
//! take 7.5 s: the adaptive manager loads the model at most twice. Before learned
//! estimates and the move rule it moved the model from card to card and back.

use std::path::Path;

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan};
use rigmind_sim::{simulate_truth, RmPolicy};
use rigmind_types::TaskClass;

const PLAN: &str = "# Plan: issue-12

## Task: prep
- task_class: script
- for_each: [a, b, c, d, e, f]
- estimate: 4s
- command: `true`

## Task: ask
- task_class: llm
- depends_on: prep
- for_each: [a, b, c, d, e, f]
- estimate: 4s
- prompt: `hi {item}`

## Task: post
- task_class: script
- depends_on: ask
- for_each: [a, b, c, d, e, f]
- estimate: 4s
- command: `true`
";

const RIG: &str = "[llm]
model = \"m\"
load_seconds = 3
unload_seconds = 1

[[gpu]]
index = 0
worker = \"gpu0\"
ollama = \"http://127.0.0.1:11434\"

[[gpu]]
index = 1
worker = \"gpu1\"
ollama = \"http://127.0.0.1:11435\"
";

fn plan() -> ExpandedPlan {
    let p = rigmind_plan::parse_str(Path::new("/nonexistent/plan.md"), PLAN).expect("plan parses");
    let mut p = rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands");
    // Item-wise: ask[x] waits for prep[x] only, post[x] for ask[x].
    assert!(p.jobs.iter().all(|j| j.depends_on.len() <= 1));
    p.warnings.clear();
    p
}

/// The plan as it ran: scripts take 7.5 s, each llm task `llm_secs`.
fn truth(plan: &ExpandedPlan, llm_secs: f64) -> ExpandedPlan {
    let mut t = plan.clone();
    for j in &mut t.jobs {
        j.estimate_secs = Some(if j.task_class == TaskClass::Llm {
            llm_secs
        } else {
            7.5
        });
    }
    t
}

#[test]
fn the_issue_plan_loads_the_model_at_most_twice() {
    let rig = RigConfig::parse(Path::new("rig.toml"), RIG).expect("rig parses");
    let plan = plan();
    for llm_secs in [0.02, 4.0, 7.5] {
        let r = simulate_truth(&plan, &truth(&plan, llm_secs), &rig, RmPolicy::Adaptive)
            .expect("it finishes");
        assert!(
            r.loads <= 2,
            "llm tasks of {llm_secs}s: {} loads, {} unloads, makespan {:.2}s",
            r.loads,
            r.unloads,
            r.makespan_s
        );
    }
}
