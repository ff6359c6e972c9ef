//! Exact makespans on small plans checked by hand, the lower bound, the JSON shape
//! and the SVG.

use std::path::Path;

use rigmind_config::RigConfig;
use rigmind_plan::{ExpandDefaults, ExpandedPlan};
use rigmind_sim::{
    compare, lower_bound, simulate, svg, PolicyChoice, RmPolicy, SegmentKind, SimError,
};
use rigmind_types::TaskClass;

fn plan(text: &str) -> ExpandedPlan {
    let p = rigmind_plan::parse_str(Path::new("/nonexistent/plan.md"), text).expect("plan parses");
    rigmind_plan::expand(&p, &ExpandDefaults::default()).expect("plan expands")
}

/// The text of a plan titled `title` with one `## Task:` section per `(name,
/// items)`; `items` are its `key: value` items, separated by `; `.
fn plan_text(title: &str, tasks: &[(&str, &str)]) -> String {
    let mut t = format!("# Plan: {title}\n");
    for (name, items) in tasks {
        t.push_str(&format!("\n## Task: {name}\n"));
        for item in items.split("; ") {
            t.push_str(&format!("- {item}\n"));
        }
    }
    t
}

fn rig(text: &str) -> RigConfig {
    RigConfig::parse(Path::new("rig.toml"), text).expect("rig parses")
}

/// `n` GPUs, the first `llm` of them with an LLM server; load 30 s, unload 5 s.
fn rig_n(n: usize, llm: usize, extra: &str) -> RigConfig {
    let mut t = String::from(
        "[llm]\nmodel = \"m\"\nload_seconds = 30\nunload_seconds = 5\n\n[resource_manager]\npolicy = \"phases\"\n",
    );
    t.push_str(extra);
    for i in 0..n {
        t.push_str(&format!(
            "\n[[gpu]]\nindex = {i}\nworker = \"worker_{}\"\n",
            i + 1
        ));
        if i < llm {
            t.push_str(&format!("ollama = \"http://127.0.0.1:{}\"\n", 11435 + i));
        }
    }
    rig(&t)
}

const FOUR_SCRIPTS: &str = "# Plan: four

## Task: s
- task_class: script
- for_each: [a, b, c, d]
- estimate: 10s
- command: `true`
";

const CHAIN: &str = "# Plan: chain

## Task: before
- task_class: script
- estimate: 10s
- command: `true`

## Task: ask
- task_class: llm
- depends_on: before
- estimate: 5s
- prompt: `hi`

## Task: after
- task_class: script
- depends_on: ask
- estimate: 10s
- command: `true`
";

fn makespan(p: &ExpandedPlan, r: &RigConfig, policy: RmPolicy) -> f64 {
    simulate(p, r, policy)
        .unwrap_or_else(|e| panic!("{}: {e}", policy.name()))
        .makespan_s
}

const ALL_FIXED: [RmPolicy; 3] = [
    RmPolicy::Phases,
    RmPolicy::OnDemand,
    RmPolicy::Static { llm_cards: 0 },
];

#[test]
fn four_independent_scripts_on_two_gpus_take_20s_under_every_policy() {
    let p = plan(FOUR_SCRIPTS);
    let r = rig_n(2, 2, "");
    for policy in ALL_FIXED.into_iter().chain([RmPolicy::Adaptive]) {
        let res = simulate(&p, &r, policy).unwrap();
        assert_eq!(res.makespan_s, 20.0, "{}", policy.name());
        assert_eq!((res.loads, res.unloads), (0, 0), "{}", policy.name());
        assert_eq!(res.gpu_busy_fraction, 1.0);
        assert_eq!(res.tasks_completed, 4);
        for g in &res.gpus {
            assert_eq!((g.busy_s, g.loading_s, g.idle_s), (20.0, 0.0, 0.0));
        }
    }
    assert_eq!(lower_bound(&p, &r), 20.0);
    // The best static is 0 LLM cards (a loaded card could run no script task).
    let c = compare(&p, &r, PolicyChoice::StaticBest);
    assert_eq!(c.runs[0].static_llm_cards, Some(0));
    assert_eq!(c.runs[0].outcome.as_ref().unwrap().makespan_s, 20.0);
}

