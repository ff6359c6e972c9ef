//! `adaptive`: by demand and look-ahead, weighed against the load cost, with
//! hysteresis. Each round projects the rest of the work ([`crate::projection`])
//! under every way of moving the cards and takes the first step of the best.

use crate::projection::{project, Projection, Strategy};

use super::cards::{idle_unloads, llm_cap, llm_cards, load, unload};
use super::demand::{demand, wanted_model, Demand};
use super::{CardMode, RigView, RmAction};

/// `adaptive`: projects the rest of the work under each way of moving the cards —
/// every fixed number of LLM cards, phases, and stages (phases whose cards turn one
/// by one as their kind runs dry, so loads overlap a stage's tail) — and takes the
/// first step of the best, if it beats staying as things are by a margin (the
/// hysteresis: a move must pay for itself, so cards do not flap). It projects at
/// every size: the work comes in groups and the projection runs chunks of them.
///
/// With the actions comes the projection it follows (the best move's when it
/// moves, the best of standing still's when not), for the batches' ETAs
/// ([`crate::eta`]); `None` where it projected nothing.
pub(super) fn decide(view: &RigView) -> (Vec<RmAction>, Option<Projection>) {
    let d = demand(view, 0.0);
    if d.left_llm_n == 0 && d.ready_script_n == 0 {
        // Nothing for the model to do and nothing a freed card would run.
        return (idle_unloads(view, &d), None);
    }
    let model = wanted_model(view, &d);
    let mut tried = projections(view);
    let (still, still_at) = standing_still(&tried);
    let Some(best_at) = best_move(&tried) else {
        return (Vec::new(), still_at.map(|i| tried.swap_remove(i).1));
    };
    let (best, proj) = &tried[best_at];
    tracing::debug!(
        still,
        tried = ?tried.iter().map(|(s, p)| (*s, p.makespan.round(), p.now.len())).collect::<Vec<_>>(),
        "resource manager look-ahead"
    );
    if !super::hysteresis::pays(view, still, proj) {
        return (Vec::new(), still_at.map(|i| tried.swap_remove(i).1));
    }
    let have = llm_cards(view);
    let reason = |to_llm: bool| move_reason(*best, proj, still, &d, have, to_llm);
    let actions = proj
        .now
        .iter()
        .filter_map(|&(i, to_llm)| {
            let c = view.cards.get(i)?;
            // A card with a resource task in flight is not given another.
            if c.cooling_down || !matches!(c.mode, CardMode::Script | CardMode::Llm) {
                return None;
            }
            Some(if to_llm {
                load(c, &model, reason(true))
            } else {
                unload(c, reason(false))
            })
        })
        .collect();
    (actions, Some(tried.swap_remove(best_at).1))
}

/// The rest of the work projected under every strategy: each number of LLM cards
/// the bounds allow (fixed, and split), phases, stages and on demand.
fn projections(view: &RigView) -> Vec<(Strategy, Projection)> {
    let cap = llm_cap(view).min(view.cards.len());
    let floor = (view.config.min_llm_gpus as usize).min(cap);
    let mut tried: Vec<(Strategy, Projection)> = Vec::new();
    for k in floor..=cap {
        for s in [Strategy::Fixed(k), Strategy::Split(k)] {
            tried.push((s, project(view, s)));
        }
    }
    for s in [Strategy::Phases, Strategy::Stages, Strategy::OnDemand] {
        tried.push((s, project(view, s)));
    }
    tried
}

/// The best end of the strategies that move no card now, and which one it is
/// (its index in `tried`; `None` when every strategy moves a card).
fn standing_still(tried: &[(Strategy, Projection)]) -> (f64, Option<usize>) {
    let best = tried
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| p.now.is_empty())
        .min_by(|a, b| a.1 .1.makespan.total_cmp(&b.1 .1.makespan));
    match best {
        Some((i, (_, p))) => (p.makespan, Some(i)),
        None => (f64::INFINITY, None),
    }
}

/// The best strategy that moves now (its index in `tried`); of equals, the one
/// that moves fewest cards.
fn best_move(tried: &[(Strategy, Projection)]) -> Option<usize> {
    tried
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| !p.now.is_empty())
        .min_by(|a, b| {
            a.1 .1
                .makespan
                .total_cmp(&b.1 .1.makespan)
                .then(a.1 .1.now.len().cmp(&b.1 .1.now.len()))
        })
        .map(|(i, _)| i)
}

