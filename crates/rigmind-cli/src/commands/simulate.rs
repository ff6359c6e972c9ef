//! `rigmind simulate PLAN --rig RIG.toml [--policy NAME|all] [--noise SEED] [--json] [--svg FILE]`

use anyhow::{bail, Context, Result};
use rigmind_sim::{compare_truth, noise, svg, PolicyChoice};

use crate::args::SimulateArgs;

pub fn simulate(a: SimulateArgs) -> Result<i32> {
    let rig = rigmind_config::RigConfig::load(&a.rig)?;
    if rig.gpus.is_empty() {
        bail!(
            "{}: no [[gpu]] entry; the simulator runs one worker per [[gpu]] of the rig",
            a.rig.display()
        );
    }
    let which = match a.policy.as_deref() {
        None => PolicyChoice::Rig,
        Some(p) => p.parse::<PolicyChoice>().map_err(anyhow::Error::msg)?,
    };
    let plan = match rigmind_brain::submit::load_plan(&a.plan, &rig) {
        Ok(p) => p,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            bail!("{}: invalid plan", a.plan.display());
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
        println!("{}", c.to_json());
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
