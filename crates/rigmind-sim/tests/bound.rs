//! The lower bound is a bound: on random plans and rigs, as written and noisy, no
//! policy's simulated makespan is below it.

use std::path::Path;

use proptest::prelude::*;
use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan};
use rigmind_sim::{lower_bound, noise, simulate_truth, RmPolicy, SimError};

/// One plan task: its class (0 cpu, 1 script, 2 llm on the small model, 3 llm on
/// the big one), how many items (0: none), its estimate in seconds, and which
/// earlier tasks it waits on (bits).
type TaskSpec = (u8, usize, u32, u8);

fn plan_of(tasks: &[TaskSpec]) -> ExpandedPlan {
    let mut t = String::from("# Plan: random\n");
    for (i, &(class, items, estimate, deps)) in tasks.iter().enumerate() {
        t.push_str(&format!("\n## Task: t{i}\n"));
        let work = match class {
            0 => "- task_class: cpu\n- command: `true`\n",
            1 => "- task_class: script\n- command: `true`\n",
            2 => "- task_class: llm\n- prompt: `hi`\n",
            _ => "- task_class: llm\n- model: big\n- prompt: `hi`\n",
        };
        t.push_str(work);
        t.push_str(&format!("- estimate: {estimate}s\n"));
        if items > 0 {
            let list: Vec<String> = (0..items).map(|k| format!("i{k}")).collect();
            t.push_str(&format!("- for_each: [{}]\n", list.join(", ")));
        }
        let names: Vec<String> = (0..i)
            .filter(|d| deps & (1 << d) != 0)
            .map(|d| format!("t{d}"))
            .collect();
        if !names.is_empty() {
            t.push_str(&format!("- depends_on: {}\n", names.join(", ")));
        }
    }
    let p = rigmind_plan::parse_str(Path::new("/nonexistent/plan.md"), &t).expect("plan parses");
    rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands")
}

/// `gpus` cards of which the first `llm_cards` have an LLM server; the first card, and
/// those whose bit is set in `big`, hold 24 GB, the others 6 GB; the model `big`
/// needs 10 GB.
fn rig_of(gpus: usize, llm_cards: usize, big: u8, load: u32) -> RigConfig {
    let mut t = format!(
        "[llm]\nmodel = \"m\"\nload_seconds = {load}\nunload_seconds = 2\n\n[resource_manager]\npolicy = \"adaptive\"\n\n[[model]]\nname = \"big\"\nvram_mb = 10000\n"
    );
    for i in 0..gpus {
        let vram = if i == 0 || big & (1 << i) != 0 {
            24576
        } else {
            6144
        };
        t.push_str(&format!(
            "\n[[gpu]]\nindex = {i}\nworker = \"gpu{i}\"\nvram_mb = {vram}\n"
        ));
        if i < llm_cards {
            t.push_str(&format!("ollama = \"http://127.0.0.1:{}\"\n", 11434 + i));
        }
    }
    RigConfig::parse(Path::new("rig.toml"), &t).expect("rig parses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn no_policy_ends_before_the_lower_bound(
        tasks in prop::collection::vec((0u8..4, 0usize..9, 1u32..90, any::<u8>()), 1..6),
        gpus in 1usize..5,
        llm_share in 1usize..5,
        big in any::<u8>(),
        load in 1u32..60,
        seed in any::<u64>(),
    ) {
        let plan = plan_of(&tasks);
        let rig = rig_of(gpus, llm_share.min(gpus), big, load);
        for truth in [plan.clone(), noise::truth(&plan, seed)] {
            let bound = lower_bound(&truth, &rig);
            let mut policies = vec![RmPolicy::Adaptive, RmPolicy::Phases, RmPolicy::OnDemand];
            // One card kept loaded leaves script work a card only on two or more.
            if gpus > 1 {
                policies.push(RmPolicy::Static { llm_cards: 1 });
            }
            for policy in policies {
                let r = match simulate_truth(&plan, &truth, &rig, policy) {
                    Ok(r) => r,
                    // A card kept on one model leaves another model's work no card.
                    Err(SimError::Infeasible { .. }) if matches!(policy, RmPolicy::Static { .. }) => {
                        continue
                    }
                    Err(e) => panic!("{}: {e}", policy.name()),
                };
                prop_assert!(
                    r.makespan_s >= bound - 1e-6,
                    "{}: makespan {} < lower bound {}",
                    policy.name(),
                    r.makespan_s,
                    bound
                );
            }
        }
    }
}
