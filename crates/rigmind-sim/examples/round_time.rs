//! How long one decision round of the resource manager takes on big batches:
//! `resources::view_of` (the work of the brain's state, grouped) and
//! `resources::decide` (every projection and the decision), through the simulator's
//! entry point `round::resources`, as the live brain runs it each round.
//!
//! The batch: `prep` (script) → `label` (llm, item-wise) → `post` (script,
//! item-wise), N/3 items each, just submitted (every `prep` ready), on five cards (two
//! holding the model). Prints the median and the least of the rounds per size, in
//! milliseconds of wall-clock, and the mean of the thread's CPU time (on a loaded
//! machine the CPU time is the round's cost, the wall-clock time also its waiting).
//!
//! With `--two-models K`: K such chains side by side (N/3K items each), the
//! chains' `label` alternating between the 7B and a 14B that only gpu1 (24 GB)
//! holds; gpu0 holds the 7B, gpu1 the 14B. The projection then tracks which card
//! holds which model, and the model step's moves, at every step.
//!
//! Usage: cargo run --release -p rigmind-sim --example round_time [-- SIZES...
//! [--rounds R] [--two-models K]] (default sizes 1000 10000 100000, 11 rounds).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rigmind_config::RigConfig;
use rigmind_decide::resources::{view_of, CardFacts, RmConfig};
use rigmind_decide::state::{Batch, BrainState};
use rigmind_decide::tasks::{job_of, task_files};
use rigmind_plan::ExpandDefaults;
use rigmind_queue::batch::BatchRecord;
use rigmind_sim::round;
use rigmind_types::TaskClass;

const RIG: &str = r#"
[llm]
model = "qwen2.5:7b"
load_seconds = 120
unload_seconds = 10

[resource_manager]
policy = "adaptive"
"#;

/// The plan of `n` tasks (rounded down to a multiple of `3 * chains`): `chains`
/// chains prep → label → post, the labels of odd chains on the 14B when
/// `two_models`.
fn plan_text(n: usize, chains: usize, two_models: bool) -> String {
    let per = n / (3 * chains);
    let mut text = "# Plan: round-time\n\n".to_string();
    for c in 0..chains {
        let items: Vec<String> = (0..per).map(|i| format!("i{i:06}")).collect();
        let list = format!("[{}]", items.join(", "));
        let model = if two_models && c % 2 == 1 {
            "- model: qwen2.5:14b\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "## Task: prep{c}\n- task_class: script\n- for_each: {list}\n- estimate: 30s\n- command: `true {{item}}`\n\n\
             ## Task: label{c}\n- task_class: llm\n- depends_on: prep{c}\n- for_each: {list}\n- estimate: 10s\n{model}- prompt: Label {{item}}.\n\n\
             ## Task: post{c}\n- task_class: script\n- depends_on: label{c}\n- for_each: {list}\n- estimate: 20s\n- command: `true {{item}}`\n\n"
        ));
    }
    text
}

/// The rig: five cards, gpu0 and gpu1 with an LLM server; with `two_models`, gpu1
/// is a 24 GB card and the 14B is declared (10,500 MB).
fn rig(two_models: bool) -> RigConfig {
    let mut t = RIG.to_string();
    if two_models {
        t.push_str("\n[[model]]\nname = \"qwen2.5:14b\"\nvram_mb = 10500\n");
    }
    for i in 0..5 {
        let mb = if two_models && i == 1 { 24576 } else { 6144 };
        t.push_str(&format!(
            "\n[[gpu]]\nindex = {i}\nworker = \"gpu{i}\"\nvram_mb = {mb}\n"
        ));
        if i < 2 {
            t.push_str(&format!("ollama = \"http://127.0.0.1:{}\"\n", 11434 + i));
        }
    }
    RigConfig::parse(Path::new("rig.toml"), &t).expect("the rig parses")
}

