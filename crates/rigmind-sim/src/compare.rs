//! Several policies on one plan and rig: the table people read and the JSON tools read.

use std::fmt::Write as _;

use rigmind_config::RigConfig;
use rigmind_decide::resources::{RmConfig, RmPolicy, DEFAULT_ESTIMATE_SECS};
use rigmind_plan::ExpandedPlan;
use serde::Serialize;

use crate::bound::{bound_terms, BoundTerms};
use crate::engine::{simulate_truth, SimError, SimResult};

/// Which policies to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    /// The rig's own (`[resource_manager] policy`; `static` with `min_llm_gpus`).
    Rig,
    /// Adaptive, phases, the best static, on-demand.
    All,
    Adaptive,
    Phases,
    /// `Static { llm_cards: k }` for every k from 0 to the LLM-capable cards; the
    /// best feasible one is kept.
    StaticBest,
    /// Exactly this many LLM cards.
    Static(u32),
    OnDemand,
}

impl std::str::FromStr for PolicyChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "rig" => Self::Rig,
            "all" => Self::All,
            "adaptive" => Self::Adaptive,
            "phases" => Self::Phases,
            "static" => Self::StaticBest,
            "on-demand" | "ondemand" | "on_demand" => Self::OnDemand,
            _ => match s.strip_prefix("static-").map(str::parse::<u32>) {
                Some(Ok(k)) => Self::Static(k),
                _ => {
                    return Err(format!(
                        "unknown policy '{s}': adaptive, phases, static, static-N, on-demand or all"
                    ))
                }
            },
        })
    }
}

/// One policy's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// `adaptive`, `phases`, `static` or `on-demand`.
    pub policy: String,
    /// For `static`: the number of LLM cards simulated (the best one for `static`).
    pub static_llm_cards: Option<u32>,
    /// For the best static: every k tried and its makespan (`None`: infeasible).
    pub static_tried: Vec<(u32, Option<f64>)>,
    pub outcome: Result<SimResult, SimError>,
}

/// The policies simulated on one plan and rig.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub plan: String,
    pub gpus: usize,
    pub lower_bound_s: f64,
    pub bound: BoundTerms,
    pub runs: Vec<PolicyRun>,
    /// Lines for stderr (tasks without an estimate).
    pub warnings: Vec<String>,
}

impl Comparison {
    /// True when some policy finished the plan.
    pub fn any_feasible(&self) -> bool {
        self.runs.iter().any(|r| r.outcome.is_ok())
    }
}

/// Tasks of `plan` without an `estimate`, as one warning line (none when all have one).
pub fn estimate_warning(plan: &ExpandedPlan) -> Option<String> {
    let missing: Vec<&str> = plan
        .jobs
        .iter()
        .filter(|j| j.estimate_secs.is_none())
        .map(|j| j.name.as_str())
        .collect();
    if missing.is_empty() {
        return None;
    }
    let shown = 10;
    let mut names = missing
        .iter()
        .take(shown)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > shown {
        let _ = write!(names, " and {} more", missing.len() - shown);
    }
    Some(format!(
        "warning: plan '{}': {} task(s) have no estimate, assumed {}s each: {names}",
        plan.name,
        missing.len(),
        DEFAULT_ESTIMATE_SECS
    ))
}

fn llm_capable(rig: &RigConfig) -> u32 {
    rig.gpus.iter().filter(|g| g.ollama.is_some()).count() as u32
}

