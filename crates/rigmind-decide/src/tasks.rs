//! The batch a plan becomes, before any file is written: its task files
//! ([`task_files`]) and the brain's job for each ([`job_of`]). Pure: a submission
//! writes what these return, and the simulator runs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rigmind_config::RigConfig;
use rigmind_plan::{Diagnostic, ExpandedPlan, Severity};
use rigmind_queue::task::{TaskFile, TaskStatus};
use rigmind_types::{canonical_model, TaskClass};

use crate::ladder::Ladder;
use crate::state::{Job, JobStatus};

/// The task files of `plan` as batch `batch_id`, all pending, in plan order: what a
/// submission writes, and what the simulator runs. Pure. Their submission
/// sequence numbers (`seq_base` onward) follow [`claim_order`], not plan order.
pub fn task_files(
    plan: &ExpandedPlan,
    batch_id: &str,
    seq_base: u64,
    config: &RigConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<TaskFile> {
    let plan_file = absolute(&plan.path);
    let workdir = absolute(&plan.dir);
    let ladder = Ladder::of(config);
    let place = claim_order(plan);
    plan.jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let mut t = TaskFile::new(batch_id, &j.name, j.task_class);
            t.plan_task_id = j.plan_task_id.clone();
            t.released_by = Some(rigmind_queue::task::RELEASED_BY_BRAIN.to_string());
            t.executor = j.executor;
            t.command = j.command.clone();
            t.depends_on = j.depends_on_names.clone();
            t.priority = j.priority;
            t.status = TaskStatus::Pending;
            t.created_at = Some(now);
            t.seq = seq_base + place[i];
            t.plan_file = Some(plan_file.clone());
            t.workdir = Some(workdir.clone());
            t.timeout_seconds = j.timeout_secs;
            t.retries = j.retries;
            t.group = j.group.clone();
            t.vram_mb = j.vram_mb;
            // A group's `mem_mb` is what its tasks reserve when they do not say.
            t.mem_mb = j.mem_mb.or_else(|| {
                let g = j.group.as_ref()?;
                config.group_mem_mb.get(g).copied()
            });
            t.mem_limit_mb = j.mem_limit_mb;
            t.env = j.env.iter().cloned().collect::<BTreeMap<_, _>>();
            t.model = match (j.task_class, &j.llm.model) {
                (TaskClass::Llm, None) => Some(config.llm.model.clone()),
                (_, m) => m.as_deref().map(rigmind_types::canonical_model),
            };
            t.prompt = j.llm.prompt.clone();
            t.prompt_file = j.llm.prompt_file.clone();
            t.system = j.llm.system.clone();
            t.output = j.llm.output.clone();
            t.write_outside = j.llm.write_outside;
            t.sensitive = j.llm.sensitive;
            if j.task_class == TaskClass::Llm {
                route(&mut t, &j.llm, &ladder);
            }
            t.estimate_seconds = j.estimate_secs;
            t.item = j.item.clone();
            t.stem = j.stem.clone();
            t.index = j.index;
            t
        })
        .collect()
}

/// Each job's place in its batch's claim order (0 first): the longest chain of
/// written estimates from the job to the batch's end first, plan order among equals.
///
/// Among tasks of one priority that are ready together, a worker takes the one that
/// holds the most work behind it (critical-path list scheduling, as Snakemake favours
/// jobs with more descendants): a batch whose pages take longest, or whose stage leads
/// to a long tail, starts first instead of last because the plan lists it last. The
/// items of one `for_each` keep their order where their chains are equal (a task
/// that waits on one named item moves that item ahead). Pure and deterministic; a
/// lost task is re-created under its job's own number all the same
/// (`rigmind_brain::lost::as_job`), since editing an estimate renumbers the plan.
pub fn claim_order(plan: &ExpandedPlan) -> Vec<u64> {
    let n = plan.jobs.len();
    let dependents = plan.dependents();
    // A dependent's tail is known before its dependencies' when summed back along
    // the topological order. Validation refuses cycles; a job on one would keep its
    // own estimate as its tail.
    let order = plan.topological();
    let own = |i: usize| {
        plan.jobs[i]
            .estimate_secs
            .unwrap_or(crate::estimate::DEFAULT_ESTIMATE_SECS)
    };
    let mut tail: Vec<f64> = (0..n).map(own).collect();
    for &i in order.iter().rev() {
        let behind = dependents[i].iter().map(|&d| tail[d]).fold(0.0, f64::max);
        tail[i] = own(i) + behind;
    }
    let mut by_tail: Vec<usize> = (0..n).collect();
    by_tail.sort_by(|&a, &b| tail[b].total_cmp(&tail[a]).then(a.cmp(&b)));
    let mut place = vec![0u64; n];
    for (k, &i) in by_tail.iter().enumerate() {
        place[i] = k as u64;
    }
    place
}