#[test]
fn a_script_llm_script_chain_on_one_gpu_pays_one_load_and_one_unload() {
    // before 0-10, load 10-40, ask 40-45, unload 45-50, after 50-60.
    let p = plan(CHAIN);
    let r = rig_n(1, 1, "");
    for policy in [RmPolicy::Phases, RmPolicy::OnDemand] {
        let res = simulate(&p, &r, policy).unwrap();
        assert_eq!(res.makespan_s, 60.0, "{}", policy.name());
        assert_eq!((res.loads, res.unloads), (1, 1));
        let g = &res.gpus[0];
        assert_eq!((g.busy_s, g.loading_s, g.idle_s), (25.0, 35.0, 0.0));
        let spans: Vec<(f64, f64, &str)> = g
            .segments
            .iter()
            .map(|s| {
                let what = match &s.kind {
                    SegmentKind::Task { name, .. } => name.as_str(),
                    SegmentKind::Load => "load",
                    SegmentKind::Unload => "unload",
                };
                (s.start, s.end, what)
            })
            .collect();
        assert_eq!(
            spans,
            vec![
                (0.0, 10.0, "before"),
                (10.0, 40.0, "load"),
                (40.0, 45.0, "ask"),
                (45.0, 50.0, "unload"),
                (50.0, 60.0, "after"),
            ]
        );
    }
    // Lower bound: all work plus one load on the one GPU, 10 + 5 + 10 + 30.
    assert_eq!(lower_bound(&p, &r), 55.0);
    // Static cannot do it on one card: 0 cards never run `ask`, 1 never runs `after`.
    let c = compare(&p, &r, PolicyChoice::StaticBest);
    assert!(c.runs[0].outcome.is_err());
    assert_eq!(c.runs[0].static_tried, vec![(0, None), (1, None)]);
    // Adaptive: only robust facts (its tuning may change).
    let a = simulate(&p, &r, RmPolicy::Adaptive).unwrap();
    assert!(a.makespan_s >= 55.0, "{}", a.makespan_s);
    assert_eq!(a.tasks_completed, 3);
}

