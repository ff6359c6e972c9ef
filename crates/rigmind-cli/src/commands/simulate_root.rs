//! `rigmind simulate --root ROOT [--rig RIG.toml] [--policy NAME|all] [--json] [--svg FILE]`:
//! the rest of what is live under a root, simulated from now. The state is the
//! brain's own rebuild, read-only (`rigmind_brain::rebuild::rebuild_read_only`);
//! the simulation is `rigmind_sim::simulate_live`. Nothing under the root is
//! written.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rigmind_decide::resources::{RmConfig, RmPolicy};
use rigmind_queue::Layout;
use rigmind_sim::{simulate_live, svg, Comparison, LiveStart, PolicyChoice, PolicyRun};
use serde_json::json;

use super::simulate::{load_rig, policy_choice};
use super::status::{clock, from_now};
use crate::args::SimulateArgs;

/// Simulates the live batches of `root` under the chosen policies; exit 0 when
/// some policy finishes them, 1 when none does, 2 for a root that is not one.
pub fn simulate_root(a: &SimulateArgs, root: &Path) -> Result<i32> {
    let layout = Layout::new(root);
    if !layout.tasks_dir().is_dir() {
        eprintln!(
            "rigmind simulate: {} is not a rigmind root (no tasks/ directory)",
            root.display()
        );
        return Ok(2);
    }
    let rig_path = a.rig.clone().unwrap_or_else(|| layout.rig_toml());
    let rig = load_rig(&rig_path)?;
    let policies = policies_of(policy_choice(a)?, &rig);
    let (state, left_out) = rigmind_brain::rebuild::rebuild_read_only(&layout, &rig)
        .with_context(|| format!("reading the state under {}", root.display()))?;
    for why in left_out {
        eprintln!("left out: {why}");
    }
    let now = Utc::now();
    let start = LiveStart::read(&layout, state, now);
    let batches = start.batches();
    if batches.is_empty() {
        println!(
            "nothing live under {}: no batch has work left",
            root.display()
        );
        return Ok(0);
    }
    let runs: Vec<PolicyRun> = policies
        .iter()
        .map(|p| run_of(*p, simulate_live(&start, &rig, *p)))
        .collect();
    if a.json {
        println!("{}", to_json(&runs, &batches, now));
    } else {
        print!("{}", human(root, &runs, &batches, now));
    }
    if let Some(path) = &a.svg {
        let c = Comparison {
            plan: format!("live batches under {}", root.display()),
            gpus: rig.gpus.len(),
            // No lower bound is computed for a live root.
            lower_bound_s: 0.0,
            bound: rigmind_sim::BoundTerms {
                critical_path_s: 0.0,
                all_gpus_s: 0.0,
                llm_cards_s: 0.0,
                groups_s: 0.0,
                packed_path_s: 0.0,
            },
            runs: runs.clone(),
            warnings: Vec::new(),
        };
        std::fs::write(path, svg(&c)).with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            println!("\nGantt chart: {}", path.display());
        }
    }
    Ok(if runs.iter().any(|r| r.outcome.is_ok()) {
        0
    } else {
        1
    })
}

/// The policies a choice names, for a live root: the best static is every static
/// count, each shown.
fn policies_of(which: PolicyChoice, rig: &rigmind_config::RigConfig) -> Vec<RmPolicy> {
    let capable = rig.gpus.iter().filter(|g| g.ollama.is_some()).count() as u32;
    let statics = (0..=capable).map(|k| RmPolicy::Static { llm_cards: k });
    match which {
        PolicyChoice::Rig => vec![RmConfig::from_rig(rig).policy],
        PolicyChoice::Adaptive => vec![RmPolicy::Adaptive],
        PolicyChoice::Phases => vec![RmPolicy::Phases],
        PolicyChoice::Static(k) => vec![RmPolicy::Static { llm_cards: k }],
        PolicyChoice::OnDemand => vec![RmPolicy::OnDemand],
        PolicyChoice::StaticBest => statics.collect(),
        PolicyChoice::All => {
            let mut all = vec![RmPolicy::Adaptive, RmPolicy::Phases, RmPolicy::OnDemand];
            all.extend(statics);
            all
        }
    }
}

fn run_of(
    policy: RmPolicy,
    outcome: Result<rigmind_sim::SimResult, rigmind_sim::SimError>,
) -> PolicyRun {
    PolicyRun {
        policy: policy.name(),
        static_llm_cards: None,
        static_tried: Vec::new(),
        outcome,
    }
}

/// `now + secs` (`None` past what a time can say).
fn after(now: DateTime<Utc>, secs: f64) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::Duration::milliseconds((secs * 1000.0) as i64))
}

/// The text: per policy, when the rest ends and each batch's end.
fn human(
    root: &Path,
    runs: &[PolicyRun],
    batches: &[(String, String)],
    now: DateTime<Utc>,
) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "live under {}: {} batch(es), simulated from {}",
        root.display(),
        batches.len(),
        clock(now, now)
    );
    for run in runs {
        let _ = writeln!(o);
        let r = match &run.outcome {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(o, "{}: cannot finish: {}", run.policy, e.reason());
                continue;
            }
        };
        let _ = writeln!(
            o,
            "{}: the rest ends in {}; {} load(s), {} unload(s); GPUs busy {:.1}%",
            run.policy,
            rigmind_sim::compare::human_secs(r.makespan_s),
            r.loads,
            r.unloads,
            r.gpu_busy_fraction * 100.0
        );
        for ((id, secs), (_, name)) in r.batch_ends.iter().zip(batches) {
            let end = after(now, *secs).map_or("-".into(), |t| {
                format!("{} ({})", clock(t, now), from_now(t, now))
            });
            let _ = writeln!(o, "  batch {id} ({name}): expected end {end}");
        }
    }
    o
}

/// The JSON: `now`, then per policy its makespan and each batch's `end_s` and
/// `eta` (RFC 3339), or why it cannot finish.
fn to_json(runs: &[PolicyRun], batches: &[(String, String)], now: DateTime<Utc>) -> String {
    let policies: Vec<serde_json::Value> = runs
        .iter()
        .map(|run| match &run.outcome {
            Ok(r) => json!({
                "policy": run.policy,
                "makespan_s": r.makespan_s,
                "loads": r.loads,
                "unloads": r.unloads,
                "batches": r.batch_ends.iter().zip(batches).map(|((id, secs), (_, name))| json!({
                    "batch": id,
                    "plan": name,
                    "end_s": secs,
                    "eta": after(now, *secs).map(rigmind_queue::time::to_rfc3339),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"policy": run.policy, "makespan_s": null, "reason": e.reason()}),
        })
        .collect();
    json!({"now": rigmind_queue::time::to_rfc3339(now), "policies": policies}).to_string()
}
