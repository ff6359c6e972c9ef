//! The simulator decides as the live brain does: a real brain, recording its
//! decision rounds (`RIGMIND_RECORD_ROUNDS`), runs a plan with script, llm and cpu
//! work on two fake GPUs; every recorded round is then replayed through the very
//! entry points the simulator's engine calls at each instant
//! (`rigmind_sim::round::{brain, resources}`), and the decisions must be the same,
//! round by round. Between two rounds of one decide-and-apply run, the state the
//! simulator's effects leave must be the state the live brain's next round saw.
//!
//! What each check can catch: both sides call the same decision functions, so the
//! decision equality fails only when what a round saw is not what the simulator's
//! round step is given (a lost or re-derived input: the recording, or the step's
//! own wiring, such as ignoring resource tasks in flight). The state check is the
//! one that compares the simulator's effects (`effect::apply`) with the live
//! brain's apply layer. Not covered: the two places that gather the cards' facts
//! (the brain's `rig.rs` from worker state files, the simulator's engine from its
//! virtual workers); the replay starts from the facts as recorded.

mod common;

use common::gpu::{fake_rig, rig_toml, start_servers};
use rigmind_decide::policy::Action;
use rigmind_decide::record::{Round, RECORD_ROUNDS_ENV};
use rigmind_decide::resources::RmAction;
use rigmind_decide::state::BrainState;
use rigmind_sim::round;

/// The rounds a brain recorded, in order.
fn read_rounds(path: &std::path::Path) -> Vec<Round<'static>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("round {i}: {e}: {l:.300}"))
        })
        .collect()
}

/// The state as a recorded round shows it, for comparing two states.
fn shown(state: &BrainState) -> serde_json::Value {
    serde_json::to_value(state).expect("a state serializes")
}

/// What the replay went through.
#[derive(Default, Debug)]
struct Seen {
    brain_rounds: usize,
    releases: usize,
    settles: usize,
    /// Rounds whose state was checked against the effects of the round before.
    chained: usize,
    resource_rounds: usize,
    loads: usize,
}

/// Replays every round through the simulator's rounds; panics at the first one
/// that decides otherwise.
fn replay(rounds: Vec<Round<'static>>) -> Seen {
    let mut seen = Seen::default();
    // The last brain round's run, number and the state its effects left.
    let mut left: Option<(u64, u32, BrainState)> = None;
    for (i, r) in rounds.into_iter().enumerate() {
        match r {
            Round::Brain(r) => {
                if let Some((converge, n, after)) = &left {
                    if *converge == r.converge && r.round == n + 1 {
                        assert_eq!(
                            shown(&r.state),
                            shown(after),
                            "round {i}: the live brain's state differs from the simulator's effects of round {n}"
                        );
                        seen.chained += 1;
                    }
                }
                let mut state = r.state.into_owned();
                let actions = round::brain(&mut state, r.now)
                    .unwrap_or_else(|a| panic!("round {i}: the simulator cannot apply {a:?}"));
                assert_eq!(
                    actions,
                    r.actions.as_ref(),
                    "round {i}: release decisions differ"
                );
                seen.brain_rounds += 1;
                for a in &actions {
                    match a {
                        Action::Release { .. } => seen.releases += 1,
                        Action::Settle { .. } => seen.settles += 1,
                        _ => {}
                    }
                }
                left = Some((r.converge, r.round, state));
            }
            Round::Resources(r) => {
                let actions = round::resources(&r.config, &r.cards, &r.in_flight, &r.state, r.now);
                assert_eq!(
                    actions,
                    r.actions.as_ref(),
                    "round {i}: resource decisions differ"
                );
                seen.resource_rounds += 1;
                seen.loads += actions
                    .iter()
                    .filter(|a| matches!(a, RmAction::Load { .. }))
                    .count();
            }
        }
    }
    seen
}

#[test]
fn the_simulator_decides_every_recorded_round_as_the_live_brain_did() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut rig, fake_dir) = fake_rig(2);
    let rounds = rig.dir.path().join("rounds.jsonl");
    rig.env
        .push((RECORD_ROUNDS_ENV.into(), rounds.display().to_string()));
    let servers = start_servers(&rt, &fake_dir, 2);
    rig.write("root/rig.toml", &rig_toml(&servers, ""));
    rig.start_brain();
    rig.start_worker("gpu0", &["--gpu", "0"]);
    rig.start_worker("gpu1", &["--gpu", "1"]);
    let batch = rig.submit(&rig.fixture("gpu_mixed.md"));
    assert_eq!(rig.wait(&batch), 0, "{}", rig.decisions().join("\n"));
    // Stopped, so that no round is half written when it is read.
    assert_eq!(rig.stop("brain"), Some(0));

    let seen = replay(read_rounds(&rounds));
    // The run made every kind of decision the replay is meant to cover.
    assert!(seen.releases >= 14, "{seen:?}");
    assert!(seen.settles >= 1, "{seen:?}");
    assert!(seen.chained >= 1, "{seen:?}");
    assert!(seen.resource_rounds >= 1 && seen.loads >= 1, "{seen:?}");
    drop(servers);
}