/// The brain's state just after submitting the plan of `n` tasks.
fn state(n: usize, rig: &RigConfig, chains: usize, two_models: bool) -> BrainState {
    let text = plan_text(n, chains, two_models);
    let parsed = rigmind_plan::parse_str(Path::new("/nonexistent/plan.md"), &text).expect("plan");
    let plan = rigmind_plan::expand(&parsed, &ExpandDefaults::default()).expect("expands");
    let now = rigmind_sim::engine::epoch();
    let tasks = task_files(&plan, "bench", 1, rig, now);
    let jobs: Vec<_> = tasks
        .iter()
        .zip(&plan.jobs)
        .map(|(t, j)| job_of(t, j.depends_on.clone()))
        .collect();
    let record = BatchRecord::submitted(
        "bench",
        &plan.name,
        plan.path.clone(),
        plan.dir.clone(),
        now,
        jobs.len(),
        1,
    );
    let mut state = BrainState::default();
    state.insert(Batch::new(record, jobs));
    state
}

fn facts(two_models: bool) -> Vec<CardFacts> {
    (0..5)
        .map(|i| CardFacts {
            worker: format!("gpu{i}"),
            loaded: i < 2,
            model: (i < 2).then(|| {
                if two_models && i == 1 {
                    "qwen2.5:14b".to_string()
                } else {
                    "qwen2.5:7b".to_string()
                }
            }),
            running: None::<TaskClass>,
            running_task: None,
            llm_idle_secs: 0.0,
            in_mode_secs: 1000.0,
            llm_capable: i < 2,
            cooling_down: false,
            vram_mb: Some(if two_models && i == 1 { 24576 } else { 6144 }),
        })
        .collect()
}

/// CPU time this thread has run, in ms (`/proc/thread-self/schedstat`; counted in
/// scheduler ticks here, so only the mean over the rounds means anything): on a
/// loaded machine, what a round costs rather than how long it waited.
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: f64 = s
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    ns / 1e6
}

/// The median and the least of `xs`: on a loaded machine the least is the round
/// that ran undisturbed.
fn median_min(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    format!("{:.2} / {:.2}", xs[xs.len() / 2], xs[0])
}

fn main() {
    let mut sizes = Vec::new();
    let mut rounds = 11usize;
    let mut chains: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args
                .next()
                .and_then(|r| r.parse().ok())
                .expect("--rounds N");
        } else if a == "--two-models" {
            chains = Some(
                args.next()
                    .and_then(|k| k.parse().ok())
                    .filter(|k| *k >= 2)
                    .expect("--two-models K (K >= 2 chains)"),
            );
        } else {
            sizes.push(a.parse::<usize>().expect("a size"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000, 100_000];
    }
    let two_models = chains.is_some();
    let chains = chains.unwrap_or(1);
    let rig = rig(two_models);
    let config = RmConfig::from_rig(&rig);
    let facts = facts(two_models);
    let in_flight = BTreeMap::new();
    let now = rigmind_sim::engine::epoch();
    println!("| unfinished tasks | view_of, ms (median / least) | whole round, ms (median / least) | whole round, CPU ms (mean) | actions |");
    println!("| ---: | ---: | ---: | ---: | --- |");
    for n in sizes {
        let state = state(n, &rig, chains, two_models);
        let (mut view_ms, mut round_ms, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        let mut actions = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let v = view_of(&config, &facts, &in_flight, &state, now);
            view_ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(v);
            let (t, c) = (Instant::now(), cpu_ms());
            actions = round::resources(&config, &facts, &in_flight, &state, now);
            round_ms.push(t.elapsed().as_secs_f64() * 1e3);
            cpu.push(cpu_ms() - c);
        }
        let shown: Vec<String> = actions
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    if format!("{a:?}").starts_with("Load") {
                        "load"
                    } else {
                        "unload"
                    },
                    a.worker()
                )
            })
            .collect();
        if std::env::var_os("ROUND_TIME_REASONS").is_some() {
            eprintln!("{actions:#?}");
        }
        let cpu_mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
        println!(
            "| {} | {} | {} | {cpu_mean:.2} | {} |",
            n / (3 * chains) * 3 * chains,
            median_min(view_ms),
            median_min(round_ms),
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(" ")
            }
        );
    }
}
