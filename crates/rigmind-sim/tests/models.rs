//! Several models on cards of different sizes: the two-model workload of the suite
//! (`plans/workloads/two-models.md` on `rig-two-models.toml`: two 6 GB cards, two
//! 24 GB ones; a 7B of 4.7 GB and a 14B of 10.5 GB, interleaved). Every policy
//! finishes it, the 14B is never loaded on a small card (the simulator would also
//! refuse such a load as an error), and adaptive's switches stay few.

use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan};
use rigmind_sim::{noise, simulate, simulate_truth, RmPolicy};

fn workloads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plans/workloads")
}

fn plan() -> ExpandedPlan {
    let p = rigmind_plan::parse_file(&workloads().join("two-models.md")).expect("plan parses");
    rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands")
}

fn rig() -> RigConfig {
    RigConfig::load(&workloads().join("rig-two-models.toml")).expect("rig parses")
}

#[test]
fn every_policy_finishes_the_two_model_workload_with_the_14b_only_on_big_cards() {
    let (plan, rig) = (plan(), rig());
    let small: Vec<&str> = rig
        .gpus
        .iter()
        .filter(|g| g.vram_mb < Some(11_000))
        .map(|g| g.worker.as_str())
        .collect();
    assert_eq!(small, ["gpu0", "gpu1"]);
    for policy in [
        RmPolicy::Adaptive,
        RmPolicy::Phases,
        RmPolicy::OnDemand,
        RmPolicy::Static { llm_cards: 2 },
        RmPolicy::Static { llm_cards: 3 },
    ] {
        let r = simulate(&plan, &rig, policy)
            .unwrap_or_else(|e| panic!("{policy:?} does not finish: {e}"));
        assert_eq!(r.tasks_completed, plan.jobs.len(), "{policy:?}");
        let big_on_small: Vec<_> = r
            .loaded
            .iter()
            .filter(|(_, w, m)| m == "qwen2.5:14b" && small.contains(&w.as_str()))
            .collect();
        assert!(big_on_small.is_empty(), "{policy:?}: {big_on_small:?}");
        assert!(
            r.loaded.iter().any(|(_, _, m)| m == "qwen2.5:14b"),
            "{policy:?}: {:?}",
            r.loaded
        );
        eprintln!(
            "{}: {:.0}s, {} loads, {} unloads: {:?}",
            policy.name(),
            r.makespan_s,
            r.loads,
            r.unloads,
            r.loaded
        );
    }
}

/// The plan and rig of `tests/fixtures/NAME.md` and `NAME.toml`.
fn fixture(name: &str) -> (ExpandedPlan, RigConfig) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let p = rigmind_plan::parse_file(&fixtures.join(format!("{name}.md"))).expect("plan parses");
    let plan = rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands");
    let rig = RigConfig::load(&fixtures.join(format!("{name}.toml"))).expect("rig parses");
    (plan, rig)
}

#[test]
fn the_policy_and_the_model_step_do_not_undo_each_other() {
    // Before: the policy freed a card (for ready scripts, or by a projection that
    // wanted no llm card), the model step loaded it again for its model's ready
    // work, the policy freed it... and the run never ended (the simulator's event
    // cap, after minutes). Now a card freed a round trip ago for ready scripts is
    // not loaded again by the model step, and a card that just loaded keeps its
    // model while work for it is ready.
    for (name, seed, most_loads) in [
        ("models-trading", 14560442096177046168, 8),
        ("models-stranded", 13814797628375668068, 4),
    ] {
        let (plan, rig) = fixture(name);
        for truth in [plan.clone(), noise::truth(&plan, seed)] {
            let r = simulate_truth(&plan, &truth, &rig, RmPolicy::Adaptive)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                r.loads <= most_loads,
                "{name}: {} loads, {} unloads",
                r.loads,
                r.unloads
            );
        }
    }
}
