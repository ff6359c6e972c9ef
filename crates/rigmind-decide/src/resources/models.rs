//! Several models: which card may hold which model, and which model each load
//! takes.
//!
//! A card fits a model when its memory (`[[gpu]] vram_mb`, else what its worker
//! read through NVML) less `[llm] vram_margin_mb` is at least the model's
//! `[[model]] vram_mb`; a model or a card of unknown size fits anywhere. No load
//! is ever decided on a card that does not fit its model.
//!
//! Two steps, whatever the policy:
//! - [`switches`], before the policy: a card whose model no work needs is freed,
//!   and ready work for a model no card holds gets a card (a switch of a loaded
//!   card counts as an unload and a load; a bare card is loaded at once when the
//!   rig already runs llm work, since the policies see llm cards, not models,
//!   unless the policy freed it a round trip ago for script work still ready);
//! - [`assign`], after it: the policy says how many cards load (and which it
//!   would take); each load gets the model that needs a card most among those the
//!   card fits, and moves to the smallest card as free that fits it, so big cards
//!   stay free for big models.

use std::collections::BTreeMap;

use super::cards::{llm_cards, load, unload};
use super::demand::{demand, Demand};
use super::{Card, CardMode, ModelSizes, RigView, RmAction};
use crate::view::llm_card_limit;

/// Whether `card` can hold `model` under the view's sizes.
pub(super) fn fits(view: &RigView, card: &Card, model: &str) -> bool {
    view.config.models.fits(card.vram_mb, model)
}

/// A card's size for "smallest first": an unknown size counts as the largest.
fn size(card: &Card) -> u64 {
    card.vram_mb.unwrap_or(u64::MAX)
}

/// The llm demand by model, and how many cards hold or load each.
struct Models<'a> {
    view: &'a RigView,
    d: Demand,
    holders: BTreeMap<String, usize>,
}

impl<'a> Models<'a> {
    fn new(view: &'a RigView) -> Self {
        let mut holders: BTreeMap<String, usize> = BTreeMap::new();
        for c in view.cards.iter().filter(|c| c.mode.is_llm()) {
            let m = c.model.clone().unwrap_or_else(|| view.config.model.clone());
            *holders.entry(m).or_default() += 1;
        }
        Self {
            view,
            d: demand(view, 0.0),
            holders,
        }
    }

    fn held(&self, m: &str) -> usize {
        self.holders.get(m).copied().unwrap_or(0)
    }

    fn ready(&self, m: &str) -> f64 {
        self.d.ready_by_model.get(m).copied().unwrap_or(0.0)
    }

    fn left(&self, m: &str) -> f64 {
        self.d.by_model.get(m).copied().unwrap_or(0.0)
    }

