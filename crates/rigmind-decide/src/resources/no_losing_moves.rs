//! A property over random workloads (a seeded generator): `adaptive` never makes a
//! move that its own projection says loses time. After the cards it moves have
//! moved, the best projection that moves nothing more ends no later than the best
//! one that moved nothing before.

use rigmind_types::TaskClass;

use super::testkit::{card, cfg, work};
use super::{decide, Card, CardMode, Dep, RigView, RmAction, RmPolicy, Work};
use crate::projection::{project, Strategy};

/// SplitMix64: a small seeded generator, enough for workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random DAG of script, llm and cpu work, some of it running.
fn random_work(rng: &mut Rng) -> Vec<Work> {
    let n = 1 + rng.below(40) as usize;
    let mut out: Vec<Work> = Vec::with_capacity(n);
    for i in 0..n {
        let class = match rng.below(5) {
            0 | 1 => TaskClass::Script,
            2 | 3 => TaskClass::Llm,
            _ => TaskClass::Cpu,
        };
        let secs = rng.secs(1.0, 400.0);
        let deps: Vec<usize> = if i > 0 && rng.below(2) == 0 {
            let mut d: Vec<usize> = (0..1 + rng.below(3))
                .map(|_| rng.below(i as u64) as usize)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        } else {
            Vec::new()
        };
        let ready_in = deps
            .iter()
            .map(|&d| out[d].ready_in + out[d].left)
            .fold(0.0, f64::max);
        let mut w = work(class, 1, secs, ready_in).remove(0);
        w.deps = deps.into_iter().map(Dep::all).collect();
        out.push(w);
    }
    out
}

/// Random cards; a busy one runs a task of the work that has no dependencies.
fn random_cards(rng: &mut Rng, work: &mut [Work]) -> Vec<Card> {
    let n = 1 + rng.below(5) as usize;
    (0..n)
        .map(|i| {
            let mode = match rng.below(3) {
                0 => CardMode::Script,
                _ if rng.below(2) == 0 => CardMode::Llm,
                _ => CardMode::Script,
            };
            let mut c = card(&format!("w{i}"), mode);
            c.in_mode_secs = rng.secs(0.0, 600.0);
            c.llm_capable = rng.below(6) != 0;
            if !c.llm_capable {
                c.mode = CardMode::Script;
                c.model = None;
            }
            let runs = work
                .iter()
                .position(|w| !w.running && w.deps.is_empty() && c_runs(c.mode, w.class));
            if let (Some(k), true) = (runs, rng.below(2) == 0) {
                let w = &mut work[k];
                w.running = true;
                w.left = rng.secs(0.05 * w.secs, w.secs);
                c.running = Some(w.class);
                c.busy_for = w.left;
            }
            c
        })
        .collect()
}

fn c_runs(mode: CardMode, class: TaskClass) -> bool {
    crate::claim::card_runs(mode == CardMode::Llm, class)
}

/// The best end of the projections that move no card now.
fn standing_still(view: &RigView) -> f64 {
    let mut s = vec![Strategy::Phases, Strategy::Stages, Strategy::OnDemand];
    for k in 0..=view.cards.len() {
        s.extend([Strategy::Fixed(k), Strategy::Split(k)]);
    }
    s.into_iter()
        .map(|s| project(view, s))
        .filter(|p| p.now.is_empty())
        .map(|p| p.makespan)
        .fold(f64::INFINITY, f64::min)
}

/// The view once `actions` are under way: loading and unloading cards.
fn moved(view: &RigView, actions: &[RmAction]) -> RigView {
    let mut v = view.clone();
    for a in actions {
        let c = v
            .cards
            .iter_mut()
            .find(|c| c.worker == a.worker())
            .expect("an action for a card of the view");
        c.mode = match a {
            RmAction::Load { .. } => CardMode::Loading,
            RmAction::Unload { .. } => CardMode::Unloading,
        };
        c.in_mode_secs = 0.0;
    }
    v
}

#[test]
fn adaptive_never_moves_a_card_its_projection_says_loses_time() {
    let mut rng = Rng(12);
    let mut moves = 0;
    for case in 0..1500 {
        let mut work = random_work(&mut rng);
        let mut cards = random_cards(&mut rng, &mut work);
        let mut config = cfg(RmPolicy::Adaptive);
        config.load_secs = rng.secs(1.0, 200.0);
        // Each card loads in its own time, around the configured one.
        for c in &mut cards {
            c.load_secs = config.load_secs * rng.secs(0.5, 2.0);
        }
        config.unload_secs = rng.secs(0.5, 20.0);
        let view = RigView {
            config,
            cards,
            work,
            estimates: Default::default(),
            estimate_error: 0.0,
        };
        let actions = decide(&view);
        if actions.is_empty() {
            continue;
        }
        moves += 1;
        let before = standing_still(&view);
        let after = standing_still(&moved(&view, &actions));
        assert!(
            !before.is_finite() || after <= before + 1e-6,
            "case {case}: {actions:?} ends at {after:.1}s, standing still at {before:.1}s\n{view:#?}"
        );
    }
    assert!(moves > 50, "only {moves} cases moved a card");
}
