//! The claim rule: which queued task a worker may claim now ([`tier`]), from what
//! it is and holds ([`ClaimContext::new`], with the classes a worker claims by
//! default, [`default_classes`]), which concurrency groups are at their limit
//! ([`full_groups`], over the groups each running task holds, [`held_groups`]),
//! whether the rig's shared limits let a task start
//! ([`admissible`]), and the state its card is in while it runs a task
//! ([`state_for`]). The live worker and the simulator both call these.

use chrono::{DateTime, Utc};
use rigmind_queue::claim::QueueEntry;
use rigmind_queue::task::{TaskName, TaskStatus, LOAD_LLM};
use rigmind_types::{Executor, GpuState, TaskClass};

/// The concurrency groups at their limit, from the groups of the tasks running.
/// Defined beside the claim lock (`rigmind_queue::claim`), which counts
/// `processing/` under the lock with it; the simulator counts its running tasks.
pub use rigmind_queue::claim::full_groups;

/// Whether a queued task may start as far as the rig's shared limits go (its
/// groups not full, its memory reservation fitting), before [`tier`]. Defined
/// beside the claim lock, which calls it under the lock; the simulator too.
pub use rigmind_queue::claim::{admissible, Refusal};

/// The concurrency groups a running task holds (its endpoint's implicit group and
/// its own), as both counts of [`full_groups`] name them.
pub use rigmind_queue::task::held_groups;

/// The RAM free for a memory reservation, from the host's available RAM, the
/// reservations held and `[safety] min_free_ram_mb`. Defined beside the claim
/// lock (`rigmind_queue::memory`), which feeds it `processing/` under the lock;
/// the simulator feeds it its virtual host and running tasks.
pub use rigmind_queue::memory::{fits, room_mb, Reservation};

/// What a worker is and holds at the moment it picks a task.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimContext<'a> {
    pub worker: &'a str,
    /// The classes it claims; the first is preferred on a card without a model.
    pub classes: &'a [TaskClass],
    /// It is pinned to a GPU: script and llm work follow the card's state.
    pub gpu: bool,
    /// The model its LLM server holds.
    pub model: Option<&'a str>,
    /// It has an LLM server.
    pub llm: bool,
    /// Memory free on its card (`None`: not known, no VRAM gate).
    pub vram_free_mb: Option<u64>,
    /// No safety gate is violated.
    pub gates_clear: bool,
    pub now: DateTime<Utc>,
}

/// The GPU card a worker is pinned to, as a claim sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimCard<'a> {
    /// The model its LLM server holds.
    pub model: Option<&'a str>,
    /// Memory free on it (`None`: not known, no VRAM gate).
    pub vram_free_mb: Option<u64>,
}

impl<'a> ClaimContext<'a> {
    /// What a worker is at `now`: its id and classes, its card (`None`: a cpu
    /// worker, pinned to no GPU), whether it has an LLM server, and whether every
    /// safety gate is clear.
    pub fn new(
        worker: &'a str,
        classes: &'a [TaskClass],
        card: Option<ClaimCard<'a>>,
        llm: bool,
        gates_clear: bool,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            worker,
            classes,
            gpu: card.is_some(),
            model: card.and_then(|c| c.model),
            llm,
            vram_free_mb: card.and_then(|c| c.vram_free_mb),
            gates_clear,
            now,
        }
    }
}

/// The classes a worker claims when it is not told (`--classes`): script and cpu
/// work on a card, llm work too with an LLM server; cpu work alone without a card.
/// Script first: a card without a model prefers it.
pub fn default_classes(card: bool, llm: bool) -> Vec<TaskClass> {
    match (card, llm) {
        (true, true) => vec![TaskClass::Script, TaskClass::Llm, TaskClass::Cpu],
        (true, false) => vec![TaskClass::Script, TaskClass::Cpu],
        (false, _) => vec![TaskClass::Cpu],
    }
}

