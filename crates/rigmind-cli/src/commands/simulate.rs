//! `rigmind simulate PLAN --rig RIG.toml [--policy NAME|all] [--noise SEED] [--json] [--svg FILE]`
//! (and `--root ROOT`: [`super::simulate_root`])

use anyhow::{bail, Context, Result};
use rigmind_sim::{compare_truth, noise, svg, PolicyChoice};

use crate::args::SimulateArgs;

pub fn simulate(a: SimulateArgs) -> Result<i32> {
    if let Some(root) = a.root.clone() {
        return super::simulate_root::simulate_root(&a, &root);
    }
    let (Some(plan_path), Some(rig_path)) = (&a.plan, &a.rig) else {
        bail!("simulate needs a PLAN and --rig, or --root ROOT");
    };
    let rig = load_rig(rig_path)?;
    let which = policy_choice(&a)?;
    let plan = match rigmind_brain::submit::load_plan(plan_path, &rig) {
        Ok(p) => p,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            bail!("{}: invalid plan", plan_path.display());
        }
    };
    for w in &plan.warnings {
        eprintln!("{w}");
    }
    // With --noise, the tasks really run for seeded times the estimates misjudge.
    let truth = a.noise.map(|seed| noise::truth(&plan, seed));
    let c = compare_truth(&plan, truth.as_ref().unwrap_or(&plan), &rig, which);
    for w in &c.warnings {
        eprintln!("{w}");
    }
    if a.json {
        // The JSON holds the numbers only; why a policy cannot finish goes here.
        for run in &c.runs {
            if let Err(e) = &run.outcome {
                eprintln!("{}: {}", run.policy, e.reason());
            }
        }
        match &truth {
            None => println!("{}", c.to_json()),
            Some(t) => println!("{}", with_truth(&c.to_json(), t)?),
        }
    } else {
        print!("{}", c.human());
    }
    if let Some(path) = &a.svg {
        std::fs::write(path, svg(&c)).with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            println!("\nGantt chart: {}", path.display());
        }
    }
    Ok(if c.any_feasible() { 0 } else { 1 })
}

/// The JSON of a noisy comparison with `truth`: each job's name and the seconds it
/// really ran, so a benchmark can run the same times live.
fn with_truth(json: &str, truth: &rigmind_plan::ExpandedPlan) -> Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    v["truth"] = truth
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "name": j.name,
                "secs": j.estimate_secs.unwrap_or(rigmind_decide::resources::DEFAULT_ESTIMATE_SECS),
            })
        })
        .collect();
    Ok(v.to_string())
}

/// rig.toml, with at least one `[[gpu]]` (the simulator's workers).
pub(super) fn load_rig(path: &std::path::Path) -> Result<rigmind_config::RigConfig> {
    let rig = rigmind_config::RigConfig::load(path)?;
    if rig.gpus.is_empty() {
        bail!(
            "{}: no [[gpu]] entry; the simulator runs one worker per [[gpu]] of the rig",
            path.display()
        );
    }
    Ok(rig)
}

/// `--policy`, the rig's own by default.
pub(super) fn policy_choice(a: &SimulateArgs) -> Result<PolicyChoice> {
    Ok(match a.policy.as_deref() {
        None => PolicyChoice::Rig,
        Some(p) => p.parse::<PolicyChoice>().map_err(anyhow::Error::msg)?,
    })
}
