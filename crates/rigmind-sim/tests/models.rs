//! Several models on cards of different sizes: the two-model workload of the suite
//! (`plans/workloads/two-models.md` on `rig-two-models.toml`: two 6 GB cards, two
//! 24 GB ones; a 7B of 4.7 GB and a 14B of 10.5 GB, interleaved). Every policy
//! finishes it, the 14B is never loaded on a small card (the simulator would also
//! refuse such a load as an error), and adaptive's switches stay few.

use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan};
use rigmind_sim::{simulate, RmPolicy};

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