/// The claim tier of a queued task for this worker (queue-layout.md, claim order):
/// 0 for resource tasks addressed to it, 1 for its preferred class (llm on a card
/// with its model loaded, else its first class), 2 for other classes it may run now;
/// `None` when it may not claim the task now.
///
/// A card with its model loaded runs no script task and a card without it runs no
/// llm task; `vram_mb` must fit in the free memory; while a safety gate is violated
/// only cpu work and unloads are claimed.
pub fn tier(ctx: &ClaimContext<'_>, e: &QueueEntry) -> Option<u8> {
    // A file without `released_by` was dropped in by hand: it waits until the
    // brain has logged it (decision=hand_task).
    if e.executor != Executor::Worker || e.status != TaskStatus::Queued || !e.released {
        return None;
    }
    if e.not_before.is_some_and(|t| t > ctx.now) {
        return None;
    }
    if e.target_worker.as_ref().is_some_and(|t| t != ctx.worker) {
        return None;
    }
    let class = e.task_class?;
    // An endpoint task needs no card: the worker's endpoint lane takes it
    // ([`endpoint_tier`]), beside whatever its card runs.
    if e.endpoint.is_some() {
        return None;
    }
    if class == TaskClass::Resource {
        // Addressed to this worker (or to nobody, by hand): taken first. A worker
        // without an LLM server takes it too, and fails it with a clear error.
        let is_load = TaskName::parse(&e.file_name).is_some_and(|n| n.name == LOAD_LLM);
        return (ctx.gates_clear || !is_load).then_some(0);
    }
    if !ctx.classes.contains(&class) {
        return None;
    }
    let heavy = matches!(class, TaskClass::Script | TaskClass::Llm);
    if heavy && !ctx.gates_clear {
        return None;
    }
    // An llm task runs in the model's memory, already taken on a loaded card: its
    // `vram_mb` (often inherited from a plan's defaults) gates nothing.
    if let (Some(need), Some(free)) = (e.vram_mb, ctx.vram_free_mb) {
        if need > free && class != TaskClass::Llm {
            return None;
        }
    }
    if ctx.gpu && !card_runs(ctx.model.is_some(), class) {
        return None;
    }
    match class {
        TaskClass::Llm => {
            let loaded = rigmind_types::canonical_model(ctx.model?);
            if e.model
                .as_deref()
                .is_some_and(|m| rigmind_types::canonical_model(m) != loaded)
            {
                return None;
            }
            Some(1)
        }
        _ if ctx.model.is_some() => Some(2),
        _ => Some(if ctx.classes.first() == Some(&class) {
            1
        } else {
            2
        }),
    }
}

/// The claim tier of a queued task for a worker's endpoint lane: every worker,
/// cpu workers too, runs llm tasks an `[[endpoint]]` serves, beside its card or
/// cpu task and whatever its classes and card state (the endpoint's own limit,
/// `endpoint:<name>` under the claim lock, bounds them). `None` for every other
/// task, and for one not claimable now.
pub fn endpoint_tier(ctx: &ClaimContext<'_>, e: &QueueEntry) -> Option<u8> {
    if e.executor != Executor::Worker || e.status != TaskStatus::Queued || !e.released {
        return None;
    }
    if e.not_before.is_some_and(|t| t > ctx.now) || e.endpoint.is_none() {
        return None;
    }
    if e.target_worker.as_ref().is_some_and(|t| t != ctx.worker) {
        return None;
    }
    (e.task_class == Some(TaskClass::Llm)).then_some(1)
}

/// The card rule: whether a GPU card, with its model `loaded` or not, runs ordinary
/// work of `class`. A loaded card runs no script work and a bare card no llm work;
/// cpu work runs on either. Resource tasks are not ordinary work: [`tier`] takes
/// them first, addressed to their worker. The projection's cards follow it too.
pub fn card_runs(loaded: bool, class: TaskClass) -> bool {
    match class {
        TaskClass::Cpu => true,
        TaskClass::Script => !loaded,
        TaskClass::Llm => loaded,
        TaskClass::Resource => false,
    }
}