/// Why a card is loaded (`to_llm`) or freed: the demand, the plan `best` projects,
/// and what standing still would give.
fn move_reason(
    best: Strategy,
    proj: &Projection,
    still: f64,
    d: &Demand,
    have: usize,
    to_llm: bool,
) -> String {
    let plan = match best {
        Strategy::Fixed(k) => format!("{k} llm cards"),
        Strategy::Split(k) => format!("{k} llm cards, turning as work runs dry"),
        Strategy::Phases => "phases".to_string(),
        Strategy::Stages => "stages".to_string(),
        Strategy::OnDemand => "on demand".to_string(),
    };
    let staying = if still.is_finite() {
        format!("{still:.0}s")
    } else {
        "never".to_string()
    };
    format!(
        "{} llm tasks ready, {} script tasks ready, {have} llm cards; look-ahead ({plan}): {} this card now ends the work in {:.0}s, standing still in {staying}",
        d.ready_llm_n,
        d.ready_script_n,
        if to_llm { "loading" } else { "freeing" },
        proj.makespan,
    )
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    #[test]
    fn adaptive_loads_a_card_for_ready_llm_work_and_says_why() {
        let v = view(
            RmPolicy::Adaptive,
            vec![card("w1", CardMode::Script), card("w2", CardMode::Script)],
            work(TaskClass::Llm, 7, 300.0, 0.0),
        );
        let a = decide(&v);
        assert_eq!(loads(&a), vec!["w1", "w2"]);
        let RmAction::Load { reason, model, .. } = &a[0] else {
            panic!()
        };
        assert_eq!(model, "m");
        assert!(reason.contains("7 llm tasks ready"), "{reason}");
        assert!(reason.contains("0 llm cards"), "{reason}");
    }

    #[test]
    fn adaptive_runs_scripts_first_when_a_split_would_idle_cards() {
        // 4 cards, 40 x 300 s of llm work and 20 x 300 s of scripts, all ready:
        // scripts on all 4 cards, then all turn (4,620 s), beats every split (the
        // best, 2 + 2, ends at 6,120 s): no load yet.
        let mut w = work(TaskClass::Llm, 40, 300.0, 0.0);
        w.extend(work(TaskClass::Script, 20, 300.0, 0.0));
        let cards: Vec<Card> = (1..=4)
            .map(|i| card(&format!("w{i}"), CardMode::Script))
            .collect();
        assert!(decide(&view(RmPolicy::Adaptive, cards.clone(), w)).is_empty());
        // With only llm work left, every card loads.
        let w = work(TaskClass::Llm, 40, 300.0, 0.0);
        assert_eq!(loads(&decide(&view(RmPolicy::Adaptive, cards, w))).len(), 4);
    }

    #[test]
    fn adaptive_runs_the_ready_llm_work_before_turning_the_card() {
        // One loaded card with one llm task ready and scripts waiting: it runs the
        // llm task first (turning now would mean loading again), so no move yet;
        // once no llm work is left, it turns.
        let mut w = work(TaskClass::Script, 10, 100.0, 0.0);
        w.extend(work(TaskClass::Llm, 1, 100.0, 0.0));
        let cards = vec![card("w1", CardMode::Llm), card("w2", CardMode::Script)];
        assert!(decide(&view(RmPolicy::Adaptive, cards.clone(), w)).is_empty());
        let w = work(TaskClass::Script, 10, 100.0, 0.0);
        assert_eq!(
            unloads(&decide(&view(RmPolicy::Adaptive, cards, w))),
            vec!["w1"]
        );
    }

    #[test]
    fn adaptive_looks_ahead_to_llm_work_the_dag_will_release() {
        // One script task running (50 s left) and 21 llm tasks waiting on it: the
        // free card loads now, so that its load overlaps the script task (1,220 s,
        // against 1,270 s loading both cards once the script ends).
        let mut w = work(TaskClass::Script, 1, 100.0, 0.0);
        w[0].running = true;
        w[0].left = 50.0;
        let mut llm = work(TaskClass::Llm, 21, 100.0, 50.0);
        for t in &mut llm {
            t.deps = vec![Dep::all(0)];
        }
        w.extend(llm);
        let mut busy = card("w1", CardMode::Script);
        busy.running = Some(TaskClass::Script);
        busy.busy_for = 50.0;
        let v = view(
            RmPolicy::Adaptive,
            vec![busy, card("w2", CardMode::Script)],
            w,
        );
        assert_eq!(loads(&decide(&v))[0], "w2");
    }

    #[test]
    fn adaptive_frees_a_card_when_script_work_waits_and_none_runs_scripts() {
        // The only card holds the model; a script task is ready and the llm work
        // waits on it: without a turn nothing would ever run.
        let mut w = work(TaskClass::Script, 1, 100.0, 0.0);
        let mut llm = work(TaskClass::Llm, 3, 100.0, 100.0);
        for t in &mut llm {
            t.deps = vec![Dep::all(0)];
        }
        w.extend(llm);
        let v = view(RmPolicy::Adaptive, vec![card("w1", CardMode::Llm)], w);
        let a = decide(&v);
        assert_eq!(unloads(&a), vec!["w1"]);
        let reason = unload_reason(&a[0]);
        assert!(reason.contains("standing still in never"), "{reason}");
    }

    #[test]
    fn idle_unload_frees_a_card_with_no_llm_work() {
        let mut c = card("w1", CardMode::Llm);
        c.llm_idle_secs = 1799.0;
        let v = view(RmPolicy::Adaptive, vec![c.clone()], vec![]);
        assert!(decide(&v).is_empty());
        c.llm_idle_secs = 1800.0;
        let v = view(RmPolicy::Adaptive, vec![c], vec![]);
        let a = decide(&v);
        assert_eq!(unloads(&a), vec!["w1"]);
        let reason = unload_reason(&a[0]);
        assert!(reason.contains("idle_unload"), "{reason}");
    }

    #[test]
    fn max_llm_gpus_and_capability_are_respected() {
        let mut c3 = card("w3", CardMode::Script);
        c3.llm_capable = false;
        let mut v = view(
            RmPolicy::Adaptive,
            vec![
                card("w1", CardMode::Script),
                card("w2", CardMode::Script),
                c3,
            ],
            work(TaskClass::Llm, 30, 600.0, 0.0),
        );
        v.config.max_llm_gpus = Some(1);
        assert_eq!(loads(&decide(&v)), vec!["w1"]);
    }
}