    /// Models with ready work that no card holds or loads, most ready work first,
    /// that some card of the rig could hold.
    fn starved(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .d
            .ready_by_model
            .keys()
            .filter(|m| self.held(m) == 0)
            .filter(|m| {
                self.view
                    .cards
                    .iter()
                    .any(|c| c.llm_capable && fits(self.view, c, m))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| self.ready(b).total_cmp(&self.ready(a)).then(a.cmp(b)));
        out
    }

    /// The model one more card should hold, of those `ok` allows: a model with
    /// ready work and no card first, then the most ready work per card holding
    /// it, then the most work left per card; the rig's model when no work is
    /// left; on a tie the rig's model, then by name.
    fn best(&self, ok: impl Fn(&str) -> bool) -> Option<String> {
        let cfg_model = &self.view.config.model;
        if self.d.by_model.is_empty() {
            return ok(cfg_model).then(|| cfg_model.clone());
        }
        let key = |m: &str| {
            let per = (self.held(m) + 1) as f64;
            let starved = self.ready(m) > 0.0 && self.held(m) == 0;
            (
                starved,
                self.ready(m) / per,
                self.left(m) / per,
                m == cfg_model,
            )
        };
        let cmp = |a: &&String, b: &&String| {
            let (x, y) = (key(a), key(b));
            x.0.cmp(&y.0)
                .then(x.1.total_cmp(&y.1))
                .then(x.2.total_cmp(&y.2))
                .then(x.3.cmp(&y.3))
                .then(b.cmp(a))
        };
        self.d
            .by_model
            .keys()
            .filter(|m| ok(m))
            .max_by(cmp)
            .cloned()
    }
}

/// What a switch of `card` to `model` costs: an unload and a load.
fn switch_cost(view: &RigView, card: &Card) -> f64 {
    view.config.unload_secs + card.load_secs
}

/// Whatever the policy (see the module doc): frees cards whose model no work
/// needs, and gives a card to ready work for a model no card holds. Empty when
/// nothing of the kind is needed; then the policy decides.
pub(super) fn switches(view: &RigView) -> Vec<RmAction> {
    let ms = Models::new(view);
    if ms.d.left_llm_n == 0 {
        return Vec::new();
    }
    let movable = |c: &&Card| c.free() && !c.cooling_down;
    let mut out = Vec::new();
    for c in view
        .cards
        .iter()
        .filter(|c| c.mode == CardMode::Llm)
        .filter(movable)
    {
        let m = c.model.clone().unwrap_or_default();
        if ms.left(&m) <= 0.0 {
            let others: Vec<&String> = ms.d.by_model.keys().collect();
            out.push(unload(
                c,
                format!(
                    "no llm work left for model {m}; llm work is left for {}",
                    others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if !out.is_empty() {
        return out;
    }
    for m in ms.starved() {
        if let Some(a) = place(view, &ms, &m) {
            out.push(a);
        }
    }
    out
}

/// A card for `model`, whose ready work no card holds: a free loaded card whose
/// own model has no ready work, else (the rig runs llm work already) a free bare
/// card not freed within a round trip while script work is ready, else a free
/// loaded card whose model another card also holds and whose switch the waiting
/// work pays for. Smallest card that fits first, then the one whose model has the
/// least work left.
fn place(view: &RigView, ms: &Models<'_>, model: &str) -> Option<RmAction> {
    let mut cands: Vec<&Card> = view
        .cards
        .iter()
        .filter(|c| c.llm_capable && c.free() && !c.cooling_down && fits(view, c, model))
        .collect();
    let left_of = |c: &Card| ms.left(c.model.as_deref().unwrap_or_default());
    cands.sort_by(|a, b| {
        size(a)
            .cmp(&size(b))
            .then(left_of(a).total_cmp(&left_of(b)))
            .then(a.worker.cmp(&b.worker))
    });
    let held = |c: &Card| c.model.clone().unwrap_or_default();
    let sizes = &view.config.models;
    let ready = ms.ready(model);
    let switch = |c: &Card, why: &str| {
        let from = held(c);
        unload(
            c,
            format!(
                "switch to {model}: its llm work is ready ({ready:.0}s) and no card holds it; {why}; unload {from} + load {model} = {:.0}s; {}",
                switch_cost(view, c),
                sizes.note(c, model)
            ),
        )
    };
    let loaded = |c: &&&Card| c.mode == CardMode::Llm;
    if let Some(c) = cands
        .iter()
        .filter(loaded)
        .find(|c| ms.ready(&held(c)) <= 0.0)
    {
        let why = format!("nothing ready needs {}", held(c));
        return Some(switch(c, &why));
    }
    let llm_now = view.cards.iter().any(|c| c.mode.is_llm());
    let cap = llm_card_limit(view);
    // A card freed within a round trip while script work is ready was freed by the
    // policy for that work: loading it again would undo the policy's move.
    let trip = view.config.load_secs + view.config.unload_secs;
    let script_ready = ms.d.ready_script_n > 0;
    let just_freed = |c: &Card| script_ready && c.in_mode_secs < trip;
    if llm_now && llm_cards(view) < cap {
        if let Some(c) = cands
            .iter()
            .find(|c| c.mode == CardMode::Script && !just_freed(c))
        {
            let reason = format!(
                "its llm work is ready ({ready:.0}s) and no card holds it; the smallest free card that fits; load {:.0}s; {}",
                c.load_secs,
                sizes.note(c, model)
            );
            return Some(load(c, model, reason));
        }
    }
    let c = cands.iter().filter(loaded).find(|c| {
        ms.held(&held(c)) > 1
            && ready > switch_cost(view, c)
            && c.in_mode_secs >= 2.0 * switch_cost(view, c)
    })?;
    let why = format!(
        "{} cards hold {} and the ready work pays for the switch",
        ms.held(&held(c)),
        held(c)
    );
    Some(switch(c, &why))
}

/// The policy's `actions` with each load given its model and card (see the module
/// doc); a load that no model with work fits is dropped. Other actions pass.
pub(super) fn assign(view: &RigView, actions: Vec<RmAction>) -> Vec<RmAction> {
    let mut ms = Models::new(view);
    let card = |w: &str| view.cards.iter().find(|c| c.worker == w);
    let targets: Vec<&str> = actions.iter().map(|a| a.worker()).collect();
    // Bare cards the policy did not move, that a load may move to.
    let mut spares: Vec<&Card> = view
        .cards
        .iter()
        .filter(|c| c.llm_capable && c.mode == CardMode::Script && !c.cooling_down)
        // A load queued behind a task past its estimate waits as long as it runs.
        .filter(|c| !c.overdue)
        .filter(|c| !targets.contains(&c.worker.as_str()))
        .collect();
    let mut out = Vec::new();
    for a in actions {
        let RmAction::Load { worker, reason, .. } = &a else {
            out.push(a);
            continue;
        };
        let Some(slot) = card(worker) else {
            out.push(a);
            continue;
        };
        // Cards as available as the policy's: free ones, or any when it took a busy one.
        let pool: Vec<&Card> = std::iter::once(slot)
            .chain(spares.iter().copied().filter(|c| c.free() || !slot.free()))
            .collect();
        let Some(model) = ms.best(|m| pool.iter().any(|c| fits(view, c, m))) else {
            continue;
        };
        let Some(&chosen) = pool
            .iter()
            .filter(|c| fits(view, c, &model))
            .min_by(|a, b| {
                (!a.free())
                    .cmp(&!b.free())
                    .then(size(a).cmp(&size(b)))
                    .then((a.worker != slot.worker).cmp(&(b.worker != slot.worker)))
                    .then(a.worker.cmp(&b.worker))
            })
        else {
            continue;
        };
        spares.retain(|c| c.worker != chosen.worker);
        if chosen.worker != slot.worker {
            spares.push(slot);
        }
        *ms.holders.entry(model.clone()).or_default() += 1;
        let reason = if view.config.models.vram_mb.is_empty() && ms.d.by_model.len() <= 1 {
            reason.clone()
        } else {
            format!("{reason}; {}", view.config.models.note(chosen, &model))
        };
        out.push(load(chosen, &model, reason));
    }
    out
}

/// What rig.toml's sizes make impossible in a plan, at the task's line: an llm
/// task (no `[[endpoint]]` serving it) whose model's `[[model]] vram_mb` fits no
/// `[[gpu]]` with an LLM server, every such card's `vram_mb` being given (a card
/// of unknown size may fit it: its worker reads the real size).
pub fn model_errors(
    plan: &rigmind_plan::ExpandedPlan,
    config: &rigmind_config::RigConfig,
) -> Vec<rigmind_plan::Diagnostic> {
    let sizes = ModelSizes::of(config);
    let cards: Vec<Option<u64>> = config
        .gpus
        .iter()
        .filter(|g| g.llm_server().is_some())
        .map(|g| g.vram_mb)
        .collect();
    if cards.is_empty() || cards.iter().any(|c| c.is_none()) {
        return Vec::new();
    }
    let largest = cards.iter().flatten().max().copied().unwrap_or(0);
    let ladder = crate::ladder::Ladder::of(config);
    let mut out: Vec<rigmind_plan::Diagnostic> = Vec::new();
    for j in plan
        .jobs
        .iter()
        .filter(|j| j.task_class == rigmind_types::TaskClass::Llm)
    {
        let model = crate::tasks::start_model(j, config, &ladder);
        if ladder
            .endpoint_for(&model, j.llm.endpoint.as_deref())
            .is_some()
            || cards.iter().any(|c| sizes.fits(*c, &model))
        {
            continue;
        }
        let d = rigmind_plan::Diagnostic {
            path: plan.path.clone(),
            line: j.line,
            severity: rigmind_plan::Severity::Error,
            message: format!(
                "task '{}': model '{model}' needs {} MB ([[model]] vram_mb) and no [[gpu]] can hold it: the largest card has {largest} MB, less vram_margin_mb {} leaves {} MB",
                j.plan_task_id,
                sizes.need(&model).unwrap_or(0),
                sizes.margin_mb,
                largest.saturating_sub(sizes.margin_mb)
            ),
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;

    const BIG: &str = "qwen2.5:14b";
    const SMALL: &str = "qwen2.5:7b";

    /// `n` ready llm tasks of 60 s for `model`.
    fn llm(model: &str, n: usize, ready_in: f64) -> Vec<Work> {
        let mut w = work(TaskClass::Llm, n, 60.0, ready_in);
        for t in &mut w {
            t.model = Some(model.to_string());
        }
        w
    }

    /// A card of `mb` MB in `mode`, holding `model` when loaded.
    fn sized(worker: &str, mb: u64, mode: CardMode, model: Option<&str>) -> Card {
        let mut c = card(worker, mode);
        c.vram_mb = Some(mb);
        c.model = model.map(str::to_string);
        c
    }

    /// A view whose rig declares the 14B at 10,500 MB (the 7B undeclared) with a
    /// 512 MB margin.
    fn rig(policy: RmPolicy, cards: Vec<Card>, work: Vec<Work>) -> RigView {
        let mut v = view(policy, cards, work);
        v.config.model = SMALL.into();
        v.config.models.vram_mb.insert(BIG.into(), 10_500);
        v.config.models.margin_mb = 512;
        v
    }

    fn loaded(a: &[RmAction]) -> Vec<(&str, &str)> {
        a.iter()
            .filter_map(|a| match a {
                RmAction::Load { worker, model, .. } => Some((worker.as_str(), model.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_card_fits_a_model_by_its_memory_less_the_margin() {
        let v = rig(RmPolicy::Adaptive, vec![], vec![]);
        let s = &v.config.models;
        assert!(s.fits(Some(11_012), BIG));
        assert!(!s.fits(Some(11_011), BIG));
        assert!(s.fits(None, BIG), "a card of unknown size fits anything");
        assert!(
            s.fits(Some(1), SMALL),
            "a model of unknown size fits anywhere"
        );
    }

    #[test]
    fn never_loads_a_model_on_a_card_too_small_for_it() {
        for policy in [
            RmPolicy::Adaptive,
            RmPolicy::Phases,
            RmPolicy::OnDemand,
            RmPolicy::Static { llm_cards: 2 },
        ] {
            // Only 14B work: the small card is never loaded with it.
            let cards = vec![
                sized("w1", 6144, CardMode::Script, None),
                sized("w2", 24_576, CardMode::Script, None),
            ];
            let a = decide(&rig(policy, cards, llm(BIG, 8, 0.0)));
            assert_eq!(loaded(&a), vec![("w2", BIG)], "{policy:?}");
            // With only small cards, nothing is loaded at all.
            let small = vec![sized("w1", 6144, CardMode::Script, None)];
            let a = decide(&rig(policy, small, llm(BIG, 8, 0.0)));
            assert!(loaded(&a).is_empty(), "{policy:?}: {a:?}");
        }
    }

    #[test]
    fn each_model_goes_to_the_smallest_card_that_fits_it() {
        // Both models ready, all four cards bare: the 7B on the small cards, the
        // 14B on a big one, whatever order the policy took the cards in.
        let cards = vec![
            sized("w1", 24_576, CardMode::Script, None),
            sized("w2", 12_288, CardMode::Script, None),
            sized("w3", 6144, CardMode::Script, None),
            sized("w4", 6144, CardMode::Script, None),
        ];
        let mut w = llm(SMALL, 40, 0.0);
        w.extend(llm(BIG, 4, 0.0));
        let a = decide(&rig(RmPolicy::Adaptive, cards.clone(), w));
        let l = loaded(&a);
        assert!(l.contains(&("w2", BIG)), "{l:?}");
        assert!(
            l.contains(&("w3", SMALL)) && l.contains(&("w4", SMALL)),
            "{l:?}"
        );
        assert!(!l.iter().any(|(w, m)| *m == BIG && *w != "w1" && *w != "w2"));
        // One load of the 14B alone: the smaller big card, not the biggest.
        let a = decide(&rig(
            RmPolicy::Static { llm_cards: 1 },
            cards,
            llm(BIG, 4, 0.0),
        ));
        assert_eq!(loaded(&a), vec![("w2", BIG)]);
        let RmAction::Load { reason, .. } = &a[0] else {
            panic!()
        };
        assert!(
            reason.contains("model=qwen2.5:14b fits=yes vram_mb=10500 card_vram_mb=12288"),
            "{reason}"
        );
    }

    #[test]
    fn a_model_switch_counts_as_an_unload_and_a_load() {
        // The big card holds the 7B, which has work left but none ready; the 14B's
        // work is ready and no card holds it: the big card is unloaded, and the
        // reason prices the switch (10 s unload + 120 s load).
        let mut w = llm(SMALL, 3, 500.0);
        w.extend(llm(BIG, 3, 0.0));
        let cards = vec![
            sized("w1", 6144, CardMode::Llm, Some(SMALL)),
            sized("w2", 24_576, CardMode::Llm, Some(SMALL)),
        ];
        let a = decide(&rig(RmPolicy::Adaptive, cards, w.clone()));
        assert_eq!(unloads(&a), vec!["w2"], "{a:?}");
        let reason = unload_reason(&a[0]);
        assert!(
            reason.contains("unload qwen2.5:7b + load qwen2.5:14b = 130s"),
            "{reason}"
        );
        assert!(reason.contains("model=qwen2.5:14b fits=yes"), "{reason}");
        // Once bare, the next round loads the 14B on it.
        let cards = vec![
            sized("w1", 6144, CardMode::Llm, Some(SMALL)),
            sized("w2", 24_576, CardMode::Script, None),
        ];
        let a = decide(&rig(RmPolicy::Adaptive, cards, w));
        assert_eq!(loaded(&a), vec![("w2", BIG)], "{a:?}");
    }

    #[test]
    fn a_switch_waits_while_the_cards_model_is_the_only_copy_with_ready_work() {
        // The only big card holds the only 7B copy and 7B work is ready: no switch
        // (the 7B would starve); a second 7B card makes the switch possible once
        // the waiting 14B work pays for it.
        let mut w = llm(SMALL, 6, 0.0);
        w.extend(llm(BIG, 6, 0.0));
        let mut big = sized("w2", 24_576, CardMode::Llm, Some(SMALL));
        big.in_mode_secs = 1000.0;
        let a = decide(&rig(RmPolicy::Adaptive, vec![big.clone()], w.clone()));
        assert!(unloads(&a).is_empty(), "{a:?}");
        let mut small = sized("w1", 6144, CardMode::Llm, Some(SMALL));
        small.running = Some(TaskClass::Llm);
        let a = decide(&rig(RmPolicy::Adaptive, vec![small, big], w));
        assert_eq!(unloads(&a), vec!["w2"], "{a:?}");
    }

    #[test]
    fn a_model_no_card_can_hold_is_an_error_at_its_task() {
        let plan = |model: &str| {
            let text = format!(
                "# Plan: p\n\n## Task: judge\n- task_class: llm\n- model: {model}\n- for_each: [a, b]\n- prompt: hi {{item}}\n"
            );
            let p = rigmind_plan::parse_str(std::path::Path::new("p.md"), &text).unwrap();
            rigmind_plan::expand(&p, &Default::default()).unwrap()
        };
        let rig = |gpus: &str| {
            let text = format!("[[model]]\nname = \"qwen2.5:14b\"\nvram_mb = 10500\n{gpus}");
            rigmind_config::RigConfig::parse(std::path::Path::new("rig.toml"), &text).unwrap()
        };
        let gpu = |i: u32, mb: &str| {
            format!("\n[[gpu]]\nindex = {i}\nollama = \"http://127.0.0.1:1143{i}\"\n{mb}\n")
        };
        let small = rig(&(gpu(0, "vram_mb = 6144") + &gpu(1, "vram_mb = 8192")));
        let e = model_errors(&plan("qwen2.5:14b"), &small);
        assert_eq!(e.len(), 1, "one finding for the fanned-out task: {e:?}");
        assert_eq!(e[0].line, 3);
        assert_eq!(
            e[0].message,
            "task 'judge': model 'qwen2.5:14b' needs 10500 MB ([[model]] vram_mb) and no [[gpu]] can hold it: the largest card has 8192 MB, less vram_margin_mb 512 leaves 7680 MB"
        );
        assert!(model_errors(&plan("qwen2.5:7b"), &small).is_empty());
        // A big card, or one of unknown size, may hold it.
        let big = rig(&(gpu(0, "vram_mb = 6144") + &gpu(1, "vram_mb = 24576")));
        assert!(model_errors(&plan("qwen2.5:14b"), &big).is_empty());
        let unknown = rig(&(gpu(0, "vram_mb = 6144") + &gpu(1, "")));
        assert!(model_errors(&plan("qwen2.5:14b"), &unknown).is_empty());
    }

    #[test]
    fn a_card_freed_a_moment_ago_for_ready_scripts_is_not_loaded_again() {
        // w1 runs the 7B; w2 was freed 5 s ago; the 14B's work waits and no card
        // holds it.
        let mut w1 = sized("w1", 24_576, CardMode::Llm, Some(SMALL));
        w1.running = Some(TaskClass::Llm);
        let mut w2 = sized("w2", 24_576, CardMode::Script, None);
        w2.in_mode_secs = 5.0;
        let mut w = llm(BIG, 4, 0.0);
        w.extend(llm(SMALL, 4, 0.0));
        w.extend(work(TaskClass::Script, 3, 60.0, 0.0));
        let mut v = rig(RmPolicy::Adaptive, vec![w1, w2], w);
        // Script work is ready: the policy freed w2 for it; the model step leaves it.
        assert!(loaded(&super::switches(&v)).is_empty());
        // Freed a round trip ago (130 s), or no script work ready: loaded at once.
        v.cards[1].in_mode_secs = 131.0;
        assert_eq!(loaded(&super::switches(&v)), vec![("w2", BIG)]);
        v.cards[1].in_mode_secs = 5.0;
        v.work.retain(|w| w.class == TaskClass::Llm);
        assert_eq!(loaded(&super::switches(&v)), vec![("w2", BIG)]);
    }
}