#[test]
fn static_zero_with_llm_work_is_infeasible_and_says_why() {
    let p = plan(CHAIN);
    let r = rig_n(2, 2, "");
    let e = simulate(&p, &r, RmPolicy::Static { llm_cards: 0 }).unwrap_err();
    let SimError::Infeasible {
        policy,
        at_s,
        reason,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(policy, "static-0");
    assert_eq!(*at_s, 10.0, "stuck once `before` is done");
    assert!(reason.contains("2 of 3 tasks never finished"), "{reason}");
    assert!(reason.contains("loads the model on no card"), "{reason}");
    // Static with one of the two cards loaded: before 0-10 on worker_2, ask 30-35 on
    // worker_1 (loaded 0-30), after 35-45 on worker_2.
    assert_eq!(makespan(&p, &r, RmPolicy::Static { llm_cards: 1 }), 45.0);
    assert_eq!(lower_bound(&p, &r), 45.0, "critical path 30 + 5 + 10");
    // Phases loads both cards once `before` is done (10-40), ask 40-45, unloads both
    // (45-50), after 50-60.
    let ph = simulate(&p, &r, RmPolicy::Phases).unwrap();
    assert_eq!((ph.makespan_s, ph.loads, ph.unloads), (60.0, 2, 2));
    // On demand loads one card for `ask` (10-40, ask 40-45); `after` goes to the
    // other, still free for script work: 45-55.
    let od = simulate(&p, &r, RmPolicy::OnDemand).unwrap();
    assert_eq!((od.makespan_s, od.loads, od.unloads), (55.0, 1, 0));
    let c = compare(&p, &r, PolicyChoice::StaticBest);
    assert_eq!(c.runs[0].static_llm_cards, Some(1));
    assert_eq!(
        c.runs[0].static_tried,
        vec![(0, None), (1, Some(45.0)), (2, None)]
    );
}

#[test]
fn llm_work_without_an_llm_server_is_infeasible() {
    let p = plan(CHAIN);
    let r = rig_n(2, 0, "");
    for policy in [RmPolicy::Adaptive, RmPolicy::Phases, RmPolicy::OnDemand] {
        let e = simulate(&p, &r, policy).unwrap_err();
        assert!(
            e.to_string().contains("no [[gpu]] has an ollama server"),
            "{e}"
        );
    }
}

/// `(start, end)` of every task whose name starts with `prefix`, by start.
fn spans_of(res: &rigmind_sim::SimResult, prefix: &str) -> Vec<(f64, f64)> {
    let mut spans: Vec<(f64, f64)> = res
        .gpus
        .iter()
        .flat_map(|t| &t.segments)
        .filter(|s| matches!(&s.kind, SegmentKind::Task { name, .. } if name.starts_with(prefix)))
        .map(|s| (s.start, s.end))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    spans
}

#[test]
fn a_group_limit_of_one_serialises_its_tasks() {
    let text = plan_text(
        "grouped",
        &[
            ("g", "task_class: script; for_each: [a, b, c]; group: whisper_large; estimate: 10s; command: `true`"),
            ("free", "task_class: script; estimate: 10s; command: `true`"),
        ],
    );
    let p = plan(&text);
    let limited = rig_n(2, 0, "\n[groups]\nwhisper_large = 1\n");
    for policy in ALL_FIXED {
        let res = simulate(&p, &limited, policy).unwrap();
        assert_eq!(res.makespan_s, 30.0, "{}", policy.name());
        // Never two group tasks at once.
        assert_eq!(
            spans_of(&res, "g["),
            vec![(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
        );
    }
    assert_eq!(
        lower_bound(&p, &limited),
        30.0,
        "the group's 30 s on one slot"
    );
    let unlimited = rig_n(2, 0, "");
    assert_eq!(makespan(&p, &unlimited, RmPolicy::Phases), 20.0);
    assert_eq!(lower_bound(&p, &unlimited), 20.0);
}

#[test]
fn cpu_work_runs_on_a_card_holding_its_model() {
    let text = plan_text(
        "mixed",
        &[
            ("ask", "task_class: llm; estimate: 5s; prompt: `hi`"),
            ("tidy", "task_class: cpu; estimate: 10s; command: `true`"),
        ],
    );
    let p = plan(&text);
    let r = rig_n(1, 1, "");
    // The one card loads at once (0-30) and keeps its model: ask 30-35, then tidy
    // (cpu, tier 2 on a loaded card) 35-45.
    let res = simulate(&p, &r, RmPolicy::Static { llm_cards: 1 }).unwrap();
    assert_eq!(res.makespan_s, 45.0);
    let segs = &res.gpus[0].segments;
    assert_eq!(segs[0].kind, SegmentKind::Load);
    assert_eq!(
        (segs[2].start, segs[2].end, &segs[2].kind),
        (
            35.0,
            45.0,
            &SegmentKind::Task {
                name: "tidy".into(),
                class: TaskClass::Cpu
            }
        )
    );
    assert_eq!(res.unloads, 0);
}

#[test]
fn llm_work_runs_only_on_cards_with_an_llm_server() {
    let text = plan_text(
        "asks",
        &[(
            "ask",
            "task_class: llm; for_each: [a, b, c, d]; estimate: 10s; prompt: `hi {item}`",
        )],
    );
    let p = plan(&text);
    let r = rig_n(2, 1, "");
    // worker_1 loads 0-30 then runs the four asks 30-70; worker_2 cannot help.
    for policy in [
        RmPolicy::Phases,
        RmPolicy::OnDemand,
        RmPolicy::Static { llm_cards: 1 },
    ] {
        let res = simulate(&p, &r, policy).unwrap();
        assert_eq!(res.makespan_s, 70.0, "{}", policy.name());
        assert_eq!(res.loads, 1);
        assert!(res.gpus[1].segments.is_empty());
    }
    // (40 s of llm work + one 30 s load) on the one LLM card.
    assert_eq!(lower_bound(&p, &r), 70.0);
}

#[test]
fn lower_bound_terms() {
    // Two models: each is loaded once at least, on the one LLM card.
    let text = plan_text(
        "models",
        &[
            (
                "a",
                "task_class: llm; model: m1; estimate: 10s; prompt: `x`",
            ),
            (
                "b",
                "task_class: llm; model: m2; estimate: 10s; prompt: `y`",
            ),
        ],
    );
    let p = plan(&text);
    assert_eq!(lower_bound(&p, &rig_n(1, 1, "")), 80.0);
    // Two GPUs, both LLM-capable: (20 + 60) / 2 = 40 beats the path 30 + 10.
    assert_eq!(lower_bound(&p, &rig_n(2, 2, "")), 40.0);
    // A long chain dominates spread work.
    let chain = plan_text(
        "long",
        &[
            ("one", "task_class: script; estimate: 100s; command: `true`"),
            (
                "two",
                "task_class: cpu; depends_on: one; estimate: 50s; command: `true`",
            ),
            (
                "side",
                "task_class: script; for_each: [a, b]; estimate: 20s; command: `true`",
            ),
        ],
    );
    let p = plan(&chain);
    assert_eq!(lower_bound(&p, &rig_n(2, 0, "")), 150.0);
    assert_eq!(makespan(&p, &rig_n(2, 0, ""), RmPolicy::Phases), 150.0);
}

#[test]
fn lower_bound_counts_whole_rounds_of_a_stage_behind_a_barrier() {
    // 7 tasks of 60 s on 5 GPUs take two rounds (120 s) before the barrier, however
    // the work spreads: 10 + 120 + 1 + 30 = 161 s, where the path is 101 s and the
    // work over the GPUs 104.2 s. Phases reaches it, so it is the makespan.
    let text = plan_text(
        "stages",
        &[
            ("prep", "task_class: cpu; estimate: 10s; command: `true`"),
            (
                "stage",
                "task_class: script; depends_on: prep; for_each: [a, b, c, d, e, f, g]; estimate: 60s; command: `true`",
            ),
            (
                "barrier",
                "task_class: cpu; depends_on: stage; estimate: 1s; command: `true`",
            ),
            (
                "last",
                "task_class: script; depends_on: barrier; for_each: [x, y, z]; estimate: 30s; command: `true`",
            ),
        ],
    );
    let p = plan(&text);
    let r = rig_n(5, 0, "");
    let terms = rigmind_sim::bound_terms(&p, &r);
    assert_eq!(terms.critical_path_s, 101.0);
    assert_eq!(terms.packed_path_s, 161.0);
    assert_eq!(lower_bound(&p, &r), 161.0);
    assert_eq!(makespan(&p, &r, RmPolicy::Phases), 161.0);
}

#[test]
fn brain_tasks_run_beside_the_gpus() {
    let text = plan_text(
        "brainy",
        &[
            (
                "prep",
                "task_class: cpu; executor: brain; estimate: 10s; command: `true`",
            ),
            (
                "work",
                "task_class: script; depends_on: prep; estimate: 10s; command: `true`",
            ),
        ],
    );
    let p = plan(&text);
    let r = rig_n(1, 0, "");
    let res = simulate(&p, &r, RmPolicy::Phases).unwrap();
    assert_eq!(res.makespan_s, 20.0);
    assert_eq!(res.brain_segments.len(), 1);
    assert_eq!(res.gpus[0].busy_s, 10.0);
    assert_eq!(res.gpu_busy_fraction, 0.5);
    assert_eq!(lower_bound(&p, &r), 20.0);
}

#[test]
fn a_rig_without_gpus_is_an_error() {
    let p = plan(FOUR_SCRIPTS);
    let e = simulate(&p, &rig(""), RmPolicy::Phases).unwrap_err();
    assert_eq!(e, SimError::NoGpus);
}

#[test]
fn tasks_without_an_estimate_take_60s_and_are_named() {
    let text = plan_text(
        "vague",
        &[("x", "task_class: script; for_each: [a, b]; command: `true`")],
    );
    let p = plan(&text);
    let r = rig_n(1, 0, "");
    assert_eq!(makespan(&p, &r, RmPolicy::Phases), 120.0);
    let c = compare(&p, &r, PolicyChoice::Phases);
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("'x[a]', 'x[b]'"),
        "{}",
        c.warnings[0]
    );
    assert!(c.warnings[0].contains("60s"), "{}", c.warnings[0]);
}

#[test]
fn json_has_the_documented_shape() {
    let p = plan(FOUR_SCRIPTS);
    let r = rig_n(2, 2, "");
    let json = compare(&p, &r, PolicyChoice::Phases).to_json();
    assert_eq!(
        json,
        r#"{"plan": "four", "lower_bound_s": 20.0, "policies": [{"policy": "phases", "makespan_s": 20.0, "loads": 0, "unloads": 0, "gpu_busy_fraction": 1.0}]}"#
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["policies"][0]["policy"], "phases");

    // All four, in order; an infeasible one has null numbers (its reason goes to
    // stderr and the human output).
    let chain = plan(CHAIN);
    let one = rig_n(1, 1, "");
    let json = compare(&chain, &one, PolicyChoice::All).to_json();
    assert!(json.starts_with(r#"{"plan": "chain", "lower_bound_s": 55.0, "policies": [{"policy": "adaptive", "makespan_s": "#), "{json}");
    assert!(json.contains(r#"{"policy": "phases", "makespan_s": 60.0, "loads": 1, "unloads": 1, "gpu_busy_fraction": 0.4167}"#), "{json}");
    assert!(json.contains(r#"{"policy": "static", "makespan_s": null, "loads": 0, "unloads": 0, "gpu_busy_fraction": null}"#), "{json}");
    assert!(
        json.contains(r#"{"policy": "on-demand", "makespan_s": 60.0, "#),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["adaptive", "phases", "static", "on-demand"]);
}

#[test]
fn the_svg_has_a_row_per_gpu_and_shows_loads() {
    let p = plan(CHAIN);
    let r = rig_n(2, 2, "");
    let c = compare(&p, &r, PolicyChoice::All);
    let out = svg(&c);
    assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(out.trim_end().ends_with("</svg>"));
    let feasible = c.runs.iter().filter(|r| r.outcome.is_ok()).count();
    assert_eq!(
        out.matches("class=\"chart\"").count(),
        4,
        "one chart per policy"
    );
    assert_eq!(
        out.matches("class=\"gpu-row\"").count(),
        2 * feasible,
        "one row per GPU in each chart"
    );
    assert_eq!(out.matches("data-worker=\"worker_1\"").count(), feasible);
    assert!(out.contains("class=\"load\""));
    assert!(out.contains("url(#hatch-load)"));
    assert!(
        out.contains("<title>ask (llm) on worker_1"),
        "task names as tooltips"
    );
    assert!(out.contains("static (1 LLM card): makespan 45.0 s, 1.000× lower bound (45.0 s)"));
    assert!(out.contains("phases: makespan 60.0 s (1m 00s), 1.333× lower bound"));
    // Balanced tags, roughly: every opened group is closed.
    assert_eq!(out.matches("<g ").count(), out.matches("</g>").count());
}

#[test]
fn a_fan_out_pipeline_finishes_under_every_policy() {
    // 8 transcriptions -> 8 summaries (item-wise) -> one report, on 3 GPUs (2 LLM).
    let text = "# Plan: pipeline

## Defaults
- estimate: 40s

## Task: init
- task_class: cpu
- estimate: 5s
- command: `true`

## Task: transcribe
- task_class: script
- depends_on: init
- for_each: [e1, e2, e3, e4, e5, e6, e7, e8]
- command: `true`

## Task: summarize
- task_class: llm
- depends_on: transcribe
- for_each: [e1, e2, e3, e4, e5, e6, e7, e8]
- estimate: 25s
- prompt: `sum {item}`

## Task: report
- task_class: script
- depends_on: summarize
- estimate: 15s
- command: `true`
";
    let p = plan(text);
    let r = rig_n(3, 2, "");
    let lb = lower_bound(&p, &r);
    let c = compare(&p, &r, PolicyChoice::All);
    for run in &c.runs {
        let res = run
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", run.policy));
        assert!(
            res.makespan_s >= lb,
            "{}: {} < {lb}",
            run.policy,
            res.makespan_s
        );
        assert_eq!(res.tasks_completed, p.jobs.len(), "{}", run.policy);
    }
    // Phases by hand: init 0-5; 8 transcriptions on 3 cards 5-125 (3 rounds of 40);
    // loads on the two LLM cards 125-155; 8 summaries on 2 cards 155-255; unload
    // 255-260; report 255-270 on the card that never loaded (worker_3).
    assert_eq!(makespan(&p, &r, RmPolicy::Phases), 270.0);
}

/// One llm task for another model, then six for the rig's model that wait on it:
/// every policy must swap models (not wait for ever with the rig's model loaded).
#[test]
fn two_models_in_a_chain_are_served_one_after_the_other_by_every_policy() {
    let p = plan(
        "# Plan: two-models\n\n## Task: first\n- task_class: llm\n- model: other:1b\n- estimate: 30s\n- prompt: `a`\n\n\
         ## Task: rest\n- task_class: llm\n- depends_on: first\n- for_each: [a, b, c, d, e, f]\n- estimate: 20s\n- prompt: `b`\n",
    );
    let r = rig_n(2, 2, "");
    let c = compare(&p, &r, PolicyChoice::All);
    for run in &c.runs {
        if run.policy == "static" {
            continue; // a fixed set of loaded cards cannot swap by definition
        }
        let res = run
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {}", run.policy, e.reason()));
        assert_eq!(res.tasks_completed, 7, "{}", run.policy);
        assert!(res.loads >= 2, "{}: a load per model", run.policy);
    }
}

#[test]
fn tasks_whose_memory_would_not_fit_together_wait_for_each_other() {
    let text = plan_text(
        "whisper",
        &[
            ("w", "task_class: script; for_each: [a, b, c]; group: whisper_large; estimate: 10s; command: `true`"),
            ("small", "task_class: script; mem_mb: 2048; estimate: 10s; command: `true`"),
        ],
    );
    let p = plan(&text);
    // A 16 GB box keeping 2 GB free: one 10 GB Whisper at a time, the small
    // task beside it.
    let groups = "\n[groups]\nwhisper_large = { slots = 3, mem_mb = 10240 }\n";
    let box16 = rig_n(
        4,
        0,
        &format!("\n[safety]\nhost_ram_mb = 16384\nmin_free_ram_mb = 2048\n{groups}"),
    );
    let res = simulate(&p, &box16, RmPolicy::Phases).unwrap();
    assert_eq!(res.makespan_s, 30.0);
    assert_eq!(
        spans_of(&res, "w["),
        vec![(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    );
    // Without a host size the simulator holds nothing back for memory.
    let unsized_box = rig_n(4, 0, groups);
    assert_eq!(makespan(&p, &unsized_box, RmPolicy::Phases), 10.0);
}