/// The llm jobs of `plan` that need a card's LLM server: those no
/// `[[endpoint]]` serves (on the tier they start on).
pub fn card_llm_jobs(plan: &ExpandedPlan, config: &RigConfig) -> usize {
    let ladder = Ladder::of(config);
    plan.jobs
        .iter()
        .filter(|j| j.task_class == TaskClass::Llm)
        .filter(|j| {
            ladder
                .endpoint_for(&start_model(j, config, &ladder), j.llm.endpoint.as_deref())
                .is_none()
        })
        .count()
}

/// The model an llm job starts on: its own (or rig.toml's default), moved to
/// the tier it starts on.
pub(crate) fn start_model(j: &rigmind_plan::Job, config: &RigConfig, ladder: &Ladder) -> String {
    let model = j
        .llm
        .model
        .clone()
        .unwrap_or_else(|| config.llm.model.clone());
    ladder
        .start(&model, j.llm.requires_external)
        .map_or(model, |(_, m)| m)
}

/// What rig.toml makes wrong in a plan, at the task's line: an `endpoint:` that
/// no `[[endpoint]]` declares, or one that serves neither the model the task
/// starts on nor any tier it can climb to (the pin applies on the tiers the
/// endpoint serves). Whether a card serves a model cannot be known here: a
/// worker's server may be given on its command line, and Ollama pulls any model.
pub fn endpoint_errors(plan: &ExpandedPlan, config: &RigConfig) -> Vec<Diagnostic> {
    let ladder = Ladder::of(config);
    let known: Vec<&str> = ladder.endpoints.iter().map(|(n, _)| n.as_str()).collect();
    let mut out: Vec<Diagnostic> = Vec::new();
    for j in plan.jobs.iter().filter(|j| j.task_class == TaskClass::Llm) {
        let Some(pin) = j.llm.endpoint.as_deref() else {
            continue;
        };
        let model = start_model(j, config, &ladder);
        let climbs = reachable(&ladder, &model);
        let message = match ladder.endpoints.iter().find(|(n, _)| n == pin) {
            None if known.is_empty() => format!(
                "task '{}': endpoint '{pin}' is not declared in rig.toml (it declares no [[endpoint]])",
                j.plan_task_id
            ),
            None => format!(
                "task '{}': endpoint '{pin}' is not declared in rig.toml (known endpoints: {})",
                j.plan_task_id,
                known.join(", ")
            ),
            Some((_, models)) if !climbs.iter().any(|m| models.contains(m)) => format!(
                "task '{}': endpoint '{pin}' serves neither model '{model}' nor a tier above it (it serves: {})",
                j.plan_task_id,
                spelled_models(config, pin)
            ),
            Some(_) => continue,
        };
        let d = Diagnostic {
            path: plan.path.clone(),
            line: j.line,
            severity: Severity::Error,
            message,
        };
        // A fanned-out task is one finding, not one per item.
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// An endpoint's models as rig.toml spells them.
fn spelled_models(config: &RigConfig, endpoint: &str) -> String {
    config
        .endpoints
        .iter()
        .find(|e| e.name == endpoint)
        .map(|e| e.models.join(", "))
        .unwrap_or_default()
}

/// The models a task that starts on `model` may run with: it, and the tiers
/// above it when it is on the ladder (canonical).
fn reachable(ladder: &Ladder, model: &str) -> Vec<String> {
    let model = canonical_model(model);
    match ladder.tiers.iter().position(|t| *t == model) {
        Some(i) => ladder.tiers[i..].to_vec(),
        None => vec![model],
    }
}

/// Puts an llm task on its escalation tier and its endpoint: `expect`,
/// `requires_external`, the tier's model, and the endpoint that serves it.
fn route(t: &mut TaskFile, llm: &rigmind_plan::LlmFields, ladder: &Ladder) {
    t.expect = llm.expect_json.then(|| "json".to_string());
    t.requires_external = llm.requires_external;
    let model = t.model.clone().unwrap_or_default();
    if let Some((tier, m)) = ladder.start(&model, llm.requires_external) {
        t.tier = Some(tier);
        t.model = Some(m);
    }
    let model = t.model.clone().unwrap_or_default();
    t.pinned_endpoint = llm.endpoint.clone();
    t.endpoint = ladder.endpoint_for(&model, llm.endpoint.as_deref());
}

/// The brain's job for a task file that waits on the jobs at `deps` (pending).
pub fn job_of(t: &TaskFile, deps: Vec<usize>) -> Job {
    Job {
        name: t.name.clone(),
        plan_task_id: t.plan_task_id.clone(),
        task_id: t.task_id.clone(),
        file_name: t.file_name(),
        status: JobStatus::Pending,
        deps,
        dependents: Vec::new(),
        unmet: 0,
        holder: None,
        kill_sent: false,
        retry_count: t.retry_count,
        work: crate::state::JobWork::of(t),
    }
}

/// `p` made absolute (as it is, if the current directory cannot be read).
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(text: &str) -> ExpandedPlan {
        let p = rigmind_plan::parse_str(Path::new("p.md"), text).expect("plan parses");
        rigmind_plan::expand(&p, &Default::default()).expect("plan expands")
    }

    /// Each job's name in claim order.
    fn claimed(plan: &ExpandedPlan) -> Vec<String> {
        let place = claim_order(plan);
        let mut names: Vec<(u64, &str)> = plan
            .jobs
            .iter()
            .zip(&place)
            .map(|(j, &p)| (p, j.name.as_str()))
            .collect();
        names.sort();
        names.into_iter().map(|(_, n)| n.to_string()).collect()
    }

    #[test]
    fn the_batch_with_the_longest_chain_behind_it_is_claimed_first() {
        // Batch b is listed last but its pages take longest, and its embedding
        // too: its pages come first, in item order; then a's; then the
        // embeddings, b's (longer) first.
        let plan = expanded(
            "# Plan: p\n\n\
             ## Task: ocr_a\n- task_class: script\n- for_each: [a1, a2]\n- estimate: 60s\n- command: `true`\n\n\
             ## Task: embed_a\n- task_class: script\n- depends_on: ocr_a\n- estimate: 100s\n- command: `true`\n\n\
             ## Task: ocr_b\n- task_class: script\n- for_each: [b1, b2]\n- estimate: 120s\n- command: `true`\n\n\
             ## Task: embed_b\n- task_class: script\n- depends_on: ocr_b\n- estimate: 150s\n- command: `true`\n",
        );
        assert_eq!(
            claimed(&plan),
            [
                "ocr_b[b1]",
                "ocr_b[b2]",
                "ocr_a[a1]",
                "ocr_a[a2]",
                "embed_b",
                "embed_a"
            ]
        );
    }

    #[test]
    fn equal_chains_keep_plan_order_and_the_numbers_are_the_batchs_own() {
        let plan = expanded(
            "# Plan: p\n\n\
             ## Task: one\n- task_class: cpu\n- command: `true`\n\n\
             ## Task: two\n- task_class: cpu\n- command: `true`\n\n\
             ## Task: three\n- task_class: cpu\n- command: `true`\n",
        );
        assert_eq!(claimed(&plan), ["one", "two", "three"]);
        let config = rigmind_config::RigConfig::parse(Path::new("rig.toml"), "")
            .expect("an empty rig.toml is the defaults");
        let now = chrono::Utc::now();
        let seqs: Vec<u64> = task_files(&plan, "b", 40, &config, now)
            .iter()
            .map(|t| t.seq)
            .collect();
        assert_eq!(seqs, [40, 41, 42]);
    }
}