/// Simulates each policy on its own thread (they share nothing but the inputs):
/// `plan` as written, run for the times of `truth`.
fn simulate_all(
    (plan, truth): (&ExpandedPlan, &ExpandedPlan),
    rig: &RigConfig,
    policies: &[RmPolicy],
) -> Vec<Result<SimResult, SimError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = policies
            .iter()
            .map(|p| s.spawn(move || simulate_truth(plan, truth, rig, *p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The best of `Static { k }` for k = 0, 1, ...: `results[k]`.
fn static_best(rig: &RigConfig, results: Vec<Result<SimResult, SimError>>) -> PolicyRun {
    let mut tried = Vec::new();
    let mut best: Option<(u32, SimResult)> = None;
    let mut errors = Vec::new();
    for (k, r) in (0u32..).zip(results) {
        match r {
            Ok(r) => {
                tried.push((k, Some(r.makespan_s)));
                if best
                    .as_ref()
                    .is_none_or(|(_, b)| r.makespan_s < b.makespan_s)
                {
                    best = Some((k, r));
                }
            }
            Err(e) => {
                tried.push((k, None));
                errors.push(e);
            }
        }
    }
    let (k, outcome) = match best {
        Some((k, r)) => (Some(k), Ok(r)),
        None => {
            let outcome = match errors
                .iter()
                .find(|e| !matches!(e, SimError::Infeasible { .. }))
            {
                Some(e) => Err(e.clone()),
                None => Err(SimError::Infeasible {
                    policy: "static".into(),
                    at_s: 0.0,
                    reason: format!(
                        "no number of LLM cards from 0 to {} finishes the plan ({})",
                        llm_capable(rig),
                        (0u32..)
                            .zip(&errors)
                            .map(|(k, e)| format!("static-{k}: {}", e.reason()))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                }),
            };
            (None, outcome)
        }
    };
    PolicyRun {
        policy: "static".into(),
        static_llm_cards: k,
        static_tried: tried,
        outcome,
    }
}

fn one(policy: RmPolicy, outcome: Result<SimResult, SimError>) -> PolicyRun {
    let (label, k) = match policy {
        RmPolicy::Static { llm_cards } => ("static".to_string(), Some(llm_cards)),
        p => (p.name(), None),
    };
    PolicyRun {
        policy: label,
        static_llm_cards: k,
        static_tried: Vec::new(),
        outcome,
    }
}

/// Simulates the chosen policies (in parallel); infeasible ones are runs with an
/// error. `All` gives adaptive, phases, the best static and on-demand, in that order.
pub fn compare(plan: &ExpandedPlan, rig: &RigConfig, which: PolicyChoice) -> Comparison {
    compare_truth(plan, plan, rig, which)
}

/// [`compare`], with the run times of `truth` (the plan as it really runs, see
/// [`crate::noise::truth`]): the policies see `plan`'s estimates, the lower bound is
/// the truth's.
pub fn compare_truth(
    plan: &ExpandedPlan,
    truth: &ExpandedPlan,
    rig: &RigConfig,
    which: PolicyChoice,
) -> Comparison {
    let plans = (plan, truth);
    let statics: Vec<RmPolicy> = (0..=llm_capable(rig))
        .map(|k| RmPolicy::Static { llm_cards: k })
        .collect();
    let single = |p: RmPolicy| {
        let r = simulate_all(plans, rig, &[p]).pop().expect("one result");
        vec![one(p, r)]
    };
    let runs = match which {
        PolicyChoice::Rig => single(RmConfig::from_rig(rig).policy),
        PolicyChoice::Adaptive => single(RmPolicy::Adaptive),
        PolicyChoice::Phases => single(RmPolicy::Phases),
        PolicyChoice::Static(k) => single(RmPolicy::Static { llm_cards: k }),
        PolicyChoice::OnDemand => single(RmPolicy::OnDemand),
        PolicyChoice::StaticBest => vec![static_best(rig, simulate_all(plans, rig, &statics))],
        PolicyChoice::All => {
            let mut policies = vec![RmPolicy::Adaptive, RmPolicy::Phases, RmPolicy::OnDemand];
            policies.extend(&statics);
            let mut results = simulate_all(plans, rig, &policies);
            let static_results = results.split_off(3);
            let on_demand = results.pop().expect("three");
            let phases = results.pop().expect("three");
            let adaptive = results.pop().expect("three");
            vec![
                one(RmPolicy::Adaptive, adaptive),
                one(RmPolicy::Phases, phases),
                static_best(rig, static_results),
                one(RmPolicy::OnDemand, on_demand),
            ]
        }
    };
    let bound = bound_terms(truth, rig);
    Comparison {
        plan: plan.name.clone(),
        gpus: rig.gpus.len(),
        lower_bound_s: bound.max(),
        bound,
        runs,
        warnings: estimate_warning(plan).into_iter().collect(),
    }
}

fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `1282.0 s (21m 22s)`.
pub fn human_secs(s: f64) -> String {
    let whole = s.round() as i64;
    let long = if whole >= 3600 {
        format!(
            " ({}h {:02}m {:02}s)",
            whole / 3600,
            whole % 3600 / 60,
            whole % 60
        )
    } else if whole >= 60 {
        format!(" ({}m {:02}s)", whole / 60, whole % 60)
    } else {
        String::new()
    };
    format!("{s:.1} s{long}")
}

impl Comparison {
    /// The text `rigmind simulate` prints.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let b = &self.bound;
        let _ = writeln!(
            o,
            "plan '{}' on {} GPU(s): lower bound {} (critical path {:.1} s, all GPUs {:.1} s, LLM cards {:.1} s, groups {:.1} s, packed path {:.1} s)",
            self.plan,
            self.gpus,
            human_secs(self.lower_bound_s),
            b.critical_path_s,
            b.all_gpus_s,
            b.llm_cards_s,
            b.groups_s,
            b.packed_path_s
        );
        for run in &self.runs {
            let label = match run.static_llm_cards {
                Some(k) => format!(
                    "{} ({} LLM card{})",
                    run.policy,
                    k,
                    if k == 1 { "" } else { "s" }
                ),
                None => run.policy.clone(),
            };
            let _ = writeln!(o);
            match &run.outcome {
                Ok(r) => {
                    let ratio = if self.lower_bound_s > 0.0 {
                        format!("{:.3}", r.makespan_s / self.lower_bound_s)
                    } else {
                        "-".into()
                    };
                    let _ = writeln!(
                        o,
                        "{label}: makespan {}, {ratio} x lower bound; {} load(s), {} unload(s); GPUs busy {:.1}%",
                        human_secs(r.makespan_s),
                        r.loads,
                        r.unloads,
                        r.gpu_busy_fraction * 100.0
                    );
                    for g in &r.gpus {
                        let _ = writeln!(
                            o,
                            "  {:<14} busy {:>10.1} s   loading {:>8.1} s   idle {:>10.1} s",
                            g.worker, g.busy_s, g.loading_s, g.idle_s
                        );
                    }
                }
                Err(e @ SimError::Infeasible { .. }) => {
                    let _ = writeln!(o, "{label}: infeasible: {}", e.reason());
                }
                Err(e) => {
                    let _ = writeln!(o, "{label}: error: {e}");
                }
            }
            if run.static_tried.len() > 1 {
                let tried = run
                    .static_tried
                    .iter()
                    .map(|(k, m)| match m {
                        Some(m) => format!("{k}: {m:.1} s"),
                        None => format!("{k}: infeasible"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(o, "  (LLM cards tried: {tried})");
            }
        }
        o
    }

    /// The JSON `rigmind simulate --json` prints: `plan`, `lower_bound_s`, then one
    /// object per policy whose first keys are `policy`, `makespan_s`, `loads`,
    /// `unloads`, `gpu_busy_fraction` (null makespan and fraction when infeasible),
    /// followed by `ratio_to_lower_bound`, `infeasible`, `reason`,
    /// `static_llm_cards` and `gpus`.
    pub fn to_json(&self) -> String {
        let policies = self
            .runs
            .iter()
            .map(|run| {
                let ok = run.outcome.as_ref().ok();
                JsonPolicy {
                    policy: run.policy.clone(),
                    makespan_s: ok.map(|r| round_to(r.makespan_s, 6)),
                    loads: ok.map_or(0, |r| r.loads),
                    unloads: ok.map_or(0, |r| r.unloads),
                    gpu_busy_fraction: ok.map(|r| round_to(r.gpu_busy_fraction, 4)),
                }
            })
            .collect();
        let out = JsonOut {
            plan: self.plan.clone(),
            lower_bound_s: round_to(self.lower_bound_s, 6),
            policies,
        };
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, SpacedFormatter);
        out.serialize(&mut ser).expect("plain data serialises");
        String::from_utf8(buf).expect("JSON is UTF-8")
    }
}

#[derive(Serialize)]
struct JsonOut {
    plan: String,
    lower_bound_s: f64,
    policies: Vec<JsonPolicy>,
}

#[derive(Serialize)]
struct JsonPolicy {
    policy: String,
    makespan_s: Option<f64>,
    loads: usize,
    unloads: usize,
    gpu_busy_fraction: Option<f64>,
}

/// `", "` before every item or key but the first.
fn separate<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// One line, `", "` between items and `": "` after keys (as Python's `json.dumps`).
struct SpacedFormatter;

impl serde_json::ser::Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}