/// The state of a card holding `model` while it runs `running` (class and task
/// name), or nothing. The simulator calls it too.
pub fn state_for(model: Option<&str>, running: Option<(TaskClass, &str)>) -> GpuState {
    match running {
        Some((TaskClass::Resource, name)) if name == LOAD_LLM => GpuState::BootingLlm,
        Some((TaskClass::Resource, _)) => GpuState::BootingScript,
        Some((TaskClass::Llm, _)) => GpuState::LlmBusy,
        Some((TaskClass::Script, _)) if model.is_none() => GpuState::ScriptBusy,
        _ if model.is_some() => GpuState::LlmReady,
        _ => GpuState::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(class: TaskClass) -> QueueEntry {
        QueueEntry {
            file_name: format!("p05-00000001-b-{class}.json"),
            status: TaskStatus::Queued,
            task_class: Some(class),
            executor: Executor::Worker,
            target_worker: None,
            not_before: None,
            vram_mb: None,
            mem_mb: None,
            group: None,
            model: (class == TaskClass::Llm).then(|| "m".to_string()),
            endpoint: None,
            released: true,
            rank: 5,
            seq: 1,
            created_at: None,
        }
    }

    const GPU_CLASSES: [TaskClass; 3] = [TaskClass::Script, TaskClass::Llm, TaskClass::Cpu];

    fn ctx(model: Option<&'static str>) -> ClaimContext<'static> {
        ClaimContext {
            worker: "w1",
            classes: &GPU_CLASSES,
            gpu: true,
            model,
            llm: true,
            vram_free_mb: Some(6000),
            gates_clear: true,
            now: Utc::now(),
        }
    }

    #[test]
    fn endpoint_tasks_go_to_the_endpoint_lane_of_any_worker() {
        let mut l = entry(TaskClass::Llm);
        l.endpoint = Some("lan".into());
        for model in [None, Some("m")] {
            assert_eq!(tier(&ctx(model), &l), None, "never the card's lane");
            assert_eq!(endpoint_tier(&ctx(model), &l), Some(1));
        }
        let classes = [TaskClass::Cpu];
        let cpu = ClaimContext::new("c1", &classes, None, false, false, Utc::now());
        assert_eq!(endpoint_tier(&cpu, &l), Some(1), "cpu workers too");
        assert_eq!(endpoint_tier(&cpu, &entry(TaskClass::Llm)), None);
        assert_eq!(endpoint_tier(&cpu, &entry(TaskClass::Cpu)), None);
    }

    #[test]
    fn a_card_runs_script_or_llm_work_by_its_state_never_both() {
        let (s, l, c) = (
            entry(TaskClass::Script),
            entry(TaskClass::Llm),
            entry(TaskClass::Cpu),
        );
        let bare = ctx(None);
        assert_eq!(
            (tier(&bare, &s), tier(&bare, &l), tier(&bare, &c)),
            (Some(1), None, Some(2))
        );
        let loaded = ctx(Some("m"));
        assert_eq!(
            (tier(&loaded, &s), tier(&loaded, &l), tier(&loaded, &c)),
            (None, Some(1), Some(2))
        );
        let other = ctx(Some("other-model"));
        assert_eq!(
            tier(&other, &l),
            None,
            "an llm task for another model waits"
        );
    }

    #[test]
    fn the_card_rule_loaded_runs_llm_bare_runs_script_cpu_runs_anywhere() {
        use TaskClass::*;
        let runs = |loaded| [Cpu, Script, Llm, Resource].map(|c| card_runs(loaded, c));
        assert_eq!(runs(false), [true, true, false, false]);
        assert_eq!(runs(true), [true, false, true, false]);
    }

    #[test]
    fn a_task_the_brain_has_not_let_in_is_never_claimed() {
        let mut hand = entry(TaskClass::Cpu);
        assert!(tier(&ctx(None), &hand).is_some());
        hand.released = false;
        assert_eq!(tier(&ctx(None), &hand), None);
    }

    #[test]
    fn resource_tasks_come_first_and_only_to_their_worker() {
        let mut r = entry(TaskClass::Resource);
        r.file_name = "p00-00000001-rm-load_llm.json".into();
        r.target_worker = Some("w1".into());
        assert_eq!(tier(&ctx(None), &r), Some(0));
        r.target_worker = Some("w2".into());
        assert_eq!(tier(&ctx(None), &r), None);
    }

    #[test]
    fn vram_and_safety_gates_hold_heavy_work_back() {
        let mut s = entry(TaskClass::Script);
        s.vram_mb = Some(7000);
        assert_eq!(tier(&ctx(None), &s), None);
        s.vram_mb = Some(5000);
        assert_eq!(tier(&ctx(None), &s), Some(1));
        let mut hot = ctx(None);
        hot.gates_clear = false;
        assert_eq!(tier(&hot, &s), None);
        assert_eq!(
            tier(&hot, &entry(TaskClass::Cpu)),
            Some(2),
            "cpu work goes on"
        );
        let mut load = entry(TaskClass::Resource);
        load.file_name = "p00-00000001-rm-load_llm.json".into();
        let mut unload = entry(TaskClass::Resource);
        unload.file_name = "p00-00000002-rm-unload_llm.json".into();
        assert_eq!((tier(&hot, &load), tier(&hot, &unload)), (None, Some(0)));
    }

    #[test]
    fn a_cpu_worker_keeps_its_classes() {
        let classes = [TaskClass::Cpu];
        let c = ClaimContext {
            worker: "c1",
            classes: &classes,
            gpu: false,
            model: None,
            llm: false,
            vram_free_mb: None,
            gates_clear: true,
            now: Utc::now(),
        };
        assert_eq!(tier(&c, &entry(TaskClass::Cpu)), Some(1));
        assert_eq!(tier(&c, &entry(TaskClass::Script)), None);
    }

    #[test]
    fn an_llm_task_runs_in_the_models_memory_and_names_match_without_their_tag() {
        let mut l = entry(TaskClass::Llm);
        l.vram_mb = Some(3000);
        let mut loaded = ctx(Some("m"));
        loaded.vram_free_mb = Some(1600);
        assert_eq!(
            tier(&loaded, &l),
            Some(1),
            "the model already holds the memory"
        );
        l.model = Some("m:latest".into());
        assert_eq!(tier(&loaded, &l), Some(1), "'m' is 'm:latest'");
    }
}
